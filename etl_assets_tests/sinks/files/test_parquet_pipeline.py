"""Spec -> Dagster run -> files: PostgreSQL source windows through staging into file sinks."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance

from etl_assets.factory import build_definitions
from etl_assets.spec import parse_spec
from etl_assets.watermark import Window
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sample_tables import create_pg_readings
from etl_assets_tests.sinks.files.file_reading import by_id, rows_of
from etl_assets_tests.test_factory import run_partition

UTC = timezone.utc
FIRST = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, 1, tzinfo=UTC))
SECOND = Window(FIRST.hi, datetime(2024, 3, 1, 2, tzinfo=UTC))
COMPARED = "id, code, description, updated_at, amount, day, tags, active"


def spec_for(source_table: str, lake: Path, **sinks: dict) -> dict:
    return {
        "sources": {"readings": {
            "connection": {"env": "TEST_SOURCE_URL"}, "table": source_table,
            "cursor": "updated_at", "primary_key": ["id"], "chunk_rows": 25, "max_window": "2h"}},
        "sinks": {name: {"source": "readings", "kind": "parquet", "path": str(lake / name), **sink}
                  for name, sink in sinks.items()},
    }


def source_rows(pg: PgSchema, table: str) -> dict[int, dict]:
    names = [c.strip() for c in COMPARED.split(",")]
    return {row[0]: dict(zip(names, row, strict=True))
            for row in pg.execute(f"SELECT {COMPARED} FROM {table} ORDER BY id")}


@pytest.mark.slow
def test_windows_land_as_shards_and_merge_into_the_updated_dataset(
        pg: PgSchema, instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SOURCE_URL", pg.url)
    source = create_pg_readings(pg, last=120)  # rows at 00:01 .. 02:00
    spec = spec_for(source, tmp_path / "lake",
                    shards={"mode": "shard", "format": "parquet"},
                    merged={"mode": "update", "format": "json"})
    defs = build_definitions(parse_spec(spec))
    assert defs.resolve_job_def("shards_replay_dead_letters") is not None

    first = run_partition(defs, instance, FIRST)
    assert first["shards"]["rows_written"].value == first["shards"]["dagster/row_count"].value == 60
    assert first["merged"]["rows_in_file"].value == 60
    assert first["merged"]["dead_letters"].value == 0
    # row 30 is edited and moves to the second window: the update replaces its document
    pg.execute(f"UPDATE {source} SET description = 'late edit', "
               f"updated_at = timestamptz '2024-03-01 01:30:30+00' WHERE id = 30")
    second = run_partition(defs, instance, SECOND)
    assert second["merged"]["rows_written"].value == 61
    assert second["merged"]["dagster/row_count"].value == 120  # what the dataset holds
    assert second["merged"]["rows_in_file"].value == 120

    shards = sorted((tmp_path / "lake" / "shards").glob("*.parquet"))
    assert [p.name for p in shards] == [f"{FIRST.key}.parquet", f"{SECOND.key}.parquet"]
    want = source_rows(pg, source)
    first_rows = by_id(pq.read_table(shards[0]).to_pylist())
    assert sorted(first_rows) == list(range(1, 61))
    second_rows = by_id(pq.read_table(shards[1]).to_pylist())
    assert sorted(second_rows) == [30, *range(61, 121)]
    for i in range(61, 121):
        assert {k: second_rows[i][k] for k in want[i]} == want[i]
    assert second_rows[30]["description"] == "late edit"

    docs = by_id(rows_of("json", (tmp_path / "lake" / "merged" / "data.jsonl").read_bytes()))
    assert sorted(docs) == list(range(1, 121))
    assert docs[30]["description"] == "late edit"
    assert docs[31]["description"] == want[31]["description"]
    assert docs[2]["tags"] == want[2]["tags"] and docs[8]["tags"] is None
    assert docs[5]["updated_at"] == "2024-03-01T00:05:00Z" and docs[2]["amount"] == "2.250"


@pytest.mark.slow
def test_rerunning_a_partition_gives_the_same_files(
        pg: PgSchema, instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SOURCE_URL", pg.url)
    source = create_pg_readings(pg, last=60)
    spec = spec_for(source, tmp_path / "lake", shards={"format": "csv"},
                    merged={"mode": "update", "format": "parquet"})
    defs = build_definitions(parse_spec(spec))
    run_partition(defs, instance, FIRST)
    shard = tmp_path / "lake" / "shards" / f"{FIRST.key}.csv"
    before = (shard.read_bytes(), pq.read_table(tmp_path / "lake" / "merged" / "data.parquet"))
    run_partition(defs, instance, FIRST)
    after = (shard.read_bytes(), pq.read_table(tmp_path / "lake" / "merged" / "data.parquet"))
    assert after[0] == before[0] and len(rows_of("csv", after[0])) == 60
    assert after[1].num_rows == 60
    # repr: NaN scores compare equal as text
    assert repr(after[1].sort_by("id").to_pylist()) == repr(before[1].sort_by("id").to_pylist())


def test_update_without_any_primary_key_fails_when_the_code_location_loads(tmp_path: Path) -> None:
    spec = spec_for("s.t", tmp_path, merged={"mode": "update"})
    spec["sources"]["readings"]["primary_key"] = []
    with pytest.raises(ValueError, match="sink 'merged': mode update needs a primary_key"):
        build_definitions(parse_spec(spec))
