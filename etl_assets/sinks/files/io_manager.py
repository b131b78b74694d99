"""Parquet / file sink IO manager: a sink asset's rows as parquet, JSON lines or CSV files in a
local folder or behind any fsspec URL, by mode shard, update or replace (see ``file_sink``).

Rows the target refuses after the retries (an object store that is down) are kept in the
shared dead-letter store; the run succeeds and its metadata counts them; the sink's replay job
(``<sink>_replay_dead_letters``) writes them again through the same mode, under the same rules:
a shard written since from a later staged version stays, and in update mode a stored row with
a newer cursor stays (``conflict: newest``).
"""

from __future__ import annotations

from typing import Any

from dagster import (
    ConfigurableIOManager,
    InputContext,
    MetadataValue,
    OpExecutionContext,
    OutputContext,
)

from etl_assets.batches import RecordBatchStream
from etl_assets.dead_letters import DeadLetterStore, ReplayReport
from etl_assets.progress import ProgressLog
from etl_assets.retries import RetryPolicy
from etl_assets.secrets import mask_text, masked_errors, masked_log
from etl_assets.sinks.files.formats import file_format
from etl_assets.sinks.files.target import FileTarget
from etl_assets.sinks.files.writer import FileSink, FileSinkError


class ParquetSinkIOManager(ConfigurableIOManager):
    """Writes a sink asset's batches as files under ``path`` (a local folder, ``${VAR}``
    expanded, or an fsspec URL such as ``s3://bucket/prefix``).

    ``mode``: ``shard`` (a file per partition, replaced by a re-run), ``update`` (one dataset
    merged by ``primary_key``, the latest row wins) or ``replace`` (each run's rows are the
    dataset). ``format``: parquet, json (lines) or csv. ``drop_duplicates``: keep a run's last
    row per key in shard and replace modes. ``storage_options``: fsspec options without secrets
    (credentials come from the environment). ``conflict``: ``newest`` keeps, per key, the row
    whose ``cursor_column`` value is the newest (update mode, drop_duplicates); ``last_write``:
    the last row written wins. ``retries`` more attempts (backoff from ``retry_delay_s`` up to
    ``max_retry_delay_s`` seconds) before rows go to the dead letters under
    ``dead_letter_root``.
    """

    path: str
    mode: str = "shard"
    format: str = "parquet"
    primary_key: list[str] = []
    drop_duplicates: bool = False
    storage_options: dict[str, Any] = {}
    conflict: str = "newest"
    cursor_column: str | None = None
    retries: int = 3
    retry_delay_s: float = 1.0
    max_retry_delay_s: float = 30.0
    dead_letter_root: str = "${ETL_ASSETS_HOME}/dead_letters"

    def target(self) -> FileTarget:
        return FileTarget(self.path, self.storage_options)

    def dead_letter_store(self) -> DeadLetterStore:
        return DeadLetterStore(self.dead_letter_root)

    def file_sink(self, where: str, log: Any) -> FileSink:
        return FileSink(self.target(), file_format(self.format), self.mode,  # type: ignore[arg-type]
                        primary_key=self.primary_key, drop_duplicates=self.drop_duplicates,
                        newest_by=self.cursor_column if self.conflict == "newest" else None,
                        retry=RetryPolicy(self.retries, self.retry_delay_s,
                                          self.max_retry_delay_s),
                        where=where, log=log, dead_letters=self.dead_letter_store())

    @masked_errors()
    def handle_output(self, context: OutputContext, obj: RecordBatchStream) -> None:
        if not isinstance(obj, RecordBatchStream):
            raise TypeError(f"{context.asset_key.to_user_string()}: the file sink writes a "
                            f"RecordBatchStream, got {type(obj).__name__}")
        asset = context.asset_key.to_user_string()
        partition = context.partition_key if context.has_partition_key else None
        sink = self.file_sink(f"sink {asset}", masked_log(context.log))
        label = f"{asset} [{partition}] -> {sink.target.display} ({self.mode}, {self.format})"
        progress = ProgressLog(context.log, label)
        written = sink.write(obj.schema, obj, partition=partition, run_id=context.run_id,
                             asset=asset, progress=progress, version=obj.version)
        progress.done()
        context.add_output_metadata({
            "path": MetadataValue.path(written.location),
            "mode": self.mode,
            "format": self.format,
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
    def load_input(self, context: InputContext) -> RecordBatchStream:
        raise NotImplementedError(f"{context.asset_key.to_user_string()} is a sink; read its "
                                  f"files under {self.target().display}")

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
