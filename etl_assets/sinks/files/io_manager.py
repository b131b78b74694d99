"""Parquet / file sink IO manager: a sink asset's rows as parquet, JSON lines or CSV files in a
local folder or behind any fsspec URL, by mode shard, update or replace (see ``writer``).

Rows the target refuses after the retries (an object store that is down) are kept in the
shared dead-letter store; the run succeeds and its metadata counts them; the sink's replay job
(``<sink>_replay_dead_letters``) writes them again through the same mode, under the same rules:
a shard written since from a later staged version stays, and in update mode a stored row with
a newer cursor stays (``conflict: newest``).
"""

from __future__ import annotations

from dagster import (
    MetadataValue,
    OpExecutionContext,
    OutputContext,
)

from etl_assets.batches import RecordBatchStream
from etl_assets.dead_letters import ReplayReport
from etl_assets.logs import Log
from etl_assets.progress import ProgressLog
from etl_assets.secrets import mask_text, masked_errors, masked_log
from etl_assets.sinks.base import SinkIOManager
from etl_assets.sinks.files.formats import file_format
from etl_assets.sinks.files.spec import ParquetSinkSpec
from etl_assets.sinks.files.status import folder_status
from etl_assets.sinks.files.target import FileTarget
from etl_assets.sinks.files.writer import FileSink, FileSinkError


class ParquetSinkIOManager(SinkIOManager[ParquetSinkSpec]):
    """Writes a sink asset's batches as files under the sink's ``path``; see
    :class:`~etl_assets.sinks.files.spec.ParquetSinkSpec` for what each setting does."""

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
    def handle_output(self, context: OutputContext, obj: RecordBatchStream) -> None:
        if not isinstance(obj, RecordBatchStream):
            raise TypeError(f"{context.asset_key.to_user_string()}: the file sink writes a "
                            f"RecordBatchStream, got {type(obj).__name__}")
        asset = context.asset_key.to_user_string()
        partition = context.partition_key if context.has_partition_key else None
        sink = self.file_sink(f"sink {asset}", masked_log(context.log))
        label = (f"{asset} [{partition}] -> {sink.target.display} ({self.spec.mode}, "
                 f"{self.spec.format})")
        progress = ProgressLog(context.log, label)
        written = sink.write(obj.schema, obj, partition=partition, run_id=context.run_id,
                             asset=asset, progress=progress, version=obj.version)
        progress.done()
        context.add_output_metadata({
            "path": MetadataValue.path(written.location),
            "mode": self.spec.mode,
            "format": self.spec.format,
            "dagster/row_count": written.rows,
            "rows_in_file": written.rows_total,
            "rows_kept_newer": written.kept_newer,
            "bytes": written.bytes,
            "seconds": round(progress.seconds, 3),
            "rows_per_second": round(progress.rows_per_second),
            **self.dead_letter_store().metadata(asset, partition),
            "dead_letters_superseded": written.superseded,
            **({"dead_letter_error": mask_text(written.error)} if written.error else {}),
        })

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
                context.log.warning(f"{asset}: replaying {file.path.name} failed: {error}")
                failing += store.settle(file, [True] * rows, error, run_id=context.run_id)
                continue
            store.settle(file, [False] * rows, "", run_id=context.run_id)
            replayed += written.rows
        return ReplayReport(replayed, failing, len(files))
