"""Staging IO manager: each partition's batches as parquet shards on local disk.

Layout: ``<root>/<asset>/<partition>`` is a symlink to ``<root>/<asset>/.versions/<partition>/
<version>-<run>/`` holding ``part-NNNNN.parquet`` files and ``_manifest.json`` (and ``raw/``, the
pages the source received, when it keeps them: :mod:`etl_assets.raw_pages`). A run writes a
new version and swaps the link in one atomic rename, so readers see the old shards or the new,
never a mix. A reader holds the version it reads until it is done, however many runs re-stage
the partition meanwhile; versions no one holds any more, and what killed runs left, are
removed by the next staging write of the asset (see
:mod:`etl_assets.staging.versions`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import InputContext, IOManager, MetadataValue, OutputContext

from etl_assets.batches import RecordBatchStream, StreamNotes
from etl_assets.home import expand_vars
from etl_assets.logs import Log
from etl_assets.partition_outputs import (
    LazyStreams,
    PartitionOutput,
    add_partition_metadata,
    partition_keys,
    partition_streams,
    windows_progress,
)
from etl_assets.progress import ProgressLog
from etl_assets.raw_pages import RAW_FOLDER
from etl_assets.secrets import masked_errors
from etl_assets.sources.extraction import Extraction
from etl_assets.staging.spec import StagingSpec
from etl_assets.staging.versions import (
    MANIFEST,
    PartitionVersions,
    StagingError,
    sweep_asset,
)

__all__ = ["MANIFEST", "ParquetStagingIOManager", "StagedManifest", "StagingError",
           "read_staged", "staged_manifest", "write_staged"]


@dataclass
class StagedManifest:
    """What a staged partition holds. ``version``: see :mod:`etl_assets.staging.versions`."""

    rows: int = 0
    bytes: int = 0
    shards: list[dict[str, int | str]] = field(default_factory=list)
    run_id: str = ""
    written_at: str = ""
    version: int = 0


def write_staged(path: Path, stream: RecordBatchStream, *, run_id: str, shard_rows: int,
                 progress: ProgressLog | None = None, log: Log | None = None,
                 sweep: bool = True) -> StagedManifest:
    """Write ``stream`` as parquet shards into a new version and make it the content of
    ``path`` atomically, unless a newer version was published meanwhile (then this one is
    discarded: the partition already holds a later extraction). Leftovers of the asset are
    swept first (``sweep``; a range run sweeps before its first window only)."""
    path = path.absolute()
    if sweep:
        sweep_asset(path.parent, log)
    versions = PartitionVersions(path)
    written = versions.allocate(run_id)
    manifest = StagedManifest(run_id=run_id, version=written.version)
    raw = stream.notes.raw_pages
    try:
        if raw is not None:  # the source's pages go into this version, as its rows do
            raw.write_into(written.folder / RAW_FOLDER)
        _write_shards(written.folder, stream, shard_rows, manifest, progress)
        manifest.written_at = datetime.now(timezone.utc).isoformat()
        temp = written.folder / f".{MANIFEST}.tmp"
        temp.write_text(json.dumps(asdict(manifest), indent=1))
        os.replace(temp, written.folder / MANIFEST)
        published = versions.publish(written)
    except BaseException:
        written.discard()
        raise
    if not published:
        written.discard()
        if log is not None:
            log.info(f"staging {path.parent.name} [{path.name}]: version {written.version} "
                     f"is older than the one a concurrent run published; kept that one")
        return manifest
    written.release()
    removed = versions.sweep()  # the previous version, unless a reader still holds it
    if removed.names and log is not None:
        log.info(f"staging {path.parent.name} [{path.name}]: removed {len(removed.names)} "
                 f"older version(s), {removed.bytes:,} bytes")
    return manifest


def _write_shards(folder: Path, stream: RecordBatchStream, shard_rows: int,
                  manifest: StagedManifest, progress: ProgressLog | None) -> None:
    writer: pq.ParquetWriter | None = None
    shard_path = folder / "part-00000.parquet"
    in_shard = 0

    def close() -> None:
        nonlocal writer
        assert writer is not None
        writer.close()
        size = shard_path.stat().st_size
        manifest.shards.append({"file": shard_path.name, "rows": in_shard, "bytes": size})
        manifest.bytes += size
        writer = None

    for batch in stream:
        if writer is not None and in_shard + batch.num_rows > shard_rows and in_shard:
            close()
        if writer is None:
            shard_path = folder / f"part-{len(manifest.shards):05d}.parquet"
            writer = pq.ParquetWriter(shard_path, stream.schema)
            in_shard = 0
        writer.write_batch(batch, row_group_size=max(batch.num_rows, 1))
        in_shard += batch.num_rows
        manifest.rows += batch.num_rows
        if progress:
            progress.add(batch.num_rows)
    if writer is None:  # no rows: one empty shard keeps the schema
        writer = pq.ParquetWriter(shard_path, stream.schema)
        in_shard = 0
    close()


def read_staged(path: Path) -> RecordBatchStream:
    """The staged batches at ``path``, read lazily one row group at a time. The version is
    pinned now (a shared lock, released when the stream is read to its end or dropped), so a
    concurrent re-stage neither mixes shards of two runs nor removes them underneath."""
    pin = PartitionVersions(path).pin()
    if pin is None:
        raise StagingError(f"nothing is staged at {path}")
    try:
        manifest = StagedManifest(**json.loads((pin.folder / MANIFEST).read_text()))
        files = [pin.folder / str(shard["file"]) for shard in manifest.shards]
        schema = pq.read_schema(files[0])
    except BaseException:
        pin.release()
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for file in files:
                parquet = pq.ParquetFile(file)
                for group in range(parquet.num_row_groups):
                    yield from parquet.read_row_group(group).to_batches()
        finally:
            pin.release()

    version = manifest.version or None
    return RecordBatchStream(schema, batches(), version=version)


def staged_manifest(path: Path) -> StagedManifest:
    """The manifest of the partition staged at ``path``."""
    return StagedManifest(**json.loads((path / MANIFEST).read_text()))


class ParquetStagingIOManager(IOManager):
    """Stages a source asset's batches as parquet shards, one folder per partition, under
    ``spec.root`` (``${VAR}`` expanded), at most ``spec.shard_rows`` rows a file."""

    def __init__(self, spec: StagingSpec) -> None:
        self.spec = spec

    def partition_path(self, asset_path: list[str], partition_key: str | None) -> Path:
        return Path(expand_vars(self.spec.root)).joinpath(*asset_path, partition_key or "__all__")

    @masked_errors()
    def handle_output(self, context: OutputContext, obj: PartitionOutput) -> None:
        """Stage each partition the step materializes (one, or each of a range in turn)."""
        progress = windows_progress(context, "staged")
        for index, (partition, stream) in enumerate(partition_streams(context, obj)):
            metadata = self._stage(context, partition, stream, sweep=index == 0)
            add_partition_metadata(context, partition, metadata)
            if progress:
                progress.add(int(metadata["dagster/row_count"]))  # type: ignore[call-overload]

    def _stage(self, context: OutputContext, partition: str | None, stream: RecordBatchStream,
               sweep: bool) -> dict[str, object]:
        path = self.partition_path(list(context.asset_key.path), partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        label = f"{context.asset_key.to_user_string()} [{partition}] -> staging"

        def write(attempt: RecordBatchStream,
                  ) -> tuple[StagedManifest, ProgressLog, StreamNotes]:
            progress = ProgressLog(context.log, label, done_line=context.has_partition_key)
            return write_staged(path, attempt, run_id=context.run_id,
                                shard_rows=self.spec.shard_rows, progress=progress,
                                log=context.log, sweep=sweep), progress, attempt.notes

        # An extraction that fails transiently is written again from the window's beginning
        # (with notes of its own: those of the attempt that was staged are the window's).
        manifest, progress, notes = (stream.retrying(write) if isinstance(stream, Extraction)
                                     else write(stream))
        progress.done()
        for warning in notes.warnings():
            context.log.warning(warning)
        return {
            "dagster/row_count": manifest.rows,  # the window's rows in the source
            "shards": len(manifest.shards),
            "bytes": manifest.bytes,
            "path": MetadataValue.path(str(path)),
            "rows_per_second": progress.rows_per_second,
            "version": str(manifest.version),
            **notes.metadata(),
        }

    @masked_errors()
    def load_input(self, context: InputContext) -> PartitionOutput:
        """The staged stream of the step's partition; in a range run, one per partition, each
        pinned when the sink reaches it."""
        keys = partition_keys(context)
        if len(keys) == 1 and (keys[0] is None or context.has_partition_key):
            return self._read(context, keys[0])
        return LazyStreams([key for key in keys if key is not None],
                           lambda key: self._read(context, key))

    def _read(self, context: InputContext, partition: str | None) -> RecordBatchStream:
        path = self.partition_path(list(context.asset_key.path), partition)
        try:
            return read_staged(path)
        except StagingError:
            raise StagingError(
                f"{context.asset_key.to_user_string()}: partition {partition} is not staged "
                f"at {path}; materialize the source asset for this partition first"
            ) from None
