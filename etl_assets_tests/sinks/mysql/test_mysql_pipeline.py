"""The MySQL sink in real Dagster runs: a PostgreSQL source's readings land in MariaDB with
values equal, the checks pass, the metadata and ``status`` say what the table holds; a
refused value fails the run naming table, column and row, or becomes a dead letter that the
replay job writes once the table can take it."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from etl_assets.dead_letters import DeadLetterStore
from etl_assets.factory import build_definitions
from etl_assets.sinks.registry import sink_io_manager
from etl_assets.spec import parse_spec
from etl_assets.watermark import Window
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sample_tables import create_pg_readings
from etl_assets_tests.sinks.mysql.mariadb import MariaDb
from etl_assets_tests.test_factory import run_partition

pytestmark = pytest.mark.slow

UTC = timezone.utc
FIRST = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, 1, tzinfo=UTC))


def spec(source: str, maria: MariaDb, **sink: object) -> dict[str, Any]:
    return {
        "sources": {"readings": {
            "connection": {"env": "TEST_SOURCE_URL"}, "table": source, "cursor": "updated_at",
            "primary_key": ["id"], "chunk_rows": 25, "max_window": "1h"}},
        "sinks": {"readings_my": {
            "source": "readings", "kind": "mysql", "connection": {"env": "TEST_MYSQL_URL"},
            "table": maria.name, "retries": 1, "retry_delay_s": 0, **sink}},
    }


@pytest.fixture(autouse=True)
def urls(pg: PgSchema, maria: MariaDb, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SOURCE_URL", pg.url)
    monkeypatch.setenv("TEST_MYSQL_URL", maria.url)


def test_readings_land_with_values_equal_and_the_checks_pass(
        pg: PgSchema, maria: MariaDb, instance: DagsterInstance) -> None:
    source = create_pg_readings(pg, last=120)
    pg.execute(f"UPDATE {source} SET score = -1 WHERE score = 'NaN'")  # MySQL has no NaN
    parsed = parse_spec(spec(source, maria))
    defs = build_definitions(parsed)
    metadata = run_partition(defs, instance, FIRST)["readings_my"]
    assert metadata["rows_written"].value == 60 and metadata["rows_changed"].value == 60
    assert metadata["dagster/row_count"].value == 60
    assert metadata["dagster/table_name"].value == f"{maria.database}.{maria.name}"
    columns = {c.name: c.type for c in metadata["dagster/column_schema"].value.columns}
    assert columns["ratio"] == "decimal(65,30)" and columns["attrs"] == "longtext"

    expected = pg.execute(f"SELECT id, code, description, updated_at, local_time, amount, ratio, "
                          f"score, active, day, attrs, tags, ref::text, blob FROM {source} "
                          f"WHERE id <= 60 ORDER BY id")
    landed = maria.query(f"SELECT id, code, description, updated_at, local_time, amount, ratio, "
                         f"score, active, day, attrs, tags, ref, `blob` FROM `{maria.name}` "
                         f"ORDER BY id")
    assert len(landed) == 60
    for want, got in zip(expected, landed, strict=True):
        assert got[:3] == want[:3]
        assert got[3].replace(tzinfo=UTC) == want[3] and got[4] == want[4]
        assert got[5:8] == want[5:8]  # decimals equal as numbers, floats exactly
        assert (None if got[8] is None else bool(got[8])) == want[8] and got[9] == want[9]
        assert (None if got[10] is None else json.loads(got[10])) == want[10]
        assert (None if got[11] is None else json.loads(got[11])) == want[11]
        assert got[12] == want[12] and got[13] == (None if want[13] is None else bytes(want[13]))

    result = defs.resolve_job_def("readings_job").execute_in_process(
        instance=instance, partition_key=FIRST.key)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["row_count_reconciliation"].passed, checks["row_count_reconciliation"]
    assert checks["schema_drift"].passed
    again = next(m for m in (e.event_specific_data.materialization
                             for e in result.get_asset_materialization_events())
                 if m.asset_key.path[-1] == "readings_my")
    assert again.metadata["rows_changed"].value == 0  # a re-run changes nothing

    manager = sink_io_manager(parsed.sink_setup("readings_my"))
    assert manager.committed_watermark() == FIRST.hi
    assert manager.status() == (f"sink readings_my: 60 rows in {maria.database}.{maria.name}, "
                                f"high watermark 20240301T010000Z")


def test_a_refused_value_fails_the_run_naming_table_column_and_row(
        pg: PgSchema, maria: MariaDb, instance: DagsterInstance) -> None:
    source = create_pg_readings(pg, last=120)  # score NaN in rows 11, 22, ...
    defs = build_definitions(parse_spec(spec(source, maria)))
    instance.add_dynamic_partitions("readings_windows", [FIRST.key])
    result = defs.resolve_job_def("readings_job").execute_in_process(
        instance=instance, partition_key=FIRST.key, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error, message = failure.event_specific_data.error, ""
    while error is not None:  # Dagster wraps the IO manager's error
        message, error = message + error.message, error.cause
    assert f"{maria.database}.{maria.name}: column score row id=11: " in message
    assert maria.rows() == []  # the batch holding row 11 rolled back; its batch was the first


def test_refused_rows_become_dead_letters_the_replay_job_writes_later(
        pg: PgSchema, maria: MariaDb, instance: DagsterInstance, etl_home: Path) -> None:
    source = create_pg_readings(pg, last=120)
    pg.execute(f"UPDATE {source} SET score = -1 WHERE score = 'NaN'")
    pg.execute(f"UPDATE {source} SET code = 'LONGER-CODE-XY' WHERE id IN (5, 30, 31)")
    maria.query(f"CREATE TABLE `{maria.name}` (id BIGINT PRIMARY KEY, code VARCHAR(9) NOT NULL,"
                f" updated_at DATETIME(6) NOT NULL)")
    defs = build_definitions(parse_spec(spec(
        source, maria, on_error="dead_letter",
        transform="etl_assets_tests.sinks.mysql.test_mysql_pipeline:three_columns")))
    metadata = run_partition(defs, instance, FIRST)["readings_my"]
    assert metadata["rows_dead_lettered"].value == 3 and metadata["rows_written"].value == 57
    assert metadata["dead_letters"].value == 3
    assert [r[0] for r in maria.query(f"SELECT id FROM `{maria.name}` WHERE id IN (5, 30, 31)")
            ] == []
    store = DeadLetterStore(etl_home / "dead_letters")
    kept = [store.read(f) for f in store.files("readings_my")]  # a file a batch
    assert sorted(i for k in kept for i in k.payload.column("id").to_pylist()) == [5, 30, 31]
    assert all("column code row id=" in e for k in kept for e in k.errors)

    replay = defs.resolve_job_def("readings_my_replay_dead_letters")
    assert replay.execute_in_process(instance=instance).output_for_node(
        "replay_readings_my_dead_letters") == 3  # still refused: kept
    maria.query(f"ALTER TABLE `{maria.name}` MODIFY code VARCHAR(32) NOT NULL")
    assert replay.execute_in_process(instance=instance).output_for_node(
        "replay_readings_my_dead_letters") == 0
    assert store.count("readings_my") == 0
    assert maria.query(f"SELECT id, code FROM `{maria.name}` WHERE id IN (5, 30, 31) "
                       f"ORDER BY id") == [(5, "LONGER-CODE-XY"), (30, "LONGER-CODE-XY"),
                                           (31, "LONGER-CODE-XY")]
    assert maria.query(f"SELECT count(*) FROM `{maria.name}`") == [(60,)]


def three_columns(batch):  # a sink transform
    return batch.select(["id", "code", "updated_at"])
