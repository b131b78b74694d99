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
from etl_assets.sinks.base import SinkIOManager
from etl_assets.sinks.bigquery.spec import BigQuerySinkSpec, WriteMode
from etl_assets.sinks.bigquery.writer import (
    BigQueryLoadFailed,
    BigQuerySinkError,
    BigQueryTableWriter,
    BigQueryTarget,
)
from etl_assets.watermark import Window


class BigQuerySinkIOManager(SinkIOManager[BigQuerySinkSpec]):
    """Loads a sink asset's batches into ``project.dataset.table`` (created when missing); see
    :class:`~etl_assets.sinks.bigquery.spec.BigQuerySinkSpec` for what each setting does.

    Credentials: the service-account JSON file named by ``$<credentials_env>``; without
    ``credentials_env``, application default credentials, or none at all for a plain
    ``http://`` ``api_endpoint`` (an emulator).
    """

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
    def handle_output(self, context: OutputContext, obj: RecordBatchStream) -> None:
        asset = context.asset_key.to_user_string()
        partition = context.partition_key if context.has_partition_key else None
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
        progress = ProgressLog(context.log, label)
        failed, last_error = 0, ""
        try:
            try:
                for action in writer.prepare(obj.schema):
                    context.log.info(f"{label}: {action}")
                unreachable: BigQueryLoadFailed | None = None
            except BigQueryLoadFailed as exc:
                if not exc.transient:
                    raise
                unreachable = exc  # keep every chunk of this run for a later replay
            for chunk in _chunks(obj, self.spec.chunk_rows):
                try:
                    if unreachable is not None:
                        raise unreachable
                    writer.load(chunk)
                except BigQueryLoadFailed as exc:
                    failed += chunk.num_rows
                    last_error = exc.reason
                    store.add(asset, partition, chunk, exc.reason, run_id=context.run_id,
                              version=obj.version)
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
            store.supersede(asset, partition, obj.version, context.log)
        context.add_output_metadata({
            "table": target.table_id,
            "write": self.spec.write,
            "dagster/row_count": progress.rows - failed,
            "rows_failed": failed,
            "dead_letters_replayed": replayed.replayed,
            "dead_letters_superseded": superseded,
            "chunks": progress.batches,
            "seconds": round(progress.seconds, 3),
            "rows_per_second": round(progress.rows_per_second),
            **store.metadata(asset, partition),
            **({"dead_letter_error": mask_text(last_error)} if last_error else {}),
        })

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
                asset, f"replay-{file.path.name}", run_id), None, log)
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
