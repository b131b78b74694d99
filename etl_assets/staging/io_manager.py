"""Staging IO manager: each partition's batches as parquet shards, on local disk or an object
store.

A run writes a new version of the partition, ``part-NNNNN.parquet`` files and ``_manifest.json``
(and ``raw/``, the pages the source received, when it keeps them: :mod:`etl_assets.raw_pages`)
in a folder of its own, and then makes it current in one step: locally ``<root>/<asset>/
<partition>`` is a symlink to ``<root>/<asset>/.versions/<partition>/<version>-<run>/``, swapped
by an atomic rename (:mod:`etl_assets.staging.versions`); on an object store ``<root>/<asset>/
<partition>/_current.json`` names ``<version>-<run>/`` beside it and is written last
(:mod:`etl_assets.staging.object_versions`). Readers see the old shards or the new, never a
mix, and hold the version they read until they are done, however many runs re-stage the
partition meanwhile; versions no one holds any more, and what killed runs left, are removed
by later staging writes.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import InputContext, IOManager, MetadataValue, OutputContext

from etl_assets.batches import RecordBatchStream, StreamNotes
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
from etl_assets.staging.partition import StagedPartition, staged_partition
from etl_assets.staging.spec import StagingSpec
from etl_assets.staging.versions import (
    MANIFEST,
    PartitionVersions,
    StagingError,
    sweep_asset,
)
from etl_assets.storage import Folder

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


Where = Path | StagedPartition
"""A staged partition: a local path (``<root>/<asset>/<partition>``), or its versions."""


def _partition(where: Where) -> StagedPartition:
    return PartitionVersions(where) if isinstance(where, Path) else where


def write_staged(where: Where, stream: RecordBatchStream, *, run_id: str, shard_rows: int,
                 progress: ProgressLog | None = None, log: Log | None = None,
                 sweep: bool = True) -> StagedManifest:
    """Write ``stream`` as parquet shards into a new version of the partition ``where`` and
    make it current atomically, unless a newer version was published meanwhile (then this one
    is discarded: the partition already holds a later extraction). Leftovers of a local
    partition's asset are swept first (``sweep``; a range run sweeps before its first window
    only); the partition itself is swept after publishing."""
    versions = _partition(where)
    if sweep and isinstance(versions, PartitionVersions):
        # what killed writers left in any partition of the asset (a folder listing each); on
        # an object store the sweep after publishing, of this partition, is the only one (a
        # listing there costs a request per partition)
        sweep_asset(versions.asset_dir, log)
    written = versions.allocate(run_id)
    manifest = StagedManifest(run_id=run_id, version=written.version)
    raw = stream.notes.raw_pages
    files = written.files
    try:
        if raw is not None:  # the source's pages go into this version, as its rows do
            raw.write_into(files.child(RAW_FOLDER))
        _write_shards(files, stream, shard_rows, manifest, progress)
        if raw is not None:
            raw.finish()
        manifest.written_at = datetime.now(timezone.utc).isoformat()
        files.write_bytes(MANIFEST, json.dumps(asdict(manifest), indent=1).encode())
        published = written.publish()
    except BaseException:
        written.discard()
        raise
    if not published:
        written.discard()
        if log is not None:
            log.info(f"staging {versions.location}: version {written.version} is older than "
                     f"the one a concurrent run published; kept that one")
        return manifest
    written.release()
    removed = versions.sweep()  # the previous version, unless a reader still holds it
    if removed.names and log is not None:
        log.info(f"staging {versions.location}: removed {len(removed.names)} older or "
                 f"abandoned version(s), {removed.bytes:,} bytes")
    return manifest


def _write_shards(files: Folder, stream: RecordBatchStream, shard_rows: int,
                  manifest: StagedManifest, progress: ProgressLog | None) -> None:
    """Write ``stream`` as shards of at most ``shard_rows`` rows (more when one batch is
    larger), a row group a batch; no rows: one empty shard, which keeps the schema. A shard
    that fails is not left behind, on disk or in an object store."""
    batches = _Peekable(iter(stream))
    while True:
        name = f"part-{len(manifest.shards):05d}.parquet"
        rows = 0
        with files.writing(name, in_place=True) as out, \
                pq.ParquetWriter(out, stream.schema) as writer:
            while (batch := batches.peek()) is not None and \
                    not (rows and rows + batch.num_rows > shard_rows):
                next(batches)
                writer.write_batch(batch, row_group_size=max(batch.num_rows, 1))
                rows += batch.num_rows
                if progress:
                    progress.add(batch.num_rows)
        size = files.size(name)
        manifest.shards.append({"file": name, "rows": rows, "bytes": size})
        manifest.rows += rows
        manifest.bytes += size
        if batches.peek() is None:
            return


class _Peekable:
    """An iterator of batches whose next one can be looked at first (None: no more)."""

    def __init__(self, batches: Iterator[pa.RecordBatch]) -> None:
        self._batches = batches
        self._next: pa.RecordBatch | None = None

    def peek(self) -> pa.RecordBatch | None:
        if self._next is None:
            self._next = next(self._batches, None)
        return self._next

    def __next__(self) -> pa.RecordBatch:
        batch = self.peek()
        if batch is None:
            raise StopIteration
        self._next = None
        return batch


def read_staged(where: Where) -> RecordBatchStream:
    """The staged batches of the partition ``where``, read lazily one row group at a time.
    The current version is resolved once and held now (a shared lock locally, a lease on an
    object store; released when the stream is read to its end or dropped), so a concurrent
    re-stage neither mixes shards of two runs nor removes them underneath."""
    versions = _partition(where)
    pin = versions.pin()
    if pin is None:
        raise StagingError(f"nothing is staged at {versions.location}")
    files = pin.files
    try:
        manifest = StagedManifest(**json.loads(files.read_bytes(MANIFEST)))
        shards = [files.path(str(shard["file"])) for shard in manifest.shards]
        schema = pq.read_schema(shards[0], filesystem=files.fs)
    except BaseException:
        pin.release()
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for shard in shards:
                parquet = pq.ParquetFile(shard, filesystem=files.fs)
                for group in range(parquet.num_row_groups):
                    yield from parquet.read_row_group(group).to_batches()
        finally:
            pin.release()

    version = manifest.version or None
    return RecordBatchStream(schema, batches(), version=version)


def staged_manifest(where: Where) -> StagedManifest:
    """The manifest of the partition's current version."""
    versions = _partition(where)
    pin = versions.pin()
    if pin is None:
        raise StagingError(f"nothing is staged at {versions.location}")
    try:
        return StagedManifest(**json.loads(pin.files.read_bytes(MANIFEST)))
    finally:
        pin.release()


class ParquetStagingIOManager(IOManager):
    """Stages a source asset's batches as parquet shards, one folder per partition, under
    ``spec.root`` (``${VAR}`` expanded), at most ``spec.shard_rows`` rows a file."""

    def __init__(self, spec: StagingSpec) -> None:
        self.spec = spec

    def partition(self, asset_path: list[str], partition_key: str | None) -> StagedPartition:
        """The staged partition ``partition_key`` of the asset at ``asset_path`` (the root's
        ``${VAR}`` expanded now, where the run is)."""
        return staged_partition(self.spec.folder(), asset_path, partition_key or "__all__")

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
        staged = self.partition(list(context.asset_key.path), partition)
        label = f"{context.asset_key.to_user_string()} [{partition}] -> staging"

        def write(attempt: RecordBatchStream,
                  ) -> tuple[StagedManifest, ProgressLog, StreamNotes]:
            progress = ProgressLog(context.log, label, done_line=context.has_partition_key)
            return write_staged(staged, attempt, run_id=context.run_id,
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
            "path": MetadataValue.path(staged.location),
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
        staged = self.partition(list(context.asset_key.path), partition)
        try:
            return read_staged(staged)
        except StagingError:
            where = ("" if not isinstance(staged, PartitionVersions) else
                     f" on host {socket.gethostname()} (a run whose steps run on other machines "
                     f"needs staging.root on an object store such as s3://, or a shared volume)")
            raise StagingError(
                f"{context.asset_key.to_user_string()}: partition {partition} is not staged "
                f"at {staged.location}{where}; materialize the source asset for this partition "
                f"first") from None
