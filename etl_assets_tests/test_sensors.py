"""Watermark sensor ticks against a real source table and a real Dagster instance."""

from datetime import datetime, timedelta, timezone

import pytest
from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context

from etl_assets.factory import build_definitions
from etl_assets.sensors import WatermarkCursor
from etl_assets.spec import parse_spec
from etl_assets.watermark import Window
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sample_tables import add_pg_readings, create_pg_readings

UTC = timezone.utc
T0 = datetime(2024, 3, 1, tzinfo=UTC)  # reading g is updated at T0 + g minutes


@pytest.fixture
def source_table(pg: PgSchema, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TEST_SOURCE_URL", pg.url)
    return create_pg_readings(pg, last=300)  # 00:01 .. 05:00


def sensor_defs(table: str, **source: object):
    spec = {"sources": {"readings": {
        "connection": {"env": "TEST_SOURCE_URL"}, "table": table, "cursor": "updated_at",
        "primary_key": ["id"], "max_window": "2h", "lookback": "10m", **source}}}
    defs = build_definitions(parse_spec(spec))
    return defs, defs.resolve_sensor_def("readings_watermark_sensor")


def tick(sensor, instance: DagsterInstance, cursor: str | None):
    result = sensor(build_sensor_context(instance=instance, cursor=cursor))
    if isinstance(result, SensorResult):  # apply what the daemon would apply
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
    return result


def windows(result: SensorResult) -> list[Window]:
    return [Window.from_key(r.partition_key) for r in result.run_requests]


def test_first_tick_backfills_history_in_bounded_windows(source_table: str,
                                                         instance: DagsterInstance) -> None:
    _, sensor = sensor_defs(source_table)
    result = tick(sensor, instance, None)
    assert isinstance(result, SensorResult)
    got = windows(result)
    assert got == [Window(T0, T0 + timedelta(hours=2)),  # the oldest row is at 00:01
                   Window(T0 + timedelta(hours=2), T0 + timedelta(hours=4)),
                   Window(T0 + timedelta(hours=4), T0 + timedelta(hours=5))]
    assert [r.run_key for r in result.run_requests] == [w.key for w in got]
    assert WatermarkCursor.parse(result.cursor).requested_hi == T0 + timedelta(hours=5)
    assert sorted(instance.get_dynamic_partitions("readings_windows")) == sorted(w.key for w in got)


def test_nothing_new_then_new_rows_then_late_rows(pg: PgSchema, source_table: str,
                                                  instance: DagsterInstance) -> None:
    _, sensor = sensor_defs(source_table)
    cursor = tick(sensor, instance, None).cursor

    quiet = tick(sensor, instance, cursor)
    assert isinstance(quiet, SkipReason)
    assert "no rows after the high watermark 20240301T050000Z" in quiet.skip_message

    add_pg_readings(pg, source_table, 301, 330)  # up to 05:30
    new = tick(sensor, instance, cursor)
    assert windows(new) == [Window(T0 + timedelta(hours=5) - timedelta(minutes=10),
                                   T0 + timedelta(minutes=330))]
    cursor = new.cursor

    # a row committed late with an updated_at 5 minutes before the watermark, plus a new one
    pg.execute(f"UPDATE {source_table} SET updated_at = %s WHERE id = 1", (T0 + timedelta(minutes=325),))
    pg.execute(f"UPDATE {source_table} SET updated_at = %s WHERE id = 2", (T0 + timedelta(minutes=331),))
    late = windows(tick(sensor, instance, cursor))
    assert len(late) == 1 and late[0].lo < T0 + timedelta(minutes=325) <= late[0].hi


def test_min_window_holds_back_small_windows(pg: PgSchema, source_table: str,
                                            instance: DagsterInstance) -> None:
    _, sensor = sensor_defs(source_table, min_window="30m", max_delay="1h")
    cursor = tick(sensor, instance, None).cursor
    add_pg_readings(pg, source_table, 301, 310)  # 10 minutes of new rows
    held = tick(sensor, instance, cursor)
    assert isinstance(held, SkipReason) and "narrower than min_window" in held.skip_message
    stale = WatermarkCursor(WatermarkCursor.parse(cursor).requested_hi, cut_at=0).serialize()
    assert windows(tick(sensor, instance, stale))  # after max_delay it is cut anyway


def test_empty_cursor_resumes_after_existing_partitions(source_table: str,
                                                       instance: DagsterInstance) -> None:
    instance.add_dynamic_partitions("readings_windows", [Window(T0, T0 + timedelta(hours=4)).key])
    _, sensor = sensor_defs(source_table)
    got = windows(tick(sensor, instance, None))
    assert got == [Window(T0 + timedelta(hours=4) - timedelta(minutes=10), T0 + timedelta(hours=5))]


def test_empty_source_skips(pg: PgSchema, instance: DagsterInstance,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SOURCE_URL", pg.url)
    table = create_pg_readings(pg, first=1, last=0)
    _, sensor = sensor_defs(table)
    result = tick(sensor, instance, None)
    assert isinstance(result, SkipReason) and "the source has no rows" in result.skip_message


def test_integer_cursor(pg: PgSchema, source_table: str, instance: DagsterInstance) -> None:
    _, sensor = sensor_defs(source_table, cursor="id", max_window=100, lookback=5)
    result = tick(sensor, instance, None)
    assert [r.partition_key for r in result.run_requests] == ["0..100", "100..200", "200..300"]
    add_pg_readings(pg, source_table, 301, 320)
    assert [r.partition_key for r in tick(sensor, instance, result.cursor).run_requests] == [
        "295..320"]
