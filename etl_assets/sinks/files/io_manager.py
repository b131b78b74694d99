"""Parquet / file sink IO manager: a sink asset's rows as parquet, JSON lines or CSV files in a
local folder or behind any fsspec URL, by mode shard, update or replace (see ``writer``).

Rows the target refuses after the retries (an object store that is down) are kept in the
shared dead-letter store; the run succeeds and its metadata counts them; the sink's replay job
(``<sink>_replay_dead_letters``) writes them again through the same mode, under the same rules:
a shard written since from a later staged version stays, and in update mode a stored row with
a newer cursor stays (``conflict: newest``).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from dagster import (
    MetadataValue,
    OpExecutionContext,
    OutputContext,
)

from etl_assets.batches import RecordBatchStream
from etl_assets.dead_letters import ReplayReport
from etl_assets.logs import Log
from etl_assets.progress import ProgressLog
from etl_assets.secrets import mask_text, masked_errors, masked_log, shown_location
from etl_assets.sinks.base import Metadata, SinkIOManager, WindowCount, unreadable_target
from etl_assets.sinks.column_schema import TargetColumn, column_schema
from etl_assets.sinks.files.formats import file_format
from etl_assets.sinks.files.spec import ParquetSinkSpec
from etl_assets.sinks.files.status import folder_status
from etl_assets.sinks.files.target import FileTarget
from etl_assets.sinks.files.target_state import count_window, dataset_schema, dataset_state
from etl_assets.sinks.files.writer import DATASET, FileSink, FileSinkError
from etl_assets.watermark import Window


class ParquetSinkIOManager(SinkIOManager[ParquetSinkSpec]):
    """Writes a sink asset's batches as files under the sink's ``path``; see
    :class:`~etl_assets.sinks.files.spec.ParquetSinkSpec` for what each setting does."""

    counts_windows = True
    has_columns = True

    def target(self) -> FileTarget:
        return FileTarget(self.spec.path, self.spec.storage_options)

    def file_sink(self, where: str, log: Log) -> FileSink:
        spec = self.spec
        return FileSink(self.target(), file_format(spec.format), spec.mode,
                        primary_key=self.setup.primary_key, drop_duplicates=spec.drop_duplicates,
                        newest_by=self.setup.cursor_column if spec.conflict == "newest" else None,
                        retry=spec.retry_policy(), where=where, log=log,
                        dead_letters=self.dead_letter_store())

    def status(self) -> str:
        files = folder_status(self.spec.path, self.spec.format, self.spec.storage_options)
        return (f"sink {self.setup.name}: {files.rows:,} rows in {files.files} "
                f"{self.spec.format} file(s) under {files.location} ({self.spec.mode}, "
                f"{files.bytes:,} bytes)")

    @masked_errors()
    def write(self, context: OutputContext, partition: str | None,
              stream: RecordBatchStream) -> Metadata:
        """Write one partition's rows by the sink's mode; ``rows_written``: the run's rows now
        in the target (``rows_kept_newer`` left out, dead letters kept for replay)."""
        asset = context.asset_key.to_user_string()
        sink = self.file_sink(f"sink {asset}", masked_log(context.log))
        label = (f"{asset} [{partition}] -> {sink.target.display} ({self.spec.mode}, "
                 f"{self.spec.format})")
        progress = ProgressLog(context.log, label,
                                   done_line=context.has_partition_key)
        written = sink.write(stream.schema, stream, partition=partition, run_id=context.run_id,
                             asset=asset, progress=progress, version=stream.version)
        progress.done()
        return {
            "path": MetadataValue.path(written.location),
            "mode": self.spec.mode,
            "format": self.spec.format,
            "rows_written": written.rows,
            "rows_in_file": written.rows_total,
            "rows_kept_newer": written.kept_newer,
            "bytes": written.bytes,
            "seconds": round(progress.seconds, 3),
            "rows_per_second": round(progress.rows_per_second),
            **self.dead_letter_store().metadata(asset, partition),
            "dead_letters_superseded": written.superseded,
            **({"dead_letter_error": mask_text(written.error)} if written.error else {}),
        }

    # -- what the dataset holds ------------------------------------------------------------

    def dataset_uri(self) -> str:
        """The dataset's location for metadata: the folder of shards, or the one file of
        update and replace mode; ``${VAR}`` expanded unless named like a secret, secrets
        masked (:func:`~etl_assets.secrets.shown_location`)."""
        shown = shown_location(self.spec.path).rstrip("/")
        if "://" not in shown:
            shown = str(Path(shown).absolute())
        if self.spec.mode == "shard":
            return shown
        return f"{shown}/{DATASET}{file_format(self.spec.format).suffix}"

    @masked_errors()
    def target_metadata(self) -> Metadata:
        """``dagster/uri`` (:meth:`dataset_uri`), ``dagster/column_schema`` (the files'
        Arrow types; the key as a constraint where the dataset holds a row per key: update
        mode, replace with ``drop_duplicates``) and ``dagster/row_count`` (parquet: the
        footers'; CSV and JSON lines: counted up to
        :data:`~etl_assets.sinks.files.target_state.EXACT_COUNT_MAX_BYTES`, else left out).
        A store that cannot be read (down, when the run kept dead letters) gives the URI and
        ``target_metadata_error``: the rows were handled, the run does not fail for this."""
        metadata: dict[str, object] = {"dagster/uri": self.dataset_uri()}
        try:
            state = dataset_state(self.target(), file_format(self.spec.format),
                                  self.spec.mode)
        except Exception as exc:  # fsspec stores raise many kinds for being down
            return {**metadata, **unreadable_target(exc)}
        if state.schema is not None:
            unique = self.spec.mode == "update" or (self.spec.mode == "replace"
                                                    and self.spec.drop_duplicates)
            metadata["dagster/column_schema"] = column_schema(
                (TargetColumn(f.name, "unknown" if pa.types.is_null(f.type) else str(f.type),
                              f.nullable) for f in state.schema),
                self.setup.primary_key if unique else ())
        if state.rows is not None and state.files:
            metadata["dagster/row_count"] = state.rows
        return metadata

    @masked_errors()
    def target_columns(self) -> list[str] | None:
        schema = self.spec.retry_policy().call(
            lambda: dataset_schema(self.target(), file_format(self.spec.format), self.spec.mode),
            what=f"{self.setup.where}: reading the schema of {self.target().display}")
        return None if schema is None else schema.names

    @masked_errors()
    def count_window(self, window: Window, keys: pa.Table | None) -> WindowCount:
        """The dataset's rows in ``window`` (distinct keys for a keyed sink: shards may hold
        a key twice), and of ``keys``, how many it holds with a cursor past the window's
        ``hi``; every file of the dataset is read (cursor and key columns only)."""
        return self.spec.retry_policy().call(
            lambda: count_window(self.target(), file_format(self.spec.format), self.spec.mode,
                                 self.setup.cursor_column, self.setup.primary_key, window,
                                 keys),
            what=f"{self.setup.where}: counting window {window} in {self.target().display}")

    @masked_errors()
    def replay_dead_letters(self, context: OpExecutionContext, asset: str) -> ReplayReport:
        """Write every dead letter of ``asset`` again through this sink's mode and rules: a
        shard written since from a later staged version stays (the letters are dropped), and
        in update mode stored rows with a newer cursor stay."""
        store = self.dead_letter_store()
        sink = self.file_sink(f"sink {asset}", masked_log(context.log))
        files = store.files(asset)
        replayed = failing = 0
        for file in files:
            letters = store.read(file)
            rows = letters.payload.num_rows
            try:
                written = sink.write_table(letters.payload, partition=file.partition,
                                           run_id=context.run_id, version=letters.version)
            except FileSinkError as exc:
                error = mask_text(str(exc))
                context.log.warning(f"{asset}: replaying {file.file_name} failed: {error}")
                failing += store.settle(file, [True] * rows, error, run_id=context.run_id)
                continue
            store.settle(file, [False] * rows, "", run_id=context.run_id)
            replayed += written.rows
        return ReplayReport(replayed, failing, len(files))
