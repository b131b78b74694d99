import os
from pathlib import Path

import pyarrow as pa
import pytest

from etl_assets.batches import RecordBatchStream
from etl_assets.io_managers.staging import (
    StagingError,
    read_staged,
    staged_manifest,
    write_staged,
)

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False),
                    pa.field("doc", pa.string(), metadata={"etl_assets.logical_type": "json"})])


def stream(first: int, count: int, batch_rows: int) -> RecordBatchStream:
    def batches():
        for start in range(first, first + count, batch_rows):
            ids = list(range(start, min(start + batch_rows, first + count)))
            yield pa.record_batch([pa.array(ids, pa.int64()),
                                   pa.array([f'{{"n": {i}}}' for i in ids])], schema=SCHEMA)
    return RecordBatchStream(SCHEMA, batches())


def test_round_trip_in_shards_keeps_batches_and_schema_metadata(tmp_path: Path) -> None:
    path = tmp_path / "sensors" / "0..100"
    manifest = write_staged(path, stream(1, 2_500, 300), run_id="run1", shard_rows=1_000)
    assert manifest.rows == 2_500
    assert [s["rows"] for s in manifest.shards] == [900, 900, 700]
    assert sorted(p.name for p in path.iterdir()) == [
        "_manifest.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    staged = read_staged(path)
    assert staged.schema.field("doc").metadata == {b"etl_assets.logical_type": b"json"}
    batches = list(staged)
    assert max(b.num_rows for b in batches) == 300  # one row group per written batch
    assert pa.Table.from_batches(batches).column("id").to_pylist() == list(range(1, 2_501))


def test_empty_window_keeps_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "a" / "k"
    write_staged(path, RecordBatchStream(SCHEMA, iter(())), run_id="r", shard_rows=10)
    staged = read_staged(path)
    assert staged.schema.names == ["id", "doc"]
    assert list(staged) == []


def test_restaging_replaces_atomically_and_removes_the_old_version(tmp_path: Path) -> None:
    path = tmp_path / "a" / "k"
    write_staged(path, stream(1, 50, 10), run_id="first", shard_rows=1_000)
    old_version = path.resolve()
    reader = read_staged(path)  # pinned to the first version
    write_staged(path, stream(1_000, 5, 10), run_id="second", shard_rows=1_000)
    assert staged_manifest(path).run_id == "second"
    assert not old_version.exists()
    assert pa.Table.from_batches(list(read_staged(path))).column("id").to_pylist() == list(
        range(1_000, 1_005))
    with pytest.raises(FileNotFoundError):
        list(reader)  # the replaced version is gone, not mixed with the new one


def test_a_failed_write_leaves_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "a" / "k"
    write_staged(path, stream(1, 20, 10), run_id="good", shard_rows=1_000)

    def failing():
        yield from stream(1, 10, 10)
        raise ConnectionError("source went away")

    with pytest.raises(ConnectionError):
        write_staged(path, RecordBatchStream(SCHEMA, failing()), run_id="bad", shard_rows=1_000)
    assert staged_manifest(path).run_id == "good"
    assert len(os.listdir(path.parent / ".versions" / "k")) == 1  # the failed one was removed
    assert sum(b.num_rows for b in read_staged(path)) == 20


def test_missing_partition_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StagingError, match="nothing is staged at"):
        read_staged(tmp_path / "nope")
