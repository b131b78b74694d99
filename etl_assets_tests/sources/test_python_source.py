"""`kind: python` sources: a function's records through Dagster into PostgreSQL and parquet,
the sensor's windows from `latest`, and the spec's rules. The functions are in
etl_assets_tests/python_source_functions.py."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, SensorResult, SkipReason

from etl_assets import code_versions
from etl_assets.code_location import definitions_of
from etl_assets.errors import EtlAssetsError
from etl_assets.factory import build_definitions
from etl_assets.sensors import WatermarkCursor
from etl_assets.sinks.postgres.watermark import read_watermark
from etl_assets.sinks.registry import sink_io_manager
from etl_assets.sources.python.source import PythonSourceError, open_python_source
from etl_assets.sources.registry import open_source
from etl_assets.spec import PipelineSpec, SpecError, parse_spec
from etl_assets.watermark import Window
from etl_assets_tests import python_source_functions as functions
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.python_source_functions import T0, reading, readings_in
from etl_assets_tests.sinks.mysql.mariadb import MariaDb
from etl_assets_tests.test_factory import run_partition
from etl_assets_tests.test_sensors import tick, windows

UTC = timezone.utc
FUNCTIONS = "etl_assets_tests.python_source_functions"
WHOLE = Window(T0, T0 + timedelta(hours=2))
COLUMNS = "id, code, amount, note, updated_at"


def source(named: str, **settings: object) -> dict:
    return {"kind": "python", "function": f"{FUNCTIONS}:{named}", "cursor": "updated_at",
            "cursor_type": "timestamp", "primary_key": ["id"], "max_window": "2h",
            "retry_delay_s": 0.01, **settings}


def python_spec(pg: PgSchema, lake: Path, function: str, **settings: object) -> dict:
    return {
        "sources": {"readings": source(function, **settings)},
        "sinks": {
            "readings_pg": {"source": "readings", "kind": "postgres",
                            "connection": {"env": "TEST_TARGET_URL"},
                            "table": pg.table("readings_copy")},
            "readings_files": {"source": "readings", "kind": "parquet", "path": str(lake)},
        },
    }


@pytest.fixture
def lake(pg: PgSchema, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEST_TARGET_URL", pg.url)
    return tmp_path / "lake"


def defs_of(pg: PgSchema, lake: Path, function: str, **settings: object):
    return build_definitions(parse_spec(python_spec(pg, lake, function, **settings)))


def pg_rows(pg: PgSchema, columns: str = COLUMNS) -> list[tuple]:
    return pg.execute(f"SELECT {columns} FROM {pg.table('readings_copy')} ORDER BY id")


def parquet_rows(lake: Path) -> list[dict]:
    files = sorted(p for p in lake.rglob("*.parquet") if ".versions" not in p.parts)
    assert files, f"no parquet file under {lake}"
    rows = [row for file in files for row in pq.read_table(file).to_pylist()]
    return sorted(rows, key=lambda row: row["id"])


def as_tuples(rows: list[dict], columns: str = COLUMNS) -> list[tuple]:
    names = [c.strip() for c in columns.split(",")]
    return [tuple(row[n] for n in names) for row in rows]


def failure_message(defs, instance: DagsterInstance, window: Window) -> str:
    """The message of the run's failed step, with the causes Dagster wraps around it."""
    instance.add_dynamic_partitions("readings_windows", [window.key])
    result = defs.resolve_job_def("readings_job").execute_in_process(
        instance=instance, partition_key=window.key, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error, messages = failure.event_specific_data.error, []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


# -- end to end: the function's records in PostgreSQL and parquet -------------------------


@pytest.mark.slow
@pytest.mark.parametrize("function", ["arrow_batches", "arrow_tables", "data_frames",
                                      "dict_lists", "one_table", "one_list"])
def test_each_kind_of_records_lands_with_the_values_yielded(
        pg: PgSchema, lake: Path, instance: DagsterInstance, function: str) -> None:
    metadata = run_partition(defs_of(pg, lake, function), instance, WHOLE)
    expected = readings_in(WHOLE.lo, WHOLE.hi)
    assert len(expected) == 120
    assert metadata["readings"]["dagster/row_count"].value == 120
    assert metadata["readings_pg"]["rows_written"].value == 120
    assert pg_rows(pg) == as_tuples(expected)
    assert parquet_rows(lake) == expected
    assert pg.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = 'readings_copy' ORDER BY ordinal_position", (pg.name,)) == [
        ("id", "bigint"), ("code", "text"), ("amount", "double precision"), ("note", "text"),
        ("updated_at", "timestamp with time zone")]


@pytest.mark.slow
def test_nested_documents_in_dicts_land_as_json(pg: PgSchema, lake: Path,
                                                instance: DagsterInstance) -> None:
    run_partition(defs_of(pg, lake, "with_documents"), instance, WHOLE)
    assert pg_rows(pg, "id, attrs")[:2] == [
        (1, {"n": 1, "tags": ["a", None], "ü": "ß"}), (2, {"n": 2, "tags": ["a", None], "ü": "ß"})]
    assert json.loads(parquet_rows(lake)[0]["attrs"]) == {"n": 1, "tags": ["a", None], "ü": "ß"}


@pytest.mark.slow
def test_declared_columns_type_what_the_first_batch_would_not(
        pg: PgSchema, lake: Path, instance: DagsterInstance) -> None:
    # no cursor_type: `columns` declares the cursor's
    spec = python_spec(pg, lake, "as_text", columns={
        "amount": "decimal(10,2)", "updated_at": "timestamp[us, tz=UTC]"})
    del spec["sources"]["readings"]["cursor_type"]
    run_partition(build_definitions(parse_spec(spec)), instance, WHOLE)
    expected = [(r["id"], Decimal(f"{r['amount']:.2f}"), r["updated_at"])
                for r in readings_in(WHOLE.lo, WHOLE.hi)]
    assert pg_rows(pg, "id, amount, updated_at") == expected
    assert pg.execute(
        "SELECT column_name, data_type, numeric_precision, numeric_scale FROM "
        "information_schema.columns WHERE table_schema = %s AND table_name = 'readings_copy' "
        "ORDER BY ordinal_position", (pg.name,)) == [
        ("amount", "numeric", 10, 2), ("updated_at", "timestamp with time zone", None, None),
        ("id", "bigint", 64, 0)]  # declared columns first, then the first batch's
    assert as_tuples(parquet_rows(lake), "id, amount, updated_at") == expected


@pytest.mark.slow
def test_later_batches_are_cast_to_the_first_batchs_types(
        pg: PgSchema, lake: Path, instance: DagsterInstance) -> None:
    run_partition(defs_of(pg, lake, "widening"), instance, WHOLE)
    assert pg_rows(pg) == as_tuples(readings_in(WHOLE.lo, WHOLE.hi))
    assert pq.read_schema(next(lake.rglob("*.parquet"))).field("id").type == pa.int64()


@pytest.mark.slow
def test_a_cast_conflict_fails_naming_the_field_and_the_batch(
        pg: PgSchema, lake: Path, instance: DagsterInstance) -> None:
    message = failure_message(defs_of(pg, lake, "conflicting"), instance, WHOLE)
    assert (f"source 'readings' window {WHOLE}: batch 2: field 'amount': string does not cast "
            f"to double") in message
    assert pg.execute(f"SELECT to_regclass('{pg.table('readings_copy')}')") == [(None,)]


@pytest.mark.slow
def test_rows_outside_the_window_are_dropped(pg: PgSchema, lake: Path,
                                             instance: DagsterInstance) -> None:
    half = Window(T0 + timedelta(minutes=30), T0 + timedelta(hours=1))
    metadata = run_partition(defs_of(pg, lake, "everything"), instance, half)
    assert metadata["readings"]["dagster/row_count"].value == 30
    assert pg_rows(pg) == as_tuples([reading(i) for i in range(31, 61)])
    assert [row["id"] for row in parquet_rows(lake)] == list(range(31, 61))


@pytest.mark.slow
def test_a_rerun_gives_the_same_table(pg: PgSchema, lake: Path,
                                      instance: DagsterInstance) -> None:
    defs = defs_of(pg, lake, "dict_lists")
    run_partition(defs, instance, WHOLE)
    first = pg_rows(pg)
    again = run_partition(defs, instance, WHOLE)
    assert again["readings_pg"]["rows_changed"].value == 0
    assert again["readings_pg"]["rows_written"].value == 120
    assert pg_rows(pg) == first == as_tuples(readings_in(WHOLE.lo, WHOLE.hi))
    assert parquet_rows(lake) == readings_in(WHOLE.lo, WHOLE.hi)  # the shard replaced


def run_checked(defs, instance: DagsterInstance, window: Window) -> dict:
    """``run_partition``, and every check of the run passed."""
    instance.add_dynamic_partitions("readings_windows", [window.key])
    result = defs.resolve_job_def("readings_job").execute_in_process(
        instance=instance, partition_key=window.key)
    checks = {(e.asset_key.path[-1], e.check_name): (e.passed, e.description)
              for e in result.get_asset_check_evaluations()}
    assert checks and all(passed for passed, _ in checks.values()), checks
    return {str(e.asset_key.path[-1]): e.metadata for e in
            (m.event_specific_data.materialization
             for m in result.get_asset_materialization_events())}


@pytest.mark.slow
@pytest.mark.parametrize("function", ["nothing", "empty_frame"])
def test_an_empty_window_stages_an_empty_partition_and_the_sinks_succeed(
        pg: PgSchema, lake: Path, instance: DagsterInstance, function: str) -> None:
    metadata = run_checked(defs_of(pg, lake, function), instance, WHOLE)
    assert metadata["readings"]["dagster/row_count"].value == 0
    assert metadata["readings_pg"]["rows_written"].value == 0
    assert metadata["readings_files"]["rows_written"].value == 0
    # `nothing` tells no columns: no table is made of it; the empty frame's columns make one
    assert pg.execute(f"SELECT to_regclass('{pg.table('readings_copy')}') IS NOT NULL") == [
        (function == "empty_frame",)]


@pytest.mark.slow
def test_a_window_without_rows_or_columns_advances_the_watermarks(
        pg: PgSchema, lake: Path, mysql_url: str, instance: DagsterInstance,
        monkeypatch: pytest.MonkeyPatch) -> None:
    maria = MariaDb(mysql_url)
    monkeypatch.setenv("TEST_MYSQL_URL", maria.url)
    spec = python_spec(pg, lake, "dict_lists")
    spec["sinks"]["readings_my"] = {"source": "readings", "kind": "mysql", "table": maria.name,
                                    "connection": {"env": "TEST_MYSQL_URL"}}
    parsed = parse_spec(spec)
    defs = build_definitions(parsed)
    later = Window(WHOLE.hi, WHOLE.hi + timedelta(hours=2))  # no reading: the function yields nothing
    run_checked(defs, instance, later)  # before any table: none is made
    assert pg.execute(f"SELECT to_regclass('{pg.table('readings_copy')}')") == [(None,)]
    assert maria.query("SHOW TABLES LIKE %s", (maria.name,)) == []
    run_checked(defs, instance, WHOLE)
    run_checked(defs, instance, later)  # again, now that the tables exist
    even_later = Window(later.hi, later.hi + timedelta(hours=2))
    metadata = run_checked(defs, instance, even_later)
    assert metadata["readings"]["dagster/row_count"].value == 0
    assert metadata["readings_pg"]["rows_written"].value == 0
    assert metadata["readings_my"]["rows_written"].value == 0
    # the watermarks pass over the windows without rows, as over any window
    assert read_watermark(pg.url, pg.table("readings_copy")) == even_later.hi
    assert sink_io_manager(parsed.sink_setup("readings_my")).committed_watermark() == even_later.hi
    assert pg_rows(pg) == as_tuples(readings_in(WHOLE.lo, WHOLE.hi))
    assert len(maria.rows()) == 120
    assert parquet_rows(lake) == readings_in(WHOLE.lo, WHOLE.hi)


@pytest.mark.slow
def test_an_empty_window_with_declared_columns_then_rows(
        pg: PgSchema, lake: Path, instance: DagsterInstance) -> None:
    spec = python_spec(pg, lake, "everything", columns={
        "id": "int64", "updated_at": "timestamp[us, tz=UTC]"})
    defs = build_definitions(parse_spec(spec))
    later = Window(T0 + timedelta(days=1), T0 + timedelta(days=1, hours=2))  # no reading
    assert run_partition(defs, instance, later)["readings_pg"]["rows_written"].value == 0
    run_partition(defs, instance, WHOLE)
    assert pg_rows(pg) == as_tuples(readings_in(WHOLE.lo, WHOLE.hi))


@pytest.mark.slow
def test_an_error_from_the_function_fails_the_run_with_one_line(
        pg: PgSchema, lake: Path, instance: DagsterInstance) -> None:
    message = failure_message(defs_of(pg, lake, "broken"), instance, WHOLE)
    line = (f"source 'readings' window (2024-03-01 00:00:00+00:00, 2024-03-01 02:00:00+00:00]: "
            f"{FUNCTIONS}:broken raised ValueError: reading 6 is malformed: expected a number")
    assert line in message.splitlines() or any(m.endswith(line) for m in message.splitlines())
    assert pg.execute(f"SELECT to_regclass('{pg.table('readings_copy')}')") == [(None,)]


@pytest.mark.slow
def test_a_transient_error_is_retried_from_the_windows_beginning(
        pg: PgSchema, lake: Path, instance: DagsterInstance) -> None:
    functions.calls.clear()
    metadata = run_partition(defs_of(pg, lake, "flaky"), instance, WHOLE)
    assert functions.calls == [(WHOLE.lo, WHOLE.hi)] * 2
    assert metadata["readings"]["dagster/row_count"].value == 120  # not 145: a fresh version
    assert pg_rows(pg) == as_tuples(readings_in(WHOLE.lo, WHOLE.hi))
    (run,) = instance.get_runs()
    logs = [e.user_message for e in instance.all_logs(run.run_id)]
    assert any(m.startswith(f"source 'readings' window {WHOLE.key}: ConnectionResetError: "
                            f"connection reset by peer; extracting the window again") for m in logs)
    assert any(m.startswith("readings: reading with reader python (") for m in logs)
    assert any("readings [" in m and "-> staging: done, 120 rows" in m for m in logs)


@pytest.mark.slow
def test_an_integer_cursor_gets_int_bounds(pg: PgSchema, lake: Path,
                                           instance: DagsterInstance) -> None:
    functions.calls.clear()
    defs = defs_of(pg, lake, "recorded", cursor="id", cursor_type="integer", max_window=1000,
                   latest=f"{FUNCTIONS}:newest_id")
    sensor = defs.resolve_sensor_def("readings_watermark_sensor")
    result = tick(sensor, instance, None)
    assert windows(result) == [Window(0, 120)]
    run_partition(defs, instance, Window(0, 120))
    assert functions.calls == [(0, 120)]
    assert pg_rows(pg) == as_tuples([reading(i) for i in range(1, 121)])


# -- the sensor's newest value ---------------------------------------------------------------


def sensor_of(**settings: object):
    spec = parse_spec({"sources": {"readings": source("dict_lists", max_window="1h",
                                                      **settings)}})
    return build_definitions(spec).resolve_sensor_def("readings_watermark_sensor")


def test_the_sensor_cuts_windows_up_to_what_latest_returns(instance: DagsterInstance) -> None:
    sensor = sensor_of(latest=f"{FUNCTIONS}:newest_reading", start="2024-03-01T00:00:00+00:00")
    result = tick(sensor, instance, None)
    assert isinstance(result, SensorResult)
    assert windows(result) == [Window(T0, T0 + timedelta(hours=1)),
                               Window(T0 + timedelta(hours=1), T0 + timedelta(hours=2))]
    assert WatermarkCursor.parse(result.cursor).requested_hi == T0 + timedelta(hours=2)
    quiet = tick(sensor, instance, result.cursor)
    assert isinstance(quiet, SkipReason)
    assert "no rows after the high watermark 20240301T020000Z" in quiet.skip_message


def test_the_sensor_without_latest_cuts_windows_up_to_now(instance: DagsterInstance) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2, minutes=30)
    before = datetime.now(UTC)
    result = tick(sensor_of(start=start.isoformat()), instance, None)
    got = windows(result)
    assert [w.lo for w in got] == [start, start + timedelta(hours=1), start + timedelta(hours=2)]
    assert before <= got[-1].hi <= datetime.now(UTC)


def test_latest_returning_none_means_no_rows(instance: DagsterInstance) -> None:
    result = tick(sensor_of(latest=f"{FUNCTIONS}:no_readings_yet"), instance, None)
    assert isinstance(result, SkipReason) and "the source has no rows" in result.skip_message


def test_latest_returning_no_cursor_value_is_one_line() -> None:
    spec = parse_spec({"sources": {"readings": source(
        "dict_lists", latest=f"{FUNCTIONS}:not_a_function", cursor_type="timestamp")}})
    opened = open_source("readings", spec.sources["readings"])
    with pytest.raises(PythonSourceError) as error:
        opened.cursor_range()
    assert str(error.value) == (f"source 'readings': {FUNCTIONS}:not_a_function returned 1 "
                                f"(int); the cursor updated_at is a timestamp (a datetime)")


# -- the source without Dagster ---------------------------------------------------------------


def opened(function: str, **settings: object):
    spec = parse_spec({"sources": {"readings": source(function, **settings)}})
    return open_python_source("readings", spec.sources["readings"])


def test_bounds_are_utc_datetimes_even_for_a_naive_window() -> None:
    functions.calls.clear()
    stream = opened("flaky").extract(Window(datetime(2024, 3, 1), datetime(2024, 3, 1, 1)))
    assert functions.calls == [(T0, T0 + timedelta(hours=1))]
    assert stream.schema.field("updated_at").type == pa.timestamp("us", tz="UTC")
    with pytest.raises(ConnectionResetError):  # transient: raised as it is, to be retried
        list(stream)


def test_a_result_that_is_no_records_is_one_line() -> None:
    with pytest.raises(PythonSourceError) as error:
        opened("a_number").extract(WHOLE)
    assert str(error.value) == (
        f"source 'readings' window {WHOLE}: {FUNCTIONS}:a_number raised TypeError: it "
        f"returned int; yield or return Arrow record batches or tables, pandas DataFrames or "
        f"lists of dicts")


def test_describe_kinds_and_location() -> None:
    spec = parse_spec({"sources": {"readings": source("dict_lists")}})
    readings = spec.sources["readings"]
    assert readings.describe() == f"{FUNCTIONS}:dict_lists"
    assert readings.asset_kinds() == {"python"}
    asset = build_definitions(spec).resolve_assets_def("readings")
    assert set(asset.specs_by_key[asset.key].kinds) == {"python", "parquet"}
    assert f"Rows of {FUNCTIONS}:dict_lists with updated_at" in asset.descriptions_by_key[asset.key]
    source_ = open_source("readings", readings)
    assert source_.location() == functions.__file__
    assert source_.cursor_type == "timestamp"


# -- code versions ---------------------------------------------------------------------------


def source_version(function: str, **settings: object) -> str:
    spec = parse_spec({"sources": {"readings": source(function, **settings)}})
    asset = build_definitions(spec).resolve_assets_def("readings")
    return asset.code_versions_by_key[asset.key]


def test_the_code_version_holds_the_functions_code() -> None:
    spec = parse_spec({"sources": {"readings": source("dict_lists")}})
    (code,) = spec.sources["readings"].code_of_functions("source 'readings'")
    assert "def dict_lists(" in code and "def _pages(" in code and "def readings_in(" in code
    assert source_version("dict_lists") == source_version("dict_lists", max_window="1h")
    assert source_version("dict_lists") != source_version("arrow_batches")
    assert source_version("dict_lists") == code_versions.version_of(
        code_versions.data_settings(spec.sources["readings"]), code)


def test_a_sql_sources_code_version_is_as_before() -> None:
    spec = parse_spec({"sources": {"s": {"connection": {"env": "X"}, "table": "t",
                                         "cursor": "c"}}})
    assert build_definitions(spec).resolve_assets_def("s").code_versions_by_key[
        build_definitions(spec).resolve_assets_def("s").key] == code_versions.version_of(
        code_versions.data_settings(spec.sources["s"]))


# -- the spec's rules --------------------------------------------------------------------------


@pytest.mark.parametrize(("settings", "error"), [
    ({"cursor_type": None},
     "`cursor_type` (timestamp or integer) is required unless `columns` declares the cursor's "
     "type"),
    ({"cursor_type": "integer"}, "an integer cursor needs `latest`"),
    ({"cursor_type": None, "columns": {"updated_at": "int64"}}, "an integer cursor needs `latest`"),
    ({"columns": {"updated_at": "string"}},
     "`columns` declares the cursor updated_at string; a cursor is a timestamp or an integer"),
    ({"cursor_type": "integer", "latest": f"{FUNCTIONS}:newest_id",
      "columns": {"updated_at": "timestamp[us]"}},
     "`cursor_type` is integer but `columns` declares updated_at timestamp[us]"),
    ({"columns": {"amount": "money"}}, "column amount: unknown type 'money'"),
    ({"columns": {"at": "timestamp[us, tz=Mars/Base]"}}, "unknown time zone 'Mars/Base'"),
    ({"function": "no colon"}, "field 'function': 'no colon' is not of the form package.module:name"),
    ({"latest": "a.b"}, "field 'latest': 'a.b' is not of the form package.module:name"),
    ({"chunk_rows": 5}, "field 'chunk_rows': Extra inputs are not permitted"),
])
def test_spec_errors_name_the_source_and_field(settings: dict, error: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec({"sources": {"readings": source("dict_lists", **settings)}}, "p.yaml")
    assert str(raised.value).startswith("p.yaml: source 'readings': ")
    assert error in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("field", "reference", "error"), [
    ("function", f"{FUNCTIONS}:nope", f"function {FUNCTIONS}:nope: {FUNCTIONS} has no nope"),
    ("function", "no_such_module_xyz:fetch",
     "function no_such_module_xyz:fetch: cannot import no_such_module_xyz"),
    ("function", f"{FUNCTIONS}:NOT_CALLABLE", f"function {FUNCTIONS}:NOT_CALLABLE is not callable"),
    ("latest", f"{FUNCTIONS}:nope", f"latest {FUNCTIONS}:nope: {FUNCTIONS} has no nope"),
])
def test_a_wrong_reference_fails_when_the_definitions_are_built(
        field: str, reference: str, error: str) -> None:
    spec: PipelineSpec = parse_spec({"sources": {"readings": source(
        "dict_lists", **{field: reference})}})
    with pytest.raises(SpecError) as raised:
        definitions_of(spec, Path("p.yaml"))
    assert str(raised.value).startswith(f"p.yaml: source 'readings': {error}")
    assert "\n" not in str(raised.value)
    assert isinstance(raised.value.__cause__, EtlAssetsError)


@pytest.mark.slow
def test_a_single_run_backfill_of_windows_lands_each_window(
        pg: PgSchema, lake: Path, instance: DagsterInstance) -> None:
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    defs = defs_of(pg, lake, "dict_lists", backfill="single_run", max_window="30m")
    windows = [Window(T0 + timedelta(minutes=30 * k), T0 + timedelta(minutes=30 * (k + 1)))
               for k in range(4)]
    instance.add_dynamic_partitions("readings_windows", [w.key for w in windows])
    result = defs.resolve_job_def("readings_job").execute_in_process(
        instance=instance, tags={ASSET_PARTITION_RANGE_START_TAG: windows[0].key,
                                 ASSET_PARTITION_RANGE_END_TAG: windows[-1].key})
    assert result.success
    assert len({e.step_key for e in result.get_step_success_events()}) == 3  # one run, 3 steps
    written = {m.partition: m.metadata["rows_written"].value
               for m in (e.event_specific_data.materialization
                         for e in result.get_asset_materialization_events())
               if m.asset_key.path[-1] == "readings_pg"}
    assert written == {w.key: 30 for w in windows}
    assert pg_rows(pg) == as_tuples(readings_in(windows[0].lo, windows[-1].hi))
    assert read_watermark(pg.url, pg.table("readings_copy")) == windows[-1].hi
