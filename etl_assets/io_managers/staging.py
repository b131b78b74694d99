"""Staging IO manager: each partition's batches as parquet shards on local disk.

Layout: ``<root>/<asset>/<partition>`` is a symlink to ``<root>/<asset>/.versions/<partition>/
<run>/`` holding ``part-NNNNN.parquet`` files and ``_manifest.json``. A run writes a new version
and swaps the link in one atomic rename, so readers see the old shards or the new, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext

from etl_assets.batches import RecordBatchStream
from etl_assets.home import expand_vars
from etl_assets.progress import ProgressLog
from etl_assets.secrets import masked_errors

MANIFEST = "_manifest.json"


class StagingError(RuntimeError):
    """Staged data that is missing or unreadable."""


@dataclass
class StagedManifest:
    """What a staged partition holds."""

    rows: int = 0
    bytes: int = 0
    shards: list[dict[str, int | str]] = field(default_factory=list)
    run_id: str = ""
    written_at: str = ""


def write_staged(path: Path, stream: RecordBatchStream, *, run_id: str, shard_rows: int,
                 progress: ProgressLog | None = None) -> StagedManifest:
    """Write ``stream`` as parquet shards and make them the content of ``path`` atomically."""
    path = path.absolute()
    version = path.parent / ".versions" / path.name / f"{run_id}-{time.time_ns()}"
    version.mkdir(parents=True)
    manifest = StagedManifest(run_id=run_id)
    try:
        _write_shards(version, stream, shard_rows, manifest, progress)
        manifest.written_at = datetime.now(timezone.utc).isoformat()
        (version / MANIFEST).write_text(json.dumps(asdict(manifest), indent=1))
        _swap_link(path, version)
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        raise
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


def _swap_link(path: Path, version: Path) -> None:
    previous = path.resolve() if path.is_symlink() else None
    if path.exists() and not path.is_symlink():
        raise StagingError(f"{path} exists and is not a staging link; remove it")
    temp_link = path.with_name(f".{path.name}.link-{version.name}")
    temp_link.symlink_to(os.path.relpath(version, path.parent))
    os.replace(temp_link, path)
    if previous and previous != version:
        shutil.rmtree(previous, ignore_errors=True)


def read_staged(path: Path) -> RecordBatchStream:
    """The staged batches at ``path``, read lazily one row group at a time."""
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise StagingError(f"nothing is staged at {path}")
    # Pin the version now, so a concurrent re-stage does not mix shards of two runs.
    folder = path.resolve()
    manifest = json.loads((folder / MANIFEST).read_text())
    files = [folder / str(shard["file"]) for shard in manifest["shards"]]
    schema = pq.read_schema(files[0])

    def batches() -> Iterator[pa.RecordBatch]:
        for file in files:
            parquet = pq.ParquetFile(file)
            for group in range(parquet.num_row_groups):
                yield from parquet.read_row_group(group).to_batches()

    return RecordBatchStream(schema, batches())


def staged_manifest(path: Path) -> StagedManifest:
    """The manifest of the partition staged at ``path``."""
    return StagedManifest(**json.loads((path / MANIFEST).read_text()))


class ParquetStagingIOManager(ConfigurableIOManager):
    """Stages a source asset's batches as parquet shards, one folder per partition.

    ``root`` may use ``${ETL_ASSETS_HOME}``; ``shard_rows`` is the most rows per file.
    """

    root: str = "${ETL_ASSETS_HOME}/staging"
    shard_rows: int = 1_000_000

    def partition_path(self, asset_path: list[str], partition_key: str | None) -> Path:
        return Path(expand_vars(self.root)).joinpath(*asset_path, partition_key or "__all__")

    @masked_errors()
    def handle_output(self, context: OutputContext, obj: RecordBatchStream) -> None:
        if not isinstance(obj, RecordBatchStream):
            raise TypeError(f"{context.asset_key.to_user_string()}: the staging IO manager "
                            f"stores a RecordBatchStream, got {type(obj).__name__}")
        partition = context.partition_key if context.has_partition_key else None
        path = self.partition_path(list(context.asset_key.path), partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        label = f"{context.asset_key.to_user_string()} [{partition}] -> staging"
        progress = ProgressLog(context.log, label)
        manifest = write_staged(path, obj, run_id=context.run_id, shard_rows=self.shard_rows,
                                progress=progress)
        progress.done()
        context.add_output_metadata({
            "rows": manifest.rows,
            "shards": len(manifest.shards),
            "bytes": manifest.bytes,
            "path": MetadataValue.path(str(path)),
            "rows_per_second": progress.rows_per_second,
        })

    @masked_errors()
    def load_input(self, context: InputContext) -> RecordBatchStream:
        partition = context.asset_partition_key if context.has_asset_partitions else None
        path = self.partition_path(list(context.asset_key.path), partition)
        try:
            return read_staged(path)
        except StagingError:
            raise StagingError(
                f"{context.asset_key.to_user_string()}: partition {partition} is not staged "
                f"at {path}; materialize the source asset for this partition first"
            ) from None
