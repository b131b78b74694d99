"""The file sink on a real S3 endpoint (moto's server on loopback), read back with boto3."""

from __future__ import annotations

import pyarrow as pa
import pytest

from etl_assets.retries import RetryPolicy
from etl_assets.sinks.files.compose import compose
from etl_assets.sinks.files.formats import file_format
from etl_assets.sinks.files.target import FileTarget
from etl_assets.sinks.files.writer import FileSink
from etl_assets_testing.servers.s3 import S3Bucket
from etl_assets_tests.sinks.files.file_reading import by_id, rows_of

SUFFIX = {"parquet": ".parquet", "json": ".jsonl", "csv": ".csv"}


def sink(bucket: S3Bucket, fmt: str, mode: str, **kwargs: object) -> FileSink:
    target = FileTarget(bucket.url("lake/sensors"), bucket.server.storage_options())
    return FileSink(target, file_format(fmt), mode, where="sink s3_test", retry=RetryPolicy(0),  # type: ignore[arg-type]
                    **kwargs)  # type: ignore[arg-type]


def batch(*rows: tuple[int, str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([{"id": i, "name": n} for i, n in rows])


@pytest.mark.parametrize("fmt", ["parquet", "json", "csv"])
def test_shards_land_whole_under_their_keys_and_no_temp_keys_stay(s3: S3Bucket, fmt: str) -> None:
    s = sink(s3, fmt, "shard")
    s.write(batch((1, "a")).schema, [batch((1, "a"), (2, "b"))], partition="0..10", run_id="r1")
    s.write(batch((1, "a")).schema, [batch((11, "c"))], partition="10..20", run_id="r2")
    s.write(batch((1, "a")).schema, [batch((1, "a2"))], partition="0..10", run_id="r3")
    suffix = SUFFIX[fmt]
    assert s3.keys() == [f"lake/sensors/0..10{suffix}", f"lake/sensors/10..20{suffix}"]
    first = by_id(rows_of(fmt, s3.get(f"lake/sensors/0..10{suffix}")))
    assert {i: r["name"] for i, r in first.items()} == {1: "a2"}
    assert [r["name"] for r in rows_of(fmt, s3.get(f"lake/sensors/10..20{suffix}"))] == ["c"]


@pytest.mark.parametrize("fmt", ["parquet", "json"])
def test_update_merges_into_the_object_by_key(s3: S3Bucket, fmt: str) -> None:
    s = sink(s3, fmt, "update", primary_key=["id"])
    schema = batch((1, "a")).schema
    s.write(schema, [batch((1, "one"), (2, "two"))], partition="a", run_id="r1")
    written = s.write(schema, [batch((2, "two v2"), (3, "three"))], partition="b", run_id="r2")
    assert (written.rows, written.rows_total) == (2, 3)
    assert s3.keys() == [f"lake/sensors/data{SUFFIX[fmt]}"]
    got = by_id(rows_of(fmt, s3.get(f"lake/sensors/data{SUFFIX[fmt]}")))
    assert {i: r["name"] for i, r in got.items()} == {1: "one", 2: "two v2", 3: "three"}


def test_compose_merges_s3_shards_into_one_object(s3: S3Bucket) -> None:
    s = sink(s3, "parquet", "shard")
    schema = batch((1, "a")).schema
    for n, part in enumerate(["0..10", "10..20", "20..30"]):
        s.write(schema, [batch((n * 10 + 1, f"r{n}"), (n * 10 + 2, f"s{n}"))], partition=part, run_id=f"r{n}")
    done = compose(s3.url("lake/sensors"), "parquet", storage_options=s3.server.storage_options(),
                   remove_shards=True)
    assert done.rows == 6 and len(done.shards) == 3
    assert s3.keys() == ["lake/sensors/composed.parquet"]
    assert [r["id"] for r in rows_of("parquet", s3.get("lake/sensors/composed.parquet"))] == [1, 2, 11, 12, 21, 22]
