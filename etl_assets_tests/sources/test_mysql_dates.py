"""MySQL/MariaDB dates on both read paths: zero dates as null and counted, TIMESTAMP as the UTC
instant it holds whatever the session's time zone, DATETIME naive."""

import logging
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from dagster import DagsterInstance

from etl_assets.batches import StreamNotes
from etl_assets.factory import build_definitions
from etl_assets.sources.sql.fast_reader import ReaderError
from etl_assets.sources.sql.mysql_reader import MySqlReader
from etl_assets.sources.sql.source import SourceError, SqlSource
from etl_assets.spec import parse_spec
from etl_assets.watermark import Window
from etl_assets_tests.sources.test_fast_readers import mariadb_table, source
from etl_assets_tests.test_factory import run_partition

UTC = timezone.utc
LAX = "sql_mode = '', time_zone = '+00:00'"  # lets zero dates in (no strict, no NO_ZERO_*)
INDIA = "time_zone = '+05:30'"

DATES_DDL = """
CREATE TABLE `{t}` (id INT PRIMARY KEY, day DATE, at DATETIME(6), stamp TIMESTAMP(6) NULL,
                    whole TIMESTAMP NULL, note TEXT)
"""
DATES_ROWS = (
    "(1, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', 'zero'), "
    "(2, '2024-00-15', '2024-01-00 10:00:00.5', '2024-03-01 12:00:00.25', '2024-03-01 12:00:00', 'zero parts'), "
    "(3, '2024-02-29', '2024-02-29 23:59:59.999999', '2038-01-19 03:14:07.999999', '1970-01-01 00:00:01', 'plain'), "
    "(4, '0000-01-01', '0000-01-01 00:00:00', NULL, NULL, 'year 0'), "
    "(5, NULL, NULL, NULL, NULL, 'nulls'), "
    "(6, '2024-12-00', '0000-00-00 00:00:00.000000', '0000-00-00 00:00:00', NULL, 'zero again')")
ZERO_COUNTS = {"day": 3, "at": 3, "stamp": 2, "whole": 1}


def read(src: SqlSource, window: Window) -> tuple[pa.Table, StreamNotes]:
    """The window's rows as one table, and the notes of its stream (read to its end)."""
    try:
        stream = src.extract(window)
        table = pa.Table.from_batches(list(stream), src.schema)
    finally:
        src.dispose()
    return table, stream.notes


@pytest.mark.parametrize("parallel_reads", [1, 2])
def test_zero_dates_are_null_and_counted_alike_on_both_paths(mysql_url: str,
                                                             parallel_reads: int) -> None:
    table = mariadb_table(mysql_url, DATES_DDL, DATES_ROWS, session=LAX)
    fast_source = source(mysql_url, table, chunk_rows=2, parallel_reads=parallel_reads)
    assert fast_source.reader().startswith("connectorx-mysql")
    fast, fast_notes = read(fast_source, Window(0, 6))
    generic, generic_notes = read(source(mysql_url, table, chunk_rows=2, reader="generic"),
                                  Window(0, 6))
    assert fast.equals(generic)  # every value, year 0 included (Python has no year 0)
    assert fast_notes.zero_dates_as_null == generic_notes.zero_dates_as_null == ZERO_COUNTS

    by_id = {row["id"]: row for row in fast.filter(pa.compute.not_equal(fast["id"], 4)).to_pylist()}
    for zero in (1, 6):
        assert {k: v for k, v in by_id[zero].items() if v is not None} == {
            "id": zero, "note": by_id[zero]["note"]}
    # a zero month or day is null, never a neighbouring date
    assert by_id[2]["day"] is None and by_id[2]["at"] is None
    assert by_id[2]["stamp"] == datetime(2024, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
    assert by_id[3] == {"id": 3, "day": date(2024, 2, 29),
                        "at": datetime(2024, 2, 29, 23, 59, 59, 999999),
                        "stamp": datetime(2038, 1, 19, 3, 14, 7, 999999, tzinfo=UTC),
                        "whole": datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), "note": "plain"}
    year_0 = fast.filter(pa.compute.equal(fast["id"], 4))
    assert year_0["day"].cast(pa.int32()).to_pylist() == [(date(1, 1, 1) - date(1970, 1, 1)).days - 366]
    assert year_0["at"].cast(pa.int64()).to_pylist() == [-62167219200 * 10**6]
    assert fast.schema.field("day").type == pa.date32()
    assert fast.schema.field("at").type == pa.timestamp("us")
    assert fast.schema.field("stamp").type == fast.schema.field("whole").type == pa.timestamp("us", "UTC")


def test_an_invalid_date_is_no_zero_date_and_fails_the_window_on_both_paths(mysql_url: str) -> None:
    """ALLOW_INVALID_DATES lets 2024-02-31 in: not a zero date, and no value to read."""
    table = mariadb_table(mysql_url, "CREATE TABLE `{t}` (id INT PRIMARY KEY, day DATE)",
                          "(1, '2024-02-29'), (2, '2024-02-31')",
                          session="sql_mode = 'ALLOW_INVALID_DATES'")
    with pytest.raises(ReaderError, match=r"^source 'src' window \(0, 2\] \(reader "
                                          r"connectorx-mysql\): PanicException: .*2024-02-31"):
        read(source(mysql_url, table), Window(0, 2))
    with pytest.raises(SourceError, match=r"^source 'src' window \(0, 2\]: column day "
                                          r"\(date32\[day\]\) cannot hold '2024-02-31' of the row "
                                          r"with id = 2: "):
        read(source(mysql_url, table, reader="generic"), Window(0, 2))


def test_the_notes_say_source_column_and_count() -> None:
    notes = StreamNotes("source 'legacy' window (0, 6]")
    notes.count_zero_dates("day", 1)
    notes.count_zero_dates("at", 2)
    notes.count_zero_dates("at", 1_000)
    notes.count_zero_dates("stamp", 0)
    assert notes.warnings() == [
        "source 'legacy' window (0, 6]: column at: 1,002 zero dates (0000-00-00, or a zero "
        "month or day) read as null",
        "source 'legacy' window (0, 6]: column day: 1 zero date (0000-00-00, or a zero month "
        "or day) read as null"]
    assert notes.metadata() == {"zero_dates_as_null": {"at": 1002, "day": 1}}
    assert StreamNotes().metadata() == {} and StreamNotes().warnings() == []


TIMES_DDL = """
CREATE TABLE `{t}` (id INT PRIMARY KEY, stamp TIMESTAMP(6) NULL, at DATETIME(6),
                    KEY (stamp))
"""
# written by a session in +05:30: a TIMESTAMP is stored as the UTC instant 5h30 earlier
TIMES_ROWS = ("(1, '2024-01-01 05:30:00.25', '2024-01-01 05:30:00.25'), "
              "(2, '2024-07-01 00:00:00', '2024-07-01 00:00:00'), "
              "(3, '1970-01-01 05:30:01', '1970-01-01 05:30:01'), "
              "(4, '2024-01-01 05:29:59.999999', NULL)")


def test_timestamps_are_the_utc_instants_a_session_in_another_zone_wrote(mysql_url: str) -> None:
    table = mariadb_table(mysql_url, TIMES_DDL, TIMES_ROWS, session=INDIA)
    fast, _ = read(source(mysql_url, table), Window(0, 4))
    generic, _ = read(source(mysql_url, table, reader="generic"), Window(0, 4))
    assert fast.equals(generic)
    assert fast.schema.field("stamp").type == pa.timestamp("us", "UTC")
    assert fast.to_pylist() == [
        {"id": 1, "stamp": datetime(2024, 1, 1, 0, 0, 0, 250000, tzinfo=UTC),
         "at": datetime(2024, 1, 1, 5, 30, 0, 250000)},  # DATETIME: as written, naive
        {"id": 2, "stamp": datetime(2024, 6, 30, 18, 30, tzinfo=UTC), "at": datetime(2024, 7, 1)},
        {"id": 3, "stamp": datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
         "at": datetime(1970, 1, 1, 5, 30, 1)},
        {"id": 4, "stamp": datetime(2023, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "at": None}]


@pytest.mark.parametrize("reader", ["auto", "generic"])
def test_a_timestamp_cursor_is_windowed_in_utc(mysql_url: str, reader: str) -> None:
    table = mariadb_table(mysql_url, TIMES_DDL, TIMES_ROWS, session=INDIA)
    src = source(mysql_url, table, cursor="stamp", reader=reader)
    assert src.cursor_range() == (datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
                                  datetime(2024, 6, 30, 18, 30, tzinfo=UTC))
    # (2023-12-31 23:59:59.999999, 2024-01-01 00:00:00.25] in UTC holds row 1 only: the
    # same instants in +05:30, and naive bounds (the keys of a naive cursor) read as UTC
    india = timezone(timedelta(hours=5, minutes=30))
    lo, hi = datetime(2023, 12, 31, 23, 59, 59, 999999), datetime(2024, 1, 1, 0, 0, 0, 250000)
    for window in (Window(lo.replace(tzinfo=UTC), hi.replace(tzinfo=UTC)),
                   Window(lo.replace(tzinfo=UTC).astimezone(india),
                          hi.replace(tzinfo=UTC).astimezone(india)),
                   Window(lo, hi)):
        rows, _ = read(source(mysql_url, table, cursor="stamp", reader=reader), window)
        assert rows.column("id").to_pylist() == [1], window


def test_every_connection_of_a_mysql_source_runs_in_utc(mysql_url: str) -> None:
    """The server's global zone is not changed here (other sessions share the server): the
    sessions are asked, and a session told +05:30 when it connects is UTC by the time it
    reads."""
    table = mariadb_table(mysql_url, TIMES_DDL, TIMES_ROWS, session=INDIA)
    generic = source(mysql_url, table, reader="generic")
    with generic.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT @@session.time_zone").scalar() == "+00:00"
    fast = source(mysql_url, table)
    reader = fast._fast_reader
    assert isinstance(reader, MySqlReader)
    answers = list(reader.driver_batches("SELECT @@session.time_zone AS tz"))
    assert answers[0].column(0).to_pylist() == ["+00:00"]

    told_india = sa.make_url(mysql_url).update_query_dict(
        {"init_command": "SET time_zone = '+05:30'"}).render_as_string(hide_password=False)
    india = source(told_india, table)
    assert india.reader().startswith("sqlalchemy")  # a connection option: the generic path
    rows, _ = read(india, Window(0, 1))
    assert rows.column("stamp").to_pylist() == [datetime(2024, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)]
    generic.dispose()
    fast.dispose()


def test_a_zero_date_cursor_is_named(mysql_url: str) -> None:
    table = mariadb_table(mysql_url, DATES_DDL, DATES_ROWS, session=LAX)
    with pytest.raises(SourceError, match=r"^source 'src': cursor column at holds a zero date "
                                          r"\('0000-00-00 00:00:00.000000'\), which no window "
                                          r"holds: make it NULL or a date$"):
        source(mysql_url, table, cursor="at").cursor_range()


@pytest.mark.slow
@pytest.mark.parametrize("reader", ["auto", "generic"])
def test_zero_dates_are_warned_and_in_the_source_partition_metadata(
        mysql_url: str, instance: DagsterInstance, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, reader: str) -> None:
    table = mariadb_table(mysql_url, DATES_DDL, DATES_ROWS.replace("'0000-01-01'", "NULL")
                          .replace("'0000-01-01 00:00:00'", "NULL"), session=LAX)
    monkeypatch.setenv("TEST_SOURCE_URL", mysql_url)
    spec = {"sources": {"readings": {"connection": {"env": "TEST_SOURCE_URL"}, "table": table,
                                     "cursor": "id", "primary_key": ["id"], "reader": reader}},
            "sinks": {"lake": {"source": "readings", "kind": "parquet",
                               "path": str(tmp_path / "lake"), "mode": "replace"}}}
    metadata = run_partition(build_definitions(parse_spec(spec)), instance, Window(0, 6))

    assert metadata["readings"]["zero_dates_as_null"].value == ZERO_COUNTS
    assert metadata["readings"]["dagster/row_count"].value == 6
    assert "zero_dates_as_null" not in metadata["lake"]
    (run,) = instance.get_runs()
    warnings = [e.user_message for e in instance.all_logs(run.run_id)
                if e.level == logging.WARNING and "zero date" in e.user_message]
    assert warnings == [
        "source 'readings' window (0, 6]: column at: 3 zero dates (0000-00-00, or a zero month "
        "or day) read as null",
        "source 'readings' window (0, 6]: column day: 3 zero dates (0000-00-00, or a zero "
        "month or day) read as null",
        "source 'readings' window (0, 6]: column stamp: 2 zero dates (0000-00-00, or a zero "
        "month or day) read as null",
        "source 'readings' window (0, 6]: column whole: 1 zero date (0000-00-00, or a zero "
        "month or day) read as null"]
    landed = {r["id"]: r for r in pq.read_table(tmp_path / "lake").to_pylist()}
    assert landed[1]["day"] is None and landed[1]["stamp"] is None
    assert landed[2]["day"] is None and landed[2]["stamp"] == datetime(2024, 3, 1, 12, 0, 0, 250000,
                                                                        tzinfo=UTC)
    assert landed[3]["day"] == date(2024, 2, 29)
