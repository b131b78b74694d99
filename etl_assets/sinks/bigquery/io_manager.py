"""BigQuery sink IO manager: a sink asset's rows loaded into a BigQuery table by parquet load
jobs of at most ``chunk_rows`` rows, in write mode append, replace_partition, replace_table or
merge (see ``writer``).

A chunk that still fails to load after the retries is kept in the shared dead-letter store
(api2db's "upload failed" folder): the run goes on and succeeds with the count in its
metadata; the next run of the sink loads the kept chunks first, and the sink's replay job
(``<sink>_replay_dead_letters``) does the same on demand.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
from dagster import OpExecutionContext, OutputContext
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import bigquery

from etl_assets.batches import RecordBatchStream
from etl_assets.dead_letters import ReplayReport
from etl_assets.home import expand_vars
from etl_assets.logs import Log
from etl_assets.progress import ProgressLog
from etl_assets.secrets import mask_text, masked_errors, masked_log
from etl_assets.sinks.base import Metadata, SinkIOManager, WindowCount, unreadable_target
from etl_assets.sinks.bigquery.spec import BigQuerySinkSpec, WriteMode
from etl_assets.sinks.bigquery.target_state import TableReader, declared_key, table_columns
from etl_assets.sinks.bigquery.writer import (
    BigQueryLoadFailed,
    BigQuerySinkError,
    BigQueryTableWriter,
    BigQueryTarget,
)
from etl_assets.sinks.column_schema import column_schema
from etl_assets.watermark import Window


class BigQuerySinkIOManager(SinkIOManager[BigQuerySinkSpec]):
    """Loads a sink asset's batches into ``project.dataset.table`` (created when missing); see
    :class:`~etl_assets.sinks.bigquery.spec.BigQuerySinkSpec` for what each setting does.

    Credentials: the service-account JSON file named by ``$<credentials_env>``; without
    ``credentials_env``, application default credentials, or none at all for a plain
    ``http://`` ``api_endpoint`` (an emulator).
    """

    counts_windows = True
    has_columns = True

    # -- connection ----------------------------------------------------------------------

    def client(self, where: str) -> bigquery.Client:
        """A client for ``project``: service account, ADC, or anonymous for an emulator."""
        spec = self.spec
        endpoint = expand_vars(spec.api_endpoint) if spec.api_endpoint else ""
        options = ClientOptions(api_endpoint=endpoint) if endpoint else None
        credentials: Credentials | None = None
        if spec.credentials_env:
            from google.oauth2 import service_account

            variable = spec.credentials_env
            if not os.environ.get(variable):
                raise BigQuerySinkError(f"{where}: credentials_env names ${variable}, which is "
                                        f"not set")
            path = Path(expand_vars(os.environ[variable]))
            if not path.is_file():
                raise BigQuerySinkError(f"{where}: the service-account file named by "
                                        f"${variable} does not exist")
            try:
                credentials = service_account.Credentials.from_service_account_file(str(path))
            except ValueError as exc:
                raise BigQuerySinkError(f"{where}: the file named by ${variable} is not a "
                                        f"service-account key: {exc}") from None
        elif endpoint.startswith("http://"):
            credentials = AnonymousCredentials()
        return bigquery.Client(project=spec.project, credentials=credentials,
                               client_options=options, location=spec.location)

    def target(self) -> BigQueryTarget:
        return BigQueryTarget(self.spec.project, self.spec.dataset, self.spec.table,
                              self.spec.location)

    def writer(self, client: bigquery.Client, mode: WriteMode, staging_id: str,
               window: Window | None, log: Log) -> BigQueryTableWriter:
        return BigQueryTableWriter(
            client, self.target(), mode, self.setup.primary_key, staging_id=staging_id,
            slice_column=self.setup.cursor_column, window=window,
            newest_by=self.setup.cursor_column if self.spec.conflict == "newest" else None,
            retry=self.spec.retry_policy(), request_timeout_s=self.spec.request_timeout_s,
            log=masked_log(log))

    # -- writing -------------------------------------------------------------------------

    @masked_errors()
    def write(self, context: OutputContext, partition: str | None,
              stream: RecordBatchStream) -> Metadata:
        """Load one partition's rows by the sink's write mode (the sink's dead letters from
        earlier runs first); ``rows_written``: rows loaded, ``rows_failed``: rows kept as
        dead letters."""
        asset = context.asset_key.to_user_string()
        target = self.target()
        label = f"{asset} [{partition}] -> {target.table_id} ({self.spec.write})"
        window = Window.of_partition(partition)
        if self.spec.write == "replace_partition" and window is None:
            raise BigQuerySinkError(f"{label}: write mode replace_partition needs a window "
                                    f"partition, got {partition!r}")
        client = self.client(f"sink {asset}")
        store = self.dead_letter_store()
        replayed = self._replay(client, context.log, asset, context.run_id)
        writer = self.writer(client, self.spec.write, target.staging_id(asset, partition,
                                                                     context.run_id),
                             window, context.log)
        progress = ProgressLog(context.log, label,
                                   done_line=context.has_partition_key)
        failed, last_error = 0, ""
        try:
            try:
                for action in writer.prepare(stream.schema):
                    context.log.info(f"{label}: {action}")
                unreachable: BigQueryLoadFailed | None = None
            except BigQueryLoadFailed as exc:
                if not exc.transient:
                    raise
                unreachable = exc  # keep every chunk of this run for a later replay
            for chunk in _chunks(stream, self.spec.chunk_rows):
                try:
                    if unreachable is not None:
                        raise unreachable
                    writer.load(chunk)
                except BigQueryLoadFailed as exc:
                    failed += chunk.num_rows
                    last_error = exc.reason
                    store.add(asset, partition, chunk, exc.reason, run_id=context.run_id,
                              version=stream.version)
                    context.log.warning(f"{label}: {chunk.num_rows:,} row(s) kept as dead "
                                        f"letters: {exc.reason}")
                progress.add(chunk.num_rows)
            done = writer.finish() if unreachable is None else None
            if done:
                context.log.info(f"{label}: {done}")
        finally:
            writer.drop_staging()
        progress.done()
        superseded = 0 if unreachable is not None else \
            store.supersede(asset, partition, stream.version, context.log)
        return {
            "table": target.table_id,
            "write": self.spec.write,
            "rows_written": progress.rows - failed,
            "rows_failed": failed,
            "dead_letters_replayed": replayed.replayed,
            "dead_letters_superseded": superseded,
            "chunks": progress.batches,
            "seconds": round(progress.seconds, 3),
            "rows_per_second": round(progress.rows_per_second),
            **store.metadata(asset, partition),
            **({"dead_letter_error": mask_text(last_error)} if last_error else {}),
        }

    # -- what the table holds --------------------------------------------------------------

    def reader(self, log: Log | None = None) -> TableReader:
        return TableReader(self.client(self.setup.where), self.target(),
                           self.spec.retry_policy(), self.spec.request_timeout_s,
                           masked_log(log) if log is not None else None)

    @masked_errors()
    def target_metadata(self) -> Metadata:
        """``dagster/table_name`` (``project.dataset.table``), ``dagster/column_schema``
        (BigQuery's types and modes; the key the table declares, else a merge sink's key,
        which MERGE keeps one row per) and ``dagster/row_count`` (the table's ``num_rows``).
        BigQuery unreachable now gives ``target_metadata_error``, not a failed run: the rows
        are loaded or kept as dead letters."""
        metadata: dict[str, object] = {"dagster/table_name": self.target().table_id}
        try:
            table = self.reader().table()
        except Exception as exc:  # the client raises many kinds for being unreachable
            return {**metadata, **unreadable_target(exc)}
        if table is None:
            return metadata
        key = declared_key(table) or (self.setup.primary_key if self.spec.write == "merge"
                                      else [])
        metadata["dagster/column_schema"] = column_schema(table_columns(table), key)
        if table.num_rows is not None:
            metadata["dagster/row_count"] = int(table.num_rows)
        return metadata

    @masked_errors()
    def target_columns(self) -> list[str] | None:
        table = self.reader().table()
        return None if table is None else [f.name for f in table.schema]

    @masked_errors()
    def count_window(self, window: Window, keys: pa.Table | None) -> WindowCount:
        """Rows of the table in ``window`` (distinct keys for a keyed sink), and of ``keys``,
        how many it holds with a cursor past the window's ``hi`` (the keys loaded into a
        table of their own and joined; see
        :meth:`~etl_assets.sinks.bigquery.target_state.TableReader.count_window`)."""
        return self.reader().count_window(self.setup.cursor_column, self.setup.primary_key,
                                          window, keys)

    # -- dead letters --------------------------------------------------------------------

    @masked_errors()
    def replay_dead_letters(self, context: OpExecutionContext, asset: str) -> ReplayReport:
        """Load every dead letter of ``asset`` again; those that load are removed."""
        return self._replay(self.client(f"sink {asset}"), context.log, asset, context.run_id)

    def _replay(self, client: bigquery.Client, log: Log, asset: str,
                run_id: str) -> ReplayReport:
        """Kept chunks, oldest first, through merge (merge sinks) or append (the others: a
        replaced slice or table was replaced when they failed, their rows belong after)."""
        store = self.dead_letter_store()
        files = store.files(asset)
        replayed = failing = 0
        for file in files:
            letters = store.read(file)
            mode: WriteMode = "merge" if self.spec.write == "merge" else "append"
            writer = self.writer(client, mode, self.target().staging_id(
                asset, f"replay-{file.file_name}", run_id), None, log)
            try:
                writer.prepare(letters.payload.schema)
                writer.load(letters.payload)
                writer.finish()
            except BigQueryLoadFailed as exc:
                failing += store.settle(file, [True] * file.rows, exc.reason, run_id=run_id)
                log.warning(f"{asset}: replaying {file.rows:,} dead letter(s) of partition "
                            f"{file.partition} failed again: {exc.reason}")
                continue
            finally:
                writer.drop_staging()
            store.settle(file, [False] * file.rows, "", run_id=run_id)
            replayed += file.rows
            log.info(f"{asset}: replayed {file.rows:,} dead letter(s) of partition "
                     f"{file.partition} into {self.target().table_id}")
        return ReplayReport(replayed, failing, len(files))


def _chunks(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Batches gathered into tables of about ``rows`` rows (at least one batch each)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.Table.from_batches(pending)
            pending, count = [], 0
    if pending:
        yield pa.Table.from_batches(pending)
