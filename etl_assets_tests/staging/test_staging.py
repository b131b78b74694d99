import signal
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from etl_assets.batches import RecordBatchStream
from etl_assets.staging.io_manager import (
    StagingError,
    read_staged,
    staged_manifest,
    write_staged,
)
from etl_assets.staging.versions import PartitionVersions
from etl_assets_tests.log_lines import LogLines

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
        ".lock", "_manifest.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
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


def ids(staged: RecordBatchStream) -> list[int]:
    return [i for batch in staged for i in batch.column("id").to_pylist()]


def version_folders(path: Path) -> list[str]:
    return sorted(p.name for p in (path.parent / ".versions" / path.name).iterdir()
                  if not p.name.startswith("."))


def test_a_reader_keeps_its_version_until_it_is_done_then_the_next_write_removes_it(
        tmp_path: Path) -> None:
    path = tmp_path / "a" / "k"
    first = write_staged(path, stream(1, 50, 10), run_id="first", shard_rows=1_000)
    old_version = path.resolve()
    reader = read_staged(path)  # pinned to the first version
    assert reader.version == first.version
    second = write_staged(path, stream(1_000, 5, 10), run_id="second", shard_rows=1_000)
    assert second.version > first.version
    assert staged_manifest(path).run_id == "second"
    assert old_version.exists()  # a reader holds it
    new_reader = read_staged(path)
    assert new_reader.version == second.version
    assert ids(new_reader) == list(range(1_000, 1_005))
    assert ids(reader) == list(range(1, 51))  # the whole first version, not mixed
    write_staged(path, stream(2_000, 5, 10), run_id="third", shard_rows=1_000)
    assert not old_version.exists()  # released: gone with the next write
    assert len(version_folders(path)) == 1


def test_a_dropped_reader_releases_its_version(tmp_path: Path) -> None:
    path = tmp_path / "a" / "k"
    write_staged(path, stream(1, 50, 10), run_id="first", shard_rows=1_000)
    old_version = path.resolve()
    reader = read_staged(path)
    del reader  # never read: the pin goes with it
    write_staged(path, stream(1, 5, 10), run_id="second", shard_rows=1_000)
    assert not old_version.exists()


def test_versions_increase_even_when_the_clock_stands_still(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a" / "k"
    monkeypatch.setattr("etl_assets.staging.versions.time.time_ns", lambda: 5)
    versions = [write_staged(path, stream(1, 5, 10), run_id=f"r{n}", shard_rows=10).version
                for n in range(3)]
    assert versions == [5, 6, 7]
    assert read_staged(path).version == 7
    assert version_folders(path) == ["7-r2"]


def test_an_older_version_finishing_last_does_not_replace_a_newer_one(tmp_path: Path) -> None:
    path = tmp_path / "a" / "k"
    newer: list[int] = []

    def slow_older_run():
        yield from stream(1, 10, 10)
        # meanwhile another run stages the partition and finishes first
        newer.append(write_staged(path, stream(500, 3, 10), run_id="newer",
                                  shard_rows=10).version)
        yield from stream(11, 10, 10)

    older = write_staged(path, RecordBatchStream(SCHEMA, slow_older_run()), run_id="older",
                         shard_rows=1_000)
    assert older.version < newer[0]
    staged = read_staged(path)
    assert staged.version == newer[0]
    assert ids(staged) == [500, 501, 502]
    assert version_folders(path) == [f"{newer[0]}-newer"]  # the older one was discarded


def test_a_reader_that_finds_its_version_removed_resolves_the_link_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a" / "k"
    write_staged(path, stream(1, 5, 10), run_id="first", shard_rows=1_000)
    removed = path.resolve()
    write_staged(path, stream(100, 5, 10), run_id="second", shard_rows=1_000)
    assert not removed.exists()
    real_current = PartitionVersions.current
    answers = iter([removed])  # the link as it was before the second write removed it

    def stale_then_real(self: PartitionVersions) -> Path | None:
        return next(answers, None) or real_current(self)

    monkeypatch.setattr(PartitionVersions, "current", stale_then_real)
    assert ids(read_staged(path)) == list(range(100, 105))


def test_a_failed_write_leaves_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "a" / "k"
    write_staged(path, stream(1, 20, 10), run_id="good", shard_rows=1_000)

    def failing():
        yield from stream(1, 10, 10)
        raise ConnectionError("source went away")

    with pytest.raises(ConnectionError):
        write_staged(path, RecordBatchStream(SCHEMA, failing()), run_id="bad", shard_rows=1_000)
    assert staged_manifest(path).run_id == "good"
    assert len(version_folders(path)) == 1  # the failed one was removed
    assert sum(b.num_rows for b in read_staged(path)) == 20


def test_missing_partition_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StagingError, match="nothing is staged at"):
        read_staged(tmp_path / "nope")


KILLED_WRITER = """
import os, signal, sys
import pyarrow as pa
from pathlib import Path
from etl_assets.batches import RecordBatchStream
from etl_assets.staging.io_manager import write_staged
schema = pa.schema([pa.field("id", pa.int64())])
def batches():
    for n in range(3):
        yield pa.record_batch([pa.array(range(n * 1000, (n + 1) * 1000))], schema=schema)
    os.kill(os.getpid(), signal.SIGKILL)  # mid-write, before the manifest
write_staged(Path(sys.argv[1]), RecordBatchStream(schema, batches()), run_id="killed",
             shard_rows=1000)
"""


@pytest.mark.slow
def test_the_next_write_of_the_asset_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    path = tmp_path / "a" / "1..2"
    write_staged(path, stream(1, 5, 10), run_id="good", shard_rows=10)
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], timeout=120)
    assert done.returncode == -signal.SIGKILL
    partial = [name for name in version_folders(path) if name.endswith("-killed")]
    assert len(partial) == 1
    partial_folder = path.parent / ".versions" / path.name / partial[0]
    assert not (partial_folder / "_manifest.json").exists()
    assert len(list(partial_folder.glob("part-*.parquet"))) >= 2
    stray_link = path.parent / f".{path.name}.link-{partial[0]}"
    stray_link.symlink_to(partial_folder)  # as if killed between making and renaming it
    assert ids(read_staged(path)) == [1, 2, 3, 4, 5]  # the published version is intact

    log = LogLines()
    write_staged(path.with_name("2..3"), stream(1, 5, 10), run_id="next", shard_rows=10,
                 log=log)  # another partition of the same asset
    assert [name for name in version_folders(path) if name.endswith("-killed")] == []
    assert not stray_link.is_symlink()
    assert len(version_folders(path)) == 1
    swept = [line for line in log.lines if "leftover" in line]
    assert len(swept) == 1 and partial[0] in swept[0] and "bytes" in swept[0]
    assert ids(read_staged(path)) == [1, 2, 3, 4, 5]


def test_concurrent_writers_and_readers_of_one_partition_each_see_one_whole_version(
        tmp_path: Path) -> None:
    path = tmp_path / "a" / "k"
    write_staged(path, tagged(0), run_id="w0", shard_rows=100)
    errors: list[BaseException] = []
    reads: list[set[str]] = []

    def writer(n: int) -> None:
        try:
            for round_ in range(8):
                write_staged(path, tagged(n * 100 + round_), run_id=f"w{n}-{round_}",
                             shard_rows=100)
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(15):
                staged = read_staged(path)
                table = pa.Table.from_batches(list(staged), SCHEMA)
                assert table.column("id").to_pylist() == list(range(300))
                reads.append(set(table.column("doc").to_pylist()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(1, 4)]
    threads += [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(reads) == 60 and all(len(tags) == 1 for tags in reads)  # never a mix
    write_staged(path, tagged(999), run_id="last", shard_rows=100)
    assert len(version_folders(path)) == 1  # nothing left once no one reads


def tagged(tag: int) -> RecordBatchStream:
    """300 rows in shards of 100, each row's doc naming the write."""
    def batches():
        for start in range(0, 300, 50):
            ids = list(range(start, start + 50))
            yield pa.record_batch([pa.array(ids, pa.int64()), pa.array([f"w{tag}"] * 50)],
                                  schema=SCHEMA)
    return RecordBatchStream(SCHEMA, batches())
