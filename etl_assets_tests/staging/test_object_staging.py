"""Staging on an object store (moto's S3 server): shards under a run-unique prefix, a pointer
written last, leases for readers, the removal rules of local staging."""

import json
import os
import subprocess
import sys

import pyarrow as pa
import pytest

from etl_assets.batches import RecordBatchStream, StreamNotes
from etl_assets.raw_pages import RawPages
from etl_assets.staging import object_versions
from etl_assets.staging.io_manager import StagingError, read_staged, staged_manifest, write_staged
from etl_assets.staging.object_versions import POINTER, ObjectPartitionVersions
from etl_assets.staging.partition import staged_partition
from etl_assets.storage import Folder
from etl_assets_testing.servers.s3 import S3Bucket
from etl_assets_tests.staging.test_staging import SCHEMA, ids, stream


def partition(bucket: S3Bucket, key: str = "0..100") -> ObjectPartitionVersions:
    root = Folder(bucket.url("staging"), {"endpoint_url": bucket.server.endpoint})
    staged = staged_partition(root, ["sensors"], key)
    assert isinstance(staged, ObjectPartitionVersions)
    return staged


def version_prefixes(bucket: S3Bucket, key: str = "0..100") -> list[str]:
    prefix = f"staging/sensors/{key}/"
    return sorted({k[len(prefix):].split("/")[0] for k in bucket.keys(prefix)} - {POINTER})


def pointer(bucket: S3Bucket, key: str = "0..100") -> dict:
    return json.loads(bucket.get(f"staging/sensors/{key}/{POINTER}"))


def test_round_trip_under_a_run_prefix_with_the_pointer_written_last(s3: S3Bucket) -> None:
    staged = partition(s3)
    manifest = write_staged(staged, stream(1, 2_500, 300), run_id="run1", shard_rows=1_000)
    (name,) = version_prefixes(s3)
    assert name == f"{manifest.version}-run1"
    assert s3.keys(f"staging/sensors/0..100/{name}/") == [
        f"staging/sensors/0..100/{name}/{f}" for f in
        ("_manifest.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet")]
    assert pointer(s3)["folder"] == name and pointer(s3)["version"] == manifest.version
    read = read_staged(staged)
    assert read.version == manifest.version
    assert read.schema.field("doc").metadata == {b"etl_assets.logical_type": b"json"}
    assert ids(read) == list(range(1, 2_501))
    assert staged_manifest(staged).rows == 2_500
    assert not [k for k in s3.keys("staging/") if "_readers/" in k or "_writer" in k]  # all released


def test_nothing_staged_and_an_empty_window(s3: S3Bucket) -> None:
    with pytest.raises(StagingError, match="nothing is staged at s3://"):
        read_staged(partition(s3))
    write_staged(partition(s3), RecordBatchStream(SCHEMA, iter(())), run_id="r", shard_rows=10)
    staged = read_staged(partition(s3))
    assert staged.schema.names == ["id", "doc"] and list(staged) == []


def test_a_reader_keeps_its_version_while_runs_restage_and_it_goes_after(
        s3: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(object_versions, "SUPERSEDED_GRACE_S", 0.0)
    first = write_staged(partition(s3), stream(1, 50, 10), run_id="first", shard_rows=1_000)
    reader = read_staged(partition(s3))  # holds the first version (a lease in it)
    assert [k for k in s3.keys("staging/") if "_readers/" in k]
    second = write_staged(partition(s3), stream(1_000, 5, 10), run_id="second", shard_rows=1_000)
    assert second.version > first.version
    assert version_prefixes(s3) == [f"{first.version}-first", f"{second.version}-second"]
    assert ids(read_staged(partition(s3))) == list(range(1_000, 1_005))
    assert ids(reader) == list(range(1, 51))  # read to its end: the lease is gone
    third = write_staged(partition(s3), stream(2_000, 5, 10), run_id="third", shard_rows=1_000)
    assert version_prefixes(s3) == [f"{third.version}-third"]


def test_a_superseded_version_stays_through_the_grace_period(s3: S3Bucket) -> None:
    first = write_staged(partition(s3), stream(1, 5, 10), run_id="first", shard_rows=1_000)
    second = write_staged(partition(s3), stream(1, 5, 10), run_id="second", shard_rows=1_000)
    # no reader holds the first, but a reader may have resolved the pointer a moment ago
    assert version_prefixes(s3) == [f"{first.version}-first", f"{second.version}-second"]


def test_the_pointer_names_the_newest_finished_version_whatever_order_writers_end_in(
        s3: S3Bucket) -> None:
    staged = partition(s3)
    older, newer = staged.allocate("older"), staged.allocate("newer")
    assert newer.version > older.version
    for written, rows in ((newer, 3), (older, 2)):
        write = written.files
        write.write_bytes("_manifest.json", json.dumps(
            {"rows": rows, "bytes": 0, "shards": [], "run_id": written.name,
             "written_at": "2026-12-07T00:00:00+00:00", "version": written.version}).encode())
    # the older writer publishes first, after the newer one finished: it publishes the newer
    assert older.publish() is False
    assert pointer(s3)["version"] == newer.version
    assert newer.publish() is True
    assert pointer(s3)["version"] == newer.version
    older.discard()
    newer.release()
    assert version_prefixes(s3) == [newer.name]


def test_a_new_version_numbers_after_the_current_one_whatever_the_clock(
        s3: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(object_versions.time, "time_ns", lambda: 5)
    versions = [write_staged(partition(s3), stream(1, 5, 10), run_id=f"r{n}",
                             shard_rows=10).version for n in range(3)]
    assert versions == [5, 6, 7]


def test_what_a_killed_writer_left_goes_and_a_live_writers_version_stays(s3: S3Bucket) -> None:
    staged = partition(s3)
    code = ("import os, sys; from etl_assets.storage import Folder;"
            "from etl_assets.staging.object_versions import ObjectPartitionVersions;"
            "root = Folder(sys.argv[1], {'endpoint_url': sys.argv[2]});"
            "v = ObjectPartitionVersions(root).allocate('killed');"
            "v.files.write_bytes('part-00000.parquet', b'half');"
            "print(v.name, flush=True); os.kill(os.getpid(), 9)")
    killed = subprocess.run([sys.executable, "-c", code, staged.folder.url,
                             s3.server.endpoint], capture_output=True, text=True,
                            env={**os.environ})
    assert killed.returncode == -9, killed.stderr
    killed_name = killed.stdout.strip()
    live = staged.allocate("live")  # this process writes it: it lives
    assert set(version_prefixes(s3)) == {killed_name, live.name}
    removed = staged.sweep()
    assert removed.names == [killed_name]
    assert version_prefixes(s3) == [live.name]
    live.discard()


def test_a_pointer_to_a_version_without_manifest_is_nothing_staged(s3: S3Bucket) -> None:
    staged = partition(s3)
    staged.folder.write_bytes(POINTER, json.dumps({"version": 9, "folder": "9-gone"}).encode())
    with pytest.raises(StagingError, match="nothing is staged"):
        read_staged(staged)
    staged.folder.write_bytes(POINTER, b"not json")
    with pytest.raises(StagingError, match="is not a staging pointer"):
        read_staged(staged)


def test_a_failed_write_leaves_no_version_and_the_current_one_stands(s3: S3Bucket) -> None:
    first = write_staged(partition(s3), stream(1, 5, 10), run_id="first", shard_rows=1_000)

    def failing():
        yield from stream(1, 5, 5)
        raise ConnectionResetError("source went away")

    with pytest.raises(ConnectionResetError):
        write_staged(partition(s3), RecordBatchStream(SCHEMA, failing()), run_id="second",
                     shard_rows=1_000)
    assert version_prefixes(s3) == [f"{first.version}-first"]
    assert ids(read_staged(partition(s3))) == list(range(1, 6))


def test_an_upload_that_fails_leaves_no_object(s3: S3Bucket) -> None:
    folder = Folder(s3.url("files"), {"endpoint_url": s3.server.endpoint})
    with pytest.raises(RuntimeError), folder.writing("big.bin") as out:
        out.write(os.urandom(12 * 2**20))  # past s3fs's 5 MiB block: a multipart upload
        raise RuntimeError("writer failed")
    assert s3.keys("files/") == []
    folder.write_bytes("small.bin", b"x")
    assert s3.keys("files/") == ["files/small.bin"]


def test_batches_survive_the_round_trip_exactly(s3: S3Bucket) -> None:
    table = pa.table({"id": pa.array([1, 2, None], pa.int64()),
                      "doc": pa.array(['{"a": 1}', None, "{}"])},
                     schema=SCHEMA.set(0, pa.field("id", pa.int64())))
    write_staged(partition(s3), RecordBatchStream(table.schema, iter(table.to_batches())),
                 run_id="r", shard_rows=10)
    assert pa.Table.from_batches(list(read_staged(partition(s3)))).equals(table)


def test_raw_pages_go_into_the_version_on_the_object_store(s3: S3Bucket) -> None:
    raw = RawPages()
    raw.add(b'{"page": 1}', "http://api/items?page=1")  # read before the folder is known
    batches = iter(stream(1, 5, 5))

    def rows_after_a_second_page():
        yield next(batches)
        raw.add(b'{"page": 2}', "http://api/items?page=2")

    notes = StreamNotes(raw_pages=raw)
    manifest = write_staged(partition(s3), RecordBatchStream(
        SCHEMA, rows_after_a_second_page(), notes=notes), run_id="r", shard_rows=10)
    prefix = f"staging/sensors/0..100/{manifest.version}-r/raw/"
    assert s3.keys(prefix) == [f"{prefix}{n}" for n in
                               ("page-00001.json", "page-00002.json", "pages.jsonl")]
    assert s3.get(f"{prefix}page-00002.json") == b'{"page": 2}'
    assert s3.get(f"{prefix}pages.jsonl").decode().count("\n") == 2
