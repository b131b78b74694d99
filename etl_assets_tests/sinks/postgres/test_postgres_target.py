"""What the PostgreSQL sink says of its table: run metadata per partition (a range of them in
one step too), Dagster's standard keys, the declared schema, and the asset checks' counts."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from dagster import DagsterInstance, TableSchema

from etl_assets.sinks.base import SinkSetup, WindowCount
from etl_assets.sinks.postgres import target_state
from etl_assets.sinks.postgres.io_manager import PostgresUpsertIOManager
from etl_assets.sinks.postgres.spec import PostgresSinkSpec
from etl_assets.watermark import Window
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sinks.sink_runs import DAY, NEXT_DAY, keys, rows, run_range, run_sink
from etl_assets_tests.sinks.sink_runs import EVENTS as SCHEMA


def sink(pg: PgSchema, monkeypatch: pytest.MonkeyPatch, etl_home: Path, *,
         key: list[str] | None = None, cursor: str = "updated_at", table: str | None = None,
         **config: Any) -> PostgresUpsertIOManager:
    monkeypatch.setenv("TEST_TARGET_URL", pg.url)
    spec = PostgresSinkSpec(kind="postgres", source="events", table=table or pg.table("events"),
                            connection={"env": "TEST_TARGET_URL"}, **config)
    return PostgresUpsertIOManager(SinkSetup.of(
        "events_pg", spec, source_primary_key=["id"] if key is None else key,
        source_cursor=cursor, dead_letter_root=str(etl_home / "dead_letters")))






def test_a_range_run_writes_each_partition_and_each_has_its_own_metadata(
        pg: PgSchema, monkeypatch: pytest.MonkeyPatch, etl_home: Path,
        instance: DagsterInstance) -> None:
    manager = sink(pg, monkeypatch, etl_home)
    metadata = run_range(manager, {DAY: [rows([1, 2, 3], DAY)],
                                   NEXT_DAY: [rows([3, 4], NEXT_DAY), rows([5, 6], NEXT_DAY)]},
                         SCHEMA, instance)
    assert pg.execute(f"SELECT id, name FROM {pg.table('events')} ORDER BY id") == [
        (1, "v1"), (2, "v2"), (3, "v3"), (4, "v4"), (5, "v5"), (6, "v6")]
    first, second = metadata[DAY.key], metadata[NEXT_DAY.key]
    assert (first["rows_written"], first["rows_changed"], first["batches"]) == (3, 3, 1)
    assert (second["rows_written"], second["rows_changed"], second["batches"]) == (4, 4, 2)
    # what the table holds after the step, on each partition's materialization
    assert first["dagster/row_count"] == second["dagster/row_count"] == 6
    database = pg.execute("SELECT current_database()")[0][0]
    assert first["dagster/table_name"] == f"{database}.{pg.name}.events"
    # the watermark advanced over both windows
    assert manager.committed_watermark() == NEXT_DAY.hi


def test_target_metadata_gives_the_tables_own_types_key_and_rows(
        pg: PgSchema, monkeypatch: pytest.MonkeyPatch, etl_home: Path) -> None:
    manager = sink(pg, monkeypatch, etl_home, key=["id", "name"])
    assert manager.target_metadata() == {}  # no table yet
    first = run_sink(manager, [rows([1, 2], DAY)], SCHEMA, DAY, "events_pg")
    assert first["rows_written"] == 2 and first["dagster/row_count"] == 2
    again = run_sink(manager, [rows([1, 2, 3], DAY)], SCHEMA, DAY, "events_pg")
    assert (again["rows_written"], again["rows_changed"], again["dagster/row_count"]) == (3, 1, 3)
    schema = again["dagster/column_schema"]
    assert isinstance(schema, TableSchema)
    shown = [(c.name, c.type, c.constraints.nullable, c.constraints.unique) for c in schema.columns]
    assert shown == [("id", "bigint", False, False), ("name", "text", False, False),
                     ("updated_at", "timestamp with time zone", True, False)]
    assert schema.constraints is not None and schema.constraints.other == ["primary key (id, name)"]


def test_a_one_column_key_is_unique_and_a_table_in_no_schema_is_in_public(
        pg: PgSchema, monkeypatch: pytest.MonkeyPatch, etl_home: Path) -> None:
    table = f"events_{pg.name}"[:60]
    manager = sink(pg, monkeypatch, etl_home, table=table)  # no schema: created in public
    try:
        run_sink(manager, [rows([1], DAY)], SCHEMA, DAY, "events_pg")
        metadata = manager.target_metadata()
        database = pg.execute("SELECT current_database()")[0][0]
        assert metadata["dagster/table_name"] == f"{database}.public.{table}"
        schema = metadata["dagster/column_schema"]
        assert isinstance(schema, TableSchema)
        assert [c.constraints.unique for c in schema.columns] == [True, False, False]
        assert schema.constraints is not None and schema.constraints.other == ["primary key (id)"]
    finally:
        pg.execute(f'DROP TABLE IF EXISTS public."{table}"')


def test_a_big_table_reports_the_planners_estimate_instead_of_counting(
        pg: PgSchema, monkeypatch: pytest.MonkeyPatch, etl_home: Path) -> None:
    manager = sink(pg, monkeypatch, etl_home)
    run_sink(manager, [rows(list(range(1, 2001)), DAY)], SCHEMA, DAY, "events_pg")
    pg.execute(f"ANALYZE {pg.table('events')}")
    assert manager.target_metadata()["dagster/row_count"] == 2000  # under the threshold: exact
    monkeypatch.setattr(target_state, "EXACT_COUNT_MAX_ROWS", 1000)
    metadata = manager.target_metadata()
    assert "dagster/row_count" not in metadata
    assert metadata["row_count_estimate"] == 2000  # reltuples after ANALYZE


def test_count_window_counts_each_window_and_keys_a_later_window_replaced(
        pg: PgSchema, monkeypatch: pytest.MonkeyPatch, etl_home: Path) -> None:
    manager = sink(pg, monkeypatch, etl_home)
    run_sink(manager, [rows([1, 2, 3, 4, 5], DAY)], SCHEMA, DAY, "events_pg")
    run_sink(manager, [rows([4, 5, 6], NEXT_DAY)], SCHEMA, NEXT_DAY, "events_pg")  # 4, 5 moved on
    assert manager.count_window(DAY, keys([1, 2, 3, 4, 5])) == WindowCount(rows=3, newer=2)
    # only the keys given are looked up: 1 is in the window, 4 later, 9 nowhere
    assert manager.count_window(DAY, keys([1, 4, 4, 9])) == WindowCount(rows=1, newer=1)
    assert manager.count_window(NEXT_DAY, keys([4, 5, 6])) == WindowCount(rows=3, newer=0)
    assert manager.count_window(NEXT_DAY, None) == WindowCount(rows=3, newer=0)
    later = Window(NEXT_DAY.hi, NEXT_DAY.hi + timedelta(days=1))
    assert manager.count_window(later, keys([])) == WindowCount(rows=0, newer=0)
    assert manager.target_columns() == ["id", "name", "updated_at"]


def test_count_window_with_a_composite_key_and_an_integer_cursor(
        pg: PgSchema, monkeypatch: pytest.MonkeyPatch, etl_home: Path) -> None:
    schema = pa.schema([pa.field("site", pa.string()), pa.field("id", pa.int64()),
                        pa.field("seq", pa.int64())])
    manager = sink(pg, monkeypatch, etl_home, key=["site", "id"], cursor="seq")
    low, high = Window(0, 100), Window(100, 200)

    def batch(items: list[tuple[str, int, int]]) -> pa.RecordBatch:
        return pa.RecordBatch.from_pylist([{"site": s, "id": i, "seq": q} for s, i, q in items],
                                          schema)

    run_sink(manager, [batch([("a", 1, 10), ("b", 1, 20), ("a", 2, 30), ("a", 3, 100)])],
             schema, low, "events_pg")
    run_sink(manager, [batch([("b", 1, 150), ("a", 4, 101)])], schema, high, "events_pg")
    given = pa.table({"site": ["a", "b", "a", "a"], "id": [1, 1, 2, 3]})
    assert manager.count_window(low, given) == WindowCount(rows=3, newer=1)
    assert manager.count_window(high, given.slice(1, 1)) == WindowCount(rows=1, newer=0)
    assert manager.count_window(high, None) == WindowCount(rows=2, newer=0)


def test_count_window_without_a_key_and_a_naive_timestamp_cursor(
        pg: PgSchema, monkeypatch: pytest.MonkeyPatch, etl_home: Path) -> None:
    schema = pa.schema([pa.field("name", pa.string()), pa.field("at", pa.timestamp("us"))])
    manager = sink(pg, monkeypatch, etl_home, key=[], cursor="at")
    day = Window(datetime(2024, 3, 1), datetime(2024, 3, 2))

    def batch(*hours: int) -> pa.RecordBatch:
        return pa.RecordBatch.from_pylist(
            [{"name": f"n{h}", "at": datetime(2024, 3, 1) + timedelta(hours=h)} for h in hours],
            schema)

    run_sink(manager, [batch(0, 1, 24, 24)], schema, day, "events_pg")
    run_sink(manager, [batch(25, 30)], schema, Window(day.hi, datetime(2024, 3, 3)), "events_pg")
    # hour 0 is the window's lo, outside it; the two rows at hour 24 (its hi) are inside
    assert manager.count_window(day, None) == WindowCount(rows=3, newer=0)


def test_a_declared_table_gives_its_schema_before_any_run(
        pg: PgSchema, monkeypatch: pytest.MonkeyPatch, etl_home: Path) -> None:
    manager = sink(pg, monkeypatch, etl_home, key=["code"], cursor="at",
                   table_definition="etl_assets_tests.sinks.postgres.declared_tables:readings")
    schema = manager.declared_column_schema()
    assert isinstance(schema, TableSchema)
    assert [(c.name, c.type, c.constraints.nullable, c.constraints.unique)
            for c in schema.columns] == [
        ("code", "VARCHAR(8)", False, True), ("id", "BIGINT", False, False),
        ("amount", "NUMERIC(10, 2)", True, False), ("at", "TIMESTAMP WITH TIME ZONE", True, False),
        ("doc", "JSONB", True, False), ("note", "TEXT", True, False)]
    assert schema.constraints is not None and schema.constraints.other == ["primary key (code)"]
    assert manager.target_columns() is None  # no table yet
    assert sink(pg, monkeypatch, etl_home).declared_column_schema() is None


def test_count_window_with_awkward_text_keys(pg: PgSchema, monkeypatch: pytest.MonkeyPatch,
                                             etl_home: Path) -> None:
    schema = pa.schema([pa.field("code", pa.string()), pa.field("seq", pa.int64())])
    manager = sink(pg, monkeypatch, etl_home, key=["code"], cursor="seq")
    codes = ['a"b', "c\\d", "e,f", " ", "{g}", "NULL", "ü"]
    batch = pa.RecordBatch.from_pylist([{"code": c, "seq": 10 + i} for i, c in enumerate(codes)],
                                       schema)
    run_sink(manager, [batch], schema, Window(0, 100), "events_pg")
    given = pa.table({"code": [*codes, "missing", 'a"b']})
    assert manager.count_window(Window(0, 100), given) == WindowCount(rows=len(codes), newer=0)
    assert manager.count_window(Window(0, 12), given) == WindowCount(rows=3, newer=4)
