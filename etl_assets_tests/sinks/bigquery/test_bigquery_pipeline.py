"""Spec -> Dagster run -> BigQuery: PostgreSQL source windows through staging into a BigQuery
sink (bqemulator), values read back equal to the source's."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from etl_assets.factory import build_definitions
from etl_assets.spec import SpecError, parse_spec
from etl_assets.watermark import Window
from etl_assets_testing.servers.bigquery import PROJECT, BigQueryEmulator
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sample_tables import create_pg_readings
from etl_assets_tests.test_factory import run_partition

UTC = timezone.utc
FIRST = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, 1, tzinfo=UTC))
SECOND = Window(FIRST.hi, datetime(2024, 3, 1, 2, tzinfo=UTC))
# every column of the sample table but `ratio` (an unbounded numeric -> BIGNUMERIC, which the
# emulator's DuckDB cannot hold; the sink's transform drops it)
COLUMNS = "id, code, description, updated_at, local_time, amount, score, active, day, attrs, tags, ref, blob"


def spec_for(source_table: str, dataset: str, endpoint: str, write: str) -> dict:
    return {
        "sources": {"readings": {
            "connection": {"env": "TEST_SOURCE_URL"}, "cursor": "updated_at", "table": source_table,
            "primary_key": ["id"], "chunk_rows": 25, "max_window": "2h"}},
        "sinks": {"readings_bq": {"source": "readings", "kind": "bigquery", "project": PROJECT,
                                  "dataset": dataset, "table": "readings", "write": write,
                                  "transform": "etl_assets_tests.transforms_for_tests:without_ratio",
                                  "api_endpoint": "${TEST_BQ_ENDPOINT}", "chunk_rows": 40,
                                  "retries": 1, "retry_delay_s": 0, "request_timeout_s": 5}},
    }


def comparable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return str(value) if type(value).__name__ == "UUID" else value


def source_rows(pg: PgSchema, table: str) -> dict[int, dict[str, Any]]:
    names = [c.strip() for c in COLUMNS.split(",")]
    return {row[0]: {n: comparable(v) for n, v in zip(names, row, strict=True)}
            for row in pg.execute(f"SELECT {COLUMNS} FROM {table} ORDER BY id")}


def target_rows(emulator: BigQueryEmulator, dataset: str) -> dict[int, dict[str, Any]]:
    return {row["id"]: {n: comparable(v) for n, v in row.items()}
            for row in emulator.rows(f"{PROJECT}.{dataset}.readings")}


@pytest.mark.slow
@pytest.mark.parametrize("write", ["merge", "replace_partition"])
def test_windows_land_with_values_equal_to_the_source_and_a_rerun_changes_nothing(
        pg: PgSchema, instance: DagsterInstance, bq_emulator: BigQueryEmulator, bq_dataset: str,
        monkeypatch: pytest.MonkeyPatch, write: str) -> None:
    monkeypatch.setenv("TEST_SOURCE_URL", pg.url)
    monkeypatch.setenv("TEST_BQ_ENDPOINT", bq_emulator.endpoint)
    source = create_pg_readings(pg, last=120)  # rows at 00:01 .. 02:00
    defs = build_definitions(parse_spec(spec_for(source, bq_dataset, bq_emulator.endpoint, write)))
    assert defs.resolve_job_def("readings_bq_replay_dead_letters") is not None
    first = run_partition(defs, instance, FIRST)["readings_bq"]
    assert first["rows_written"].value == 60 and first["chunks"].value == 2  # 25-row batches gathered to 50 + 10
    run_partition(defs, instance, SECOND)
    run_partition(defs, instance, FIRST)  # a re-run
    assert target_rows(bq_emulator, bq_dataset) == source_rows(pg, source)


def test_merge_without_a_primary_key_fails_when_the_code_location_loads(tmp_path: Path) -> None:
    spec = spec_for("public.t", "d", "http://127.0.0.1:1", "merge")
    spec["sources"]["readings"]["primary_key"] = []
    with pytest.raises(ValueError, match="sink 'readings_bq': write merge needs a primary_key"):
        build_definitions(parse_spec(spec))


def test_a_bad_bigquery_sink_spec_names_the_sink_and_field() -> None:
    spec = spec_for("public.t", "d", "http://127.0.0.1:1", "upsert")
    with pytest.raises(SpecError, match=r"sink 'readings_bq': field 'write'"):
        parse_spec(spec, "pipelines.yaml")
