"""An object store that is down: the rows become dead letters, counted in the asset's metadata,
and the sink's replay job writes them once the store is back (read back from S3)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from dagster import DagsterInstance

from etl_assets.dead_letters import DeadLetterStore
from etl_assets.factory import build_definitions
from etl_assets.spec import parse_spec
from etl_assets.watermark import Window
from etl_assets_testing.servers.s3 import S3Bucket
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sample_tables import create_pg_readings
from etl_assets_tests.sinks.files.file_reading import by_id, rows_of
from etl_assets_tests.test_factory import run_partition

pytestmark = pytest.mark.slow

UTC = timezone.utc
WHOLE = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, 2, tzinfo=UTC))


def lake_spec(source_table: str, bucket: S3Bucket, mode: str) -> dict:
    return {
        "sources": {"readings": {
            "connection": {"env": "TEST_SOURCE_URL"}, "table": source_table,
            "cursor": "updated_at", "primary_key": ["id"], "chunk_rows": 50, "max_window": "2h"}},
        "sinks": {"lake": {"source": "readings", "kind": "parquet", "path": bucket.url("sensors"),
                           "mode": mode, "format": "json",
                           "storage_options": bucket.server.storage_options(),
                           "retries": 1, "retry_delay_s": 0}},
    }


@pytest.mark.parametrize("mode", ["shard", "update"])
def test_rows_that_cannot_be_written_are_replayed_when_the_store_is_back(
        pg: PgSchema, instance: DagsterInstance, s3: S3Bucket, etl_home: Path,
        monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("TEST_SOURCE_URL", pg.url)
    source = create_pg_readings(pg, last=120)
    defs = build_definitions(parse_spec(lake_spec(source, s3, mode)))
    store = DeadLetterStore(etl_home / "dead_letters")

    s3.server.stop()
    try:
        metadata = run_partition(defs, instance, WHOLE)["lake"]
        assert metadata["dead_letters"].value == 120
        assert metadata["rows_written"].value == 0
        # the store cannot be read either: the run says so and still succeeds
        assert "dagster/row_count" not in metadata and "target_metadata_error" in metadata
        assert "EndpointConnectionError" in metadata["dead_letter_error"].value or \
            "connect" in metadata["dead_letter_error"].value.lower()
        (letters,) = store.files("lake")
        assert letters.partition == WHOLE.key and letters.rows == 120
        # still down: the replay keeps them, one attempt more
        replay = defs.resolve_job_def("lake_replay_dead_letters").execute_in_process(instance=instance)
        assert replay.success and replay.output_for_node("replay_lake_dead_letters") == 120
        assert store.read(store.files("lake")[0]).attempts == [2] * 120
    finally:
        s3.server.start()

    replay = defs.resolve_job_def("lake_replay_dead_letters").execute_in_process(instance=instance)
    assert replay.success and replay.output_for_node("replay_lake_dead_letters") == 0
    assert store.count("lake") == 0
    key = f"sensors/{WHOLE.key}.jsonl" if mode == "shard" else "sensors/data.jsonl"
    # beside a shard: the staged version it was written from
    versions = [f"sensors/.versions/{WHOLE.key}.jsonl.json"] if mode == "shard" else []
    assert s3.keys() == sorted([key, *versions])
    docs = by_id(rows_of("json", s3.get(key)))
    assert sorted(docs) == list(range(1, 121))
    want = dict(pg.execute(f"SELECT id, code FROM {source}"))
    assert {i: d["code"] for i, d in docs.items()} == want
    assert docs[2]["attrs"] == {"n": 2, "nested": [1, "two", None], "ü": "ß"}


def test_a_shard_rewritten_after_its_rows_failed_is_not_overwritten_by_the_replay(
        pg: PgSchema, instance: DagsterInstance, s3: S3Bucket, etl_home: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SOURCE_URL", pg.url)
    source = create_pg_readings(pg, last=20)
    defs = build_definitions(parse_spec(lake_spec(source, s3, "shard")))
    s3.server.stop()
    try:
        assert run_partition(defs, instance, WHOLE)["lake"]["dead_letters"].value == 20
    finally:
        s3.server.start()
    pg.execute(f"UPDATE {source} SET code = 'NEWER' WHERE id = 1")
    again = run_partition(defs, instance, WHOLE)["lake"]
    assert again["rows_written"].value == again["dagster/row_count"].value == 20
    replay = defs.resolve_job_def("lake_replay_dead_letters").execute_in_process(instance=instance)
    assert replay.success
    assert DeadLetterStore(etl_home / "dead_letters").count("lake") == 0
    docs = by_id(rows_of("json", s3.get(f"sensors/{WHOLE.key}.jsonl")))
    assert docs[1]["code"] == "NEWER"
