"""The high watermark kept in the target table's COMMENT, and the sensor starting from it."""

import json
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from dagster import DagsterInstance, SensorResult, build_sensor_context

from etl_assets.factory import build_definitions
from etl_assets.sinks.postgres.watermark import WatermarkTarget, read_watermark
from etl_assets.sinks.postgres.writer import PostgresSinkError, PostgresUpsertWriter
from etl_assets.spec import parse_spec
from etl_assets.watermark import Window
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sample_tables import create_pg_readings

UTC = timezone.utc
T0 = datetime(2024, 3, 1, tzinfo=UTC)
SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("at", pa.timestamp("us", tz="UTC")),
                    pa.field("v", pa.int64())])


def rows(first: int, last: int, v: int = 0) -> pa.RecordBatch:
    """Rows ``first..last``; row i is at T0 + i minutes."""
    return pa.RecordBatch.from_pylist(
        [{"id": i, "at": T0 + timedelta(minutes=i), "v": v} for i in range(first, last + 1)],
        SCHEMA)


def window(lo: int, hi: int) -> WatermarkTarget:
    w = Window(T0 + timedelta(minutes=lo), T0 + timedelta(minutes=hi))
    return WatermarkTarget("at", w, w.key)


def load(pg: PgSchema, target: WatermarkTarget, batches: list[pa.RecordBatch],
         key: tuple[str, ...] = ("id",), replace_slice: bool = True) -> None:
    with PostgresUpsertWriter(pg.url, pg.table("target"), list(key), "etl_stage_test",
                              watermark=target, replace_slice=replace_slice) as writer:
        writer.prepare(SCHEMA)
        for i, batch in enumerate(batches):
            writer.write(batch, final=i == len(batches) - 1)
        writer.finish()


def stored(pg: PgSchema) -> datetime | None:
    return read_watermark(pg.url, pg.table("target"))  # type: ignore[return-value]


def test_each_batch_commits_its_watermark_with_its_rows(pg: PgSchema) -> None:
    target = window(0, 100)
    with PostgresUpsertWriter(pg.url, pg.table("target"), ["id"], "etl_stage_test",
                              watermark=target) as writer:
        writer.prepare(SCHEMA)
        writer.write(rows(1, 50))
        # every row up to just below the batch's newest cursor is in: rows sharing minute 50
        # may still come in the next batch
        assert stored(pg) == T0 + timedelta(minutes=50) - timedelta(microseconds=1)
        bad = rows(51, 100).to_pylist()
        bad[10]["id"] = None
        with pytest.raises(PostgresSinkError, match="primary key column id is NULL"):
            writer.write(pa.RecordBatch.from_pylist(bad, SCHEMA), final=True)
        assert stored(pg) == T0 + timedelta(minutes=50) - timedelta(microseconds=1)
        writer.write(rows(51, 100), final=True)
    assert stored(pg) == T0 + timedelta(minutes=100)
    assert pg.execute(f"SELECT count(*) FROM {pg.table('target')}") == [(100,)]
    comment = json.loads(pg.execute(f"SELECT obj_description('{pg.table('target')}'::regclass)")[0][0])
    assert comment["etl_assets"]["partition"] == target.partition
    assert comment["etl_assets"]["cursor"] == "at"


def test_the_watermark_advances_only_over_contiguous_windows(pg: PgSchema) -> None:
    load(pg, window(0, 100), [rows(1, 100)])
    assert stored(pg) == T0 + timedelta(minutes=100)
    load(pg, window(200, 300), [rows(201, 300)])  # a gap: (100, 200] is not loaded yet
    assert stored(pg) == T0 + timedelta(minutes=100)
    load(pg, window(90, 200), [rows(91, 200)])  # overlaps by a lookback of 10 minutes
    assert stored(pg) == T0 + timedelta(minutes=200)
    load(pg, window(0, 100), [rows(1, 100)])  # re-running an old window never lowers it
    assert stored(pg) == T0 + timedelta(minutes=200)


def test_an_empty_window_still_advances_the_watermark(pg: PgSchema) -> None:
    load(pg, window(0, 100), [rows(1, 100)])
    load(pg, window(100, 150), [])
    assert stored(pg) == T0 + timedelta(minutes=150)


def test_a_hand_written_comment_is_kept(pg: PgSchema) -> None:
    load(pg, window(0, 10), [rows(1, 10)])
    pg.execute(f"COMMENT ON TABLE {pg.table('target')} IS 'sensor readings, owned by ops'")
    load(pg, window(10, 20), [rows(11, 20)])
    comment = json.loads(pg.execute(f"SELECT obj_description('{pg.table('target')}'::regclass)")[0][0])
    assert comment["comment"] == "sensor readings, owned by ops"
    assert stored(pg) == T0 + timedelta(minutes=20)


def test_without_a_key_a_rerun_replaces_the_window_slice(pg: PgSchema) -> None:
    load(pg, window(0, 100), [rows(1, 50), rows(51, 100)], key=())
    load(pg, window(100, 200), [rows(101, 200)], key=())
    load(pg, window(0, 100), [rows(1, 60, v=1), rows(61, 100, v=1)], key=())  # re-run, new values
    got = pg.execute(f"SELECT v, count(*), min(id), max(id) FROM {pg.table('target')} GROUP BY v ORDER BY v")
    assert got == [(0, 100, 101, 200), (1, 100, 1, 100)]
    assert pg.execute(
        "SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass", (pg.table("target"),)) == [(0,)]


def test_without_a_key_an_empty_rerun_clears_its_slice(pg: PgSchema) -> None:
    load(pg, window(0, 100), [rows(1, 100)], key=())
    load(pg, window(50, 100), [], key=())  # the source lost those rows
    assert pg.execute(f"SELECT max(id), count(*) FROM {pg.table('target')}") == [(50, 50)]


def test_without_a_key_append_mode_appends(pg: PgSchema) -> None:
    load(pg, window(0, 10), [rows(1, 10)], key=(), replace_slice=False)
    load(pg, window(0, 10), [rows(1, 10)], key=(), replace_slice=False)
    assert pg.execute(f"SELECT count(*), count(DISTINCT id) FROM {pg.table('target')}") == [(20, 10)]


def test_a_sensor_without_cursor_or_partitions_starts_after_the_committed_watermark(
        pg: PgSchema, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SOURCE_URL", pg.url)
    monkeypatch.setenv("TEST_TARGET_URL", pg.url)
    source_table = create_pg_readings(pg, last=300)  # updated at T0 + 1..300 minutes
    spec = parse_spec({
        "sources": {"readings": {"connection": {"env": "TEST_SOURCE_URL"}, "table": source_table,
                                 "cursor": "updated_at", "primary_key": ["id"],
                                 "max_window": "2h"}},
        "sinks": {"readings_pg": {"source": "readings", "kind": "postgres",
                                  "connection": {"env": "TEST_TARGET_URL"},
                                  "table": pg.table("target")}},
    })
    sensor = build_definitions(spec).resolve_sensor_def("readings_watermark_sensor")

    first = sensor(build_sensor_context(instance=instance, cursor=None))
    assert isinstance(first, SensorResult)  # no watermark yet: the whole history
    assert Window.from_key(first.run_requests[0].partition_key).lo == T0

    load(pg, window(0, 240), [rows(1, 240)])  # loaded before, by another instance
    second = sensor(build_sensor_context(instance=instance, cursor=None))
    assert isinstance(second, SensorResult)
    assert [Window.from_key(r.partition_key) for r in second.run_requests] == [
        Window(T0 + timedelta(minutes=240), T0 + timedelta(minutes=300))]
