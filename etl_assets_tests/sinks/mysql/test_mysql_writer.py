"""The MySQL sink's writer against the real MariaDB: tables from the data's types, values
equal, newest wins in any order, declared tables, keyless modes, delete all, the watermark,
strict errors naming the row, LOCAL INFILE refused, a lost connection."""

from __future__ import annotations

import json
import math
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from etl_assets.arrow_types import logical_field
from etl_assets.batches import with_last
from etl_assets.retries import RetryPolicy
from etl_assets.sinks.comment_watermark import WatermarkTarget, stored_watermark
from etl_assets.sinks.mysql.errors import MysqlSinkError, RefusedRows
from etl_assets.sinks.mysql.writer import MysqlUpsertWriter
from etl_assets.watermark import Window
from etl_assets_tests.log_lines import LogLines
from etl_assets_tests.sinks.mysql.mariadb import MariaDb

UTC = timezone.utc
DAY = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))
NEXT = Window(DAY.hi, datetime(2024, 3, 3, tzinfo=UTC))
EVENTS = pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string()),
                    pa.field("updated_at", pa.timestamp("us", tz="UTC"))])


def events(ids: list[int], window: Window, tag: str = "v") -> pa.RecordBatch:
    assert isinstance(window.lo, datetime)
    return pa.RecordBatch.from_pylist(
        [{"id": i, "name": f"{tag}{i}", "updated_at": window.lo + timedelta(minutes=i)}
         for i in ids], EVENTS)


def write(maria: MariaDb, batches: list[pa.RecordBatch], *, key: list[str] | None = None,
          window: Window | None = DAY, log: LogLines | None = None,
          **options: object) -> int:
    """One partition's run: prepare, the batches, finish; the rows changed."""
    schema = batches[0].schema
    mark = WatermarkTarget("updated_at", window, window.key) if window else None
    changed = 0
    log = log or LogLines()
    with MysqlUpsertWriter(maria.url, maria.name, ["id"] if key is None else key,
                           "etl_stage_test", watermark=mark, log=log,
                           **options) as writer:  # type: ignore[arg-type]
        for action in writer.prepare(schema):
            log.info(action)
        for batch, final in with_last(batches):
            changed += writer.write(batch, final=final)
        writer.finish()
    return changed


def test_every_arrow_type_makes_a_column_and_lands_equal(maria: MariaDb) -> None:
    values = {
        "id": pa.array([1, 2, 3], pa.int64()),
        "flag": pa.array([True, False, None]),
        "i8": pa.array([-128, 127, None], pa.int8()),
        "u64": pa.array([2**64 - 1, 0, None], pa.uint64()),
        "f32": pa.array([0.1, -3.5, None], pa.float32()),
        "f64": pa.array([0.1 + 0.2, -21.5e-300, None]),
        "dec": pa.array([Decimal("0.0000000001"), Decimal("-12345678901234567890.5"), None],
                        pa.decimal128(38, 10)),
        "text": pa.array(["tab\there\\back\nline 'q' \"dq\" \\N", "hé € 😀", None]),
        "raw": pa.array([b"\x00\t\n\\\xff", b"", None], pa.binary()),
        "day": pa.array([date(2024, 2, 29), date(1000, 1, 1), None], pa.date32()),
        "at": pa.array([datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC),
                        datetime(1970, 1, 1, tzinfo=UTC), None], pa.timestamp("us", tz="UTC")),
        "naive": pa.array([datetime(2024, 1, 1, 23, 59, 59, 999999), datetime(9999, 12, 31),
                           None], pa.timestamp("us")),
        "clock": pa.array([time(23, 59, 59, 999999), time(0, 0), None], pa.time64("us")),
        "took": pa.array([-timedelta(hours=838, minutes=59, seconds=59),
                          timedelta(microseconds=1), None], pa.duration("us")),
        "tags": pa.array([[1, None], [], None], pa.list_(pa.int32())),
        "doc": pa.array(['{"a": [1, null]}', "[]", None]),
    }
    schema = pa.schema([pa.field(n, v.type) for n, v in values.items()]).set(
        15, logical_field("doc", "json"))
    write(maria, [pa.record_batch(list(values.values()), schema=schema)], window=None)

    types = maria.columns()
    assert types == {
        "id": "bigint(20)", "flag": "tinyint(1)", "i8": "tinyint(4)",
        "u64": "bigint(20) unsigned", "f32": "float", "f64": "double", "dec": "decimal(38,10)",
        "text": "longtext", "raw": "longblob", "day": "date", "at": "datetime(6)",
        "naive": "datetime(6)", "clock": "time(6)", "took": "time(6)",
        "tags": "longtext", "doc": "longtext"}  # MariaDB's JSON is longtext + json_valid
    got = maria.rows()
    first, second, third = got
    assert first[:3] == (1, 1, -128) and first[3] == 2**64 - 1
    assert math.isclose(first[4], 0.1, rel_tol=1e-7) and first[5] == 0.30000000000000004
    assert first[6] == Decimal("0.0000000001") and second[6] == Decimal("-12345678901234567890.5")
    assert first[7] == "tab\there\\back\nline 'q' \"dq\" \\N" and second[7] == "hé € 😀"
    assert first[8] == b"\x00\t\n\\\xff" and second[8] == b""
    assert first[9] == date(2024, 2, 29) and second[9] == date(1000, 1, 1)
    assert first[10] == datetime(2024, 1, 1, 12, 0, 0, 123456)  # UTC wall time
    assert first[11] == datetime(2024, 1, 1, 23, 59, 59, 999999)
    assert second[11] == datetime(9999, 12, 31)
    assert first[12] == timedelta(hours=23, minutes=59, seconds=59, microseconds=999999)
    assert first[13] == -timedelta(hours=838, minutes=59, seconds=59)
    assert second[13] == timedelta(microseconds=1)
    assert json.loads(first[14]) == [1, None] and json.loads(first[15]) == {"a": [1, None]}
    assert second[5] == -21.5e-300 and second[4] == -3.5
    assert third[0] == 3 and all(v is None for v in third[1:])


def test_a_rerun_changes_nothing_and_the_newest_row_wins_in_any_order(maria: MariaDb) -> None:
    assert write(maria, [events([1, 2], DAY), events([3], DAY)]) == 3
    assert write(maria, [events([1, 2], DAY), events([3], DAY)]) == 0  # the same rows again
    # a later window changes rows 1 and 2 ...
    assert write(maria, [events([1, 2, 4], NEXT, tag="new")], window=NEXT) == 3
    # ... and a re-run of the earlier one does not bring their old values back
    assert write(maria, [events([1, 2, 3], DAY, tag="old")]) == 1
    assert [(i, n) for i, n, _ in maria.rows()] == [(1, "new1"), (2, "new2"), (3, "old3"),
                                                    (4, "new4")]
    # conflict last_write: the last row written wins
    assert write(maria, [events([1], DAY, tag="last")], conflict="last_write") == 1
    assert maria.rows()[0][1] == "last1"


def test_rows_of_one_batch_with_one_key_keep_the_newest(maria: MariaDb) -> None:
    batch = pa.RecordBatch.from_pylist([
        {"id": 1, "name": "newer", "updated_at": datetime(2024, 3, 1, 5, tzinfo=UTC)},
        {"id": 1, "name": "older", "updated_at": datetime(2024, 3, 1, 1, tzinfo=UTC)}], EVENTS)
    write(maria, [batch])
    assert [r[1] for r in maria.rows()] == ["newer"]


def test_string_keys_differing_in_case_are_two_rows(maria: MariaDb) -> None:
    schema = pa.schema([pa.field("code", pa.string()), pa.field("updated_at",
                                                                 pa.timestamp("us", tz="UTC"))])
    at = datetime(2024, 3, 1, 1, tzinfo=UTC)
    write(maria, [pa.RecordBatch.from_pylist([{"code": "a", "updated_at": at},
                                              {"code": "A", "updated_at": at}], schema)],
          key=["code"])
    assert maria.columns()["code"] == "varchar(255)"
    assert sorted(c for c, _ in maria.rows(order="code")) == ["A", "a"]


def test_new_columns_are_added_and_existing_types_kept(maria: MariaDb) -> None:
    write(maria, [events([1], DAY)])
    wider = EVENTS.append(pa.field("score", pa.float64()))
    batch = pa.RecordBatch.from_pylist([{"id": 2, "name": "b", "score": 2.5,
                                         "updated_at": datetime(2024, 3, 1, 3, tzinfo=UTC)}],
                                       wider)
    log = LogLines()
    write(maria, [batch], log=log)
    assert list(maria.columns()) == ["id", "name", "updated_at", "score"]
    assert [r[3] for r in maria.rows()] == [None, 2.5]


def declared(name: str, code_length: int = 8) -> sa.Table:
    return sa.Table(name, sa.MetaData(),
                    sa.Column("id", sa.BigInteger, primary_key=True),
                    sa.Column("name", sa.String(code_length), nullable=False),
                    sa.Column("updated_at", mysql.DATETIME(fsp=6)),
                    sa.Column("amount", sa.Numeric(12, 2)))


def test_a_declared_table_wins_and_a_changed_declaration_alters_the_table(
        maria: MariaDb) -> None:
    write(maria, [events([1, 2], DAY)], declared_table=declared(maria.name))
    assert maria.columns() == {"id": "bigint(20)", "name": "varchar(8)",
                               "updated_at": "datetime(6)", "amount": "decimal(12,2)"}
    log = LogLines()
    write(maria, [events([3], DAY)], declared_table=declared(maria.name, 16), log=log)
    assert maria.columns()["name"] == "varchar(16)"
    assert [r[0] for r in maria.rows()] == [1, 2, 3]
    # a value the declared column cannot hold fails naming table, column and row
    long_name = pa.RecordBatch.from_pylist([{"id": 9, "name": "x" * 17,
                                             "updated_at": datetime(2024, 3, 1, tzinfo=UTC)}],
                                           EVENTS)
    with pytest.raises(RefusedRows, match=rf"{maria.database}\.{maria.name}: column name row "
                                          rf"id=9: Data (too long|truncated) for column .name. at row 1"):
        write(maria, [long_name], declared_table=declared(maria.name, 16))


def test_a_column_the_declaration_lacks_is_refused(maria: MariaDb) -> None:
    extra = EVENTS.append(pa.field("other", pa.int32()))
    batch = pa.RecordBatch.from_pylist([{"id": 1, "name": "a", "other": 1}], extra)
    with pytest.raises(MysqlSinkError, match=r"column\(s\) other of the data are not in the "
                                             r"declared table"):
        write(maria, [batch], declared_table=declared(maria.name))


@pytest.mark.parametrize(("batch_of", "message"), [
    (lambda: pa.RecordBatch.from_pylist([{"id": 1, "v": 1}, {"id": 2, "v": 300}],
                                        pa.schema([("id", pa.int64()), ("v", pa.int16())])),
     r"column v row id=2: Out of range value"),
    (lambda: pa.RecordBatch.from_pylist([{"id": 1, "v": math.nan}],
                                        pa.schema([("id", pa.int64()), ("v", pa.float64())])),
     r"column v row id=1: "),
])
def test_a_value_the_table_refuses_names_table_column_and_row(
        maria: MariaDb, batch_of: object, message: str) -> None:
    maria.query(f"CREATE TABLE `{maria.name}` (id BIGINT PRIMARY KEY, v TINYINT UNSIGNED)"
                if "Out of range" in message else
                f"CREATE TABLE `{maria.name}` (id BIGINT PRIMARY KEY, v DOUBLE)")
    batch = batch_of()  # type: ignore[operator]
    with pytest.raises(RefusedRows, match=rf"^{maria.database}\.{maria.name}: {message}"):
        write(maria, [batch], window=None)
    assert maria.rows() == []  # the batch's transaction rolled back


def test_invalid_json_and_a_missing_not_null_value_are_refused(maria: MariaDb) -> None:
    maria.query(f"CREATE TABLE `{maria.name}` (id BIGINT PRIMARY KEY, doc JSON, "
                f"must INT NOT NULL DEFAULT 0, name TEXT NOT NULL)")
    schema = pa.schema([("id", pa.int64()), ("doc", pa.string()), ("name", pa.string())])
    # MariaDB's JSON check names the column but no row
    with pytest.raises(RefusedRows, match=rf"^{maria.database}\.{maria.name}: column doc: "
                                          r"CONSTRAINT .* failed"):
        write(maria, [pa.RecordBatch.from_pylist(
            [{"id": 1, "doc": "{}", "name": "a"}, {"id": 2, "doc": "{no", "name": "b"}],
            schema)], window=None)
    with pytest.raises(RefusedRows, match=r"column name row id=3: .*NULL"):
        write(maria, [pa.RecordBatch.from_pylist([{"id": 3, "doc": "{}", "name": None}],
                                                 schema)], window=None)
    assert maria.rows() == []


def test_a_null_key_and_sub_microsecond_timestamps_are_refused(maria: MariaDb) -> None:
    with pytest.raises(MysqlSinkError, match=r"primary key column id is NULL in batch row 0"):
        write(maria, [pa.RecordBatch.from_pylist([{"id": None, "name": "x"}], EVENTS)])
    fine = pa.schema([("id", pa.int64()), ("at", pa.timestamp("ns"))])
    batch = pa.record_batch([pa.array([1]), pa.array([1_000_000_001], pa.timestamp("ns"))],
                            schema=fine)
    with pytest.raises(MysqlSinkError, match=r"column at: a value finer than a microsecond"):
        write(maria, [batch], window=None)


def test_without_a_key_a_rerun_replaces_the_window_and_append_appends(maria: MariaDb) -> None:
    log = LogLines()
    write(maria, [events([1, 2], DAY)], key=[], log=log)
    write(maria, [events([1, 2], DAY)], key=[])
    write(maria, [events([5], NEXT)], key=[], window=NEXT)
    assert sorted(r[0] for r in maria.rows()) == [1, 2, 5]
    assert any("replacing the slice updated_at" in line for line in log.lines)
    write(maria, [events([1], DAY)], key=[], replace_slice=False)
    assert sorted(r[0] for r in maria.rows()) == [1, 1, 2, 5]
    # a window without rows clears its slice
    write(maria, [events([], DAY)], key=[])
    assert sorted(r[0] for r in maria.rows()) == [5]


def test_delete_all_replaces_the_table_by_one_rename(maria: MariaDb) -> None:
    write(maria, [events([1, 2, 3], DAY)])
    maria.query(f"CREATE VIEW `{maria.name}_v` AS SELECT id FROM `{maria.name}`")
    stale = f"{maria.name}_etl_new_0badf00d"
    maria.query(f"CREATE TABLE `{stale}` LIKE `{maria.name}`")  # left by a killed run
    log = LogLines()
    write(maria, [events([7], DAY), events([8], DAY)], delete="all", log=log)
    assert [r[0] for r in maria.rows()] == [7, 8]
    assert [r[0] for r in maria.query(f"SELECT id FROM `{maria.name}_v` ORDER BY id")] == [7, 8]
    assert maria.tables() == [maria.name, f"{maria.name}_v"]
    assert any(f"dropped {stale}" in w for w in log.warnings)
    assert stored_watermark(maria.comment()) == DAY.hi
    # a run without rows leaves the table as it is
    write(maria, [events([], DAY)], delete="all")
    assert [r[0] for r in maria.rows()] == [7, 8]
    maria.query(f"DROP VIEW `{maria.name}_v`")


def test_the_watermark_advances_per_batch_over_contiguous_windows_only(maria: MariaDb) -> None:
    later = Window(NEXT.hi, datetime(2024, 3, 4, tzinfo=UTC))
    write(maria, [events([1], later)], window=later)
    assert stored_watermark(maria.comment()) == later.hi  # the first window written
    maria.query(f"ALTER TABLE `{maria.name}` COMMENT = ''")
    write(maria, [events([1], DAY)])
    assert stored_watermark(maria.comment()) == DAY.hi
    write(maria, [events([1], later)], window=later)  # a gap (NEXT is missing): stays
    assert stored_watermark(maria.comment()) == DAY.hi
    with MysqlUpsertWriter(maria.url, maria.name, ["id"], "etl_stage_test",
                           watermark=WatermarkTarget("updated_at", NEXT, NEXT.key)) as writer:
        writer.prepare(EVENTS)
        writer.write(events([1, 30], NEXT))  # not the last batch: just below its largest
        assert stored_watermark(maria.comment()) == NEXT.lo + timedelta(minutes=30,
                                                                        microseconds=-1)
        writer.write(events([40], NEXT), final=True)
        writer.finish()
    assert stored_watermark(maria.comment()) == NEXT.hi
    assert json.loads(maria.comment())["etl_assets"]["partition"] == NEXT.key


def test_a_refused_local_infile_loads_by_inserts_or_fails(maria: MariaDb) -> None:
    # A client that does not offer LOCAL INFILE (the URL's local_infile=0) is refused by the
    # server as one whose local_infile is OFF (MariaDB: error 4166), without changing the
    # server's settings under other sessions.
    refused = MariaDb(maria.url + "?local_infile=0")
    refused.name = maria.name
    log = LogLines()
    assert write(refused, [events([1, 2], DAY, tag="it's \\ "), events([3], DAY, "it's \\ ")],
                 log=log) == 3
    assert any("refuses LOAD DATA LOCAL INFILE; loading by multi-row INSERTs" in w
               for w in log.warnings)
    assert [r[1] for r in maria.rows()] == ["it's \\ 1", "it's \\ 2", "it's \\ 3"]
    with pytest.raises(MysqlSinkError, match=r"the server refuses LOAD DATA LOCAL INFILE "
                                             r".*local_infile_refused: insert"):
        write(refused, [events([4], DAY)], local_infile_refused="fail")
    out_of_range = pa.RecordBatch.from_pylist(
        [{"id": 1, "v": 1}, {"id": 2, "v": 1}, {"id": 3, "v": 999}],
        pa.schema([("id", pa.int64()), ("v", pa.int32())]))
    maria.query(f"CREATE TABLE `{maria.name}_small` (id INT PRIMARY KEY, v TINYINT)")
    with pytest.raises(RefusedRows, match=r"column v row id=3: Out of range"), \
            MysqlUpsertWriter(refused.url, f"{maria.name}_small", ["id"], "etl_stage_t",
                              log=LogLines()) as writer:
        writer.prepare(out_of_range.schema)
        writer.write(out_of_range)
    assert maria.rows(f"{maria.name}_small") == []


def test_a_connection_lost_between_batches_is_retried_on_a_new_one(maria: MariaDb) -> None:
    log = LogLines()
    with MysqlUpsertWriter(maria.url, maria.name, ["id"], "etl_stage_test", log=log,
                           retry=RetryPolicy(retries=2, delay_s=0),
                           watermark=WatermarkTarget("updated_at", DAY, DAY.key)) as writer:
        writer.prepare(EVENTS)
        writer.write(events([1, 2], DAY))
        maria.query(f"KILL {writer.conn.thread_id()}")
        writer.write(events([3], DAY), final=True)
        writer.finish()
    assert [r[0] for r in maria.rows()] == [1, 2, 3]
    assert any("retrying" in w.lower() or "attempt" in w.lower() for w in log.warnings), log.lines


def test_a_server_out_of_reach_is_one_line_naming_the_table(maria: MariaDb) -> None:
    with pytest.raises(MysqlSinkError, match=rf"^{maria.database}\.{maria.name}: connecting to "
                                             r"mysql\+pymysql://root@127.0.0.1:1/.* failed "
                                             r"after 1 attempt"):
        MysqlUpsertWriter(f"mysql+pymysql://root@127.0.0.1:1/{maria.database}", maria.name,
                          ["id"], "etl_stage_test").__enter__()
    with pytest.raises(MysqlSinkError, match=r"cannot connect to .*Access denied"):
        MysqlUpsertWriter(f"mysql+pymysql://nobody@127.0.0.1:3306/{maria.database}",
                          maria.name, ["id"], "etl_stage_test").__enter__()


def test_a_spec_with_a_connection_that_is_not_mysql_is_refused() -> None:
    from etl_assets.spec import SpecError, parse_spec

    def spec(connection: dict[str, object]) -> dict[str, object]:
        return {"sources": {"s": {"connection": {"env": "X"}, "table": "t", "cursor": "id"}},
                "sinks": {"my": {"source": "s", "kind": "mysql", "table": "t",
                                 "connection": connection}}}

    with pytest.raises(SpecError, match=r"sink 'my'.*postgresql:// is not a MySQL/MariaDB URL"):
        parse_spec(spec({"url": "postgresql://h/db"}))
    with pytest.raises(SpecError, match=r"sink 'my'.*the embedded server is PostgreSQL"):
        parse_spec(spec({"env": "X", "embedded": True}))
    assert parse_spec(spec({"url": "mariadb+pymysql://h/db"})).sinks["my"].kind == "mysql"


def test_a_killed_runs_load_file_is_removed_by_the_next_writer() -> None:
    import os
    import subprocess
    import tempfile

    from etl_assets.sinks.mysql.rows_text import LOAD_FILE_PREFIX, new_load_file

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid no process has now
    stale = os.path.join(tempfile.gettempdir(), f"{LOAD_FILE_PREFIX}{dead.pid}_x.tsv")
    live = os.path.join(tempfile.gettempdir(), f"{LOAD_FILE_PREFIX}{os.getpid()}_y.tsv")
    for path in (stale, live):
        with open(path, "wb") as file:
            file.write(b"1\t2\n")
    mine = new_load_file()
    try:
        assert not os.path.exists(stale)
        assert os.path.exists(live) and os.path.exists(mine)  # this process's stay
    finally:
        for path in (live, mine):
            os.unlink(path)
