"""Each database's fast reader gives exactly what the generic (SQLAlchemy) path gives: the same
schema, values, order and batches; tables it cannot carry exactly go to the generic path."""

import json
import math
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pymysql
import pytest
import sqlalchemy as sa

from etl_assets.arrow_types import logical_type_of
from etl_assets.batches import StreamNotes
from etl_assets.errors import EtlAssetsError
from etl_assets.retries import is_transient
from etl_assets.sinks.postgres.writer import PostgresUpsertWriter
from etl_assets.sources.sql.fast_reader import ReaderConnectionError, ReaderError
from etl_assets.sources.sql.parallel_reads import slices
from etl_assets.sources.sql.postgres_reader import PostgresReader
from etl_assets.sources.sql.source import SqlSource
from etl_assets.sources.sql.spec import SqlSourceSpec
from etl_assets.sources.sql.sqlite_reader import SqliteReader
from etl_assets.watermark import Window
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sinks.postgres.test_postgres import EVERY_TYPE, ROWS

UTC = timezone.utc

PG_DDL = """
CREATE TYPE {s}.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE {t} (
    id bigint PRIMARY KEY, n int, s smallint, code varchar(20), note text, fixed char(5),
    feeling {s}.mood, at timestamptz NOT NULL, local timestamp, day date, clock time,
    amount numeric(12, 3), wide numeric(45, 5), exact numeric, score float8, ratio real,
    flag boolean, doc jsonb, raw_doc json, ref uuid, raw bytea)
"""
PG_ROWS = """
INSERT INTO {t}
SELECT g, g * 1000, (g % 300)::smallint, 'C-' || g,
       CASE g % 6 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN E'line\\nbreak "quoted", comma'
                  WHEN 3 THEN 'NaN' WHEN 4 THEN '\\N' ELSE 'plain ' || g END,
       CASE WHEN g % 4 = 0 THEN NULL ELSE 'ab' END,
       (CASE g % 4 WHEN 0 THEN NULL WHEN 1 THEN 'sad' ELSE 'happy' END)::{s}.mood,
       timestamptz '2024-05-01 00:00:00+02' + make_interval(secs => g * 7.123457),
       CASE WHEN g % 5 = 0 THEN NULL ELSE timestamp '1999-12-31 23:59:59.999999' + make_interval(days => g) END,
       CASE WHEN g % 4 = 0 THEN NULL ELSE date '0001-01-01' + g * 1000 END,
       time '00:00:00.000001' + make_interval(mins => g),
       CASE WHEN g % 3 = 0 THEN NULL ELSE (g * -1.001)::numeric(12, 3) END,
       CASE WHEN g % 3 = 0 THEN NULL ELSE (g::numeric * 1e35 + 0.12345)::numeric(45, 5) END,
       CASE g % 5 WHEN 0 THEN NULL WHEN 1 THEN 1e40 + g WHEN 2 THEN 'NaN' ELSE g / 3.0 END,
       CASE g % 7 WHEN 0 THEN 'NaN'::float8 WHEN 1 THEN 'Infinity' WHEN 2 THEN '-Infinity'
                  WHEN 3 THEN NULL ELSE g * 0.1 END,
       (g * 0.1)::real, CASE WHEN g % 3 = 0 THEN NULL ELSE g % 2 = 0 END,
       CASE WHEN g % 9 = 0 THEN NULL ELSE jsonb_build_object('g', g, 'text', E'a\\nb "c"') END,
       json_build_object('g', g), md5(g::text)::uuid,
       CASE WHEN g % 10 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END
FROM generate_series(1, {n}) AS g
"""


def source(url: str, table: str, cursor: str = "id", **fields: object) -> SqlSource:
    spec = SqlSourceSpec(connection={"url": "sqlite://"}, table=table, cursor=cursor,
                         **fields)  # type: ignore[arg-type]
    return SqlSource("src", spec, url)


def same(a: object, b: object) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a)
                      and math.isnan(b))


def fast_and_generic(url: str, table: str, window: Window, expected_reader: str,
                     **fields: object) -> tuple[list[pa.RecordBatch], list[pa.RecordBatch]]:
    """The window read by the fast reader and by the generic path: same schema, same batches,
    same values."""
    fast_source = source(url, table, **fields)
    generic = source(url, table, reader="generic", **fields)
    try:
        assert fast_source.reader() == expected_reader
        assert generic.reader() == "sqlalchemy (reader: generic)"
        fast, slow = list(fast_source.extract(window)), list(generic.extract(window))
    finally:
        fast_source.dispose()
        generic.dispose()
    assert [b.num_rows for b in fast] == [b.num_rows for b in slow]
    assert all(b.schema.equals(fast_source.schema, check_metadata=True) for b in fast)
    fast_rows = pa.Table.from_batches(fast, fast_source.schema).to_pylist()
    slow_rows = pa.Table.from_batches(slow, generic.schema).to_pylist()
    for got, expected in zip(fast_rows, slow_rows, strict=True):
        for column, value in expected.items():
            assert same(got[column], value), (column, got[column], value)
    return fast, slow


# PostgreSQL: ADBC


def test_postgres_fast_reader_equals_the_generic_path(pg: PgSchema) -> None:
    table = pg.table("wide_types")
    pg.execute(PG_DDL.format(s=f'"{pg.name}"', t=table))
    pg.execute(PG_ROWS.format(s=f'"{pg.name}"', t=table, n=1_000))
    window = Window(datetime(2024, 4, 30, 22, 0, 30, tzinfo=UTC), datetime(2024, 5, 1, 1, tzinfo=UTC))
    fast, _ = fast_and_generic(pg.url, table, window, "adbc-postgresql", cursor="at",
                               chunk_rows=300)
    assert [b.num_rows for b in fast] == [300, 300, 300, 96]  # ids 5..1000
    rows = pa.Table.from_batches(fast).to_pylist()
    schema = fast[0].schema
    assert schema.field("amount").type == pa.decimal128(12, 3)
    assert schema.field("wide").type == pa.decimal256(45, 5)
    by_id = {r["id"]: r for r in rows}
    assert by_id[7]["wide"] == Decimal("700000000000000000000000000000000000.12345")
    assert by_id[6]["exact"] == "10000000000000000000000000000000000000006"  # beyond 38 digits
    assert by_id[7]["exact"] == "NaN"
    assert by_id[6]["fixed"] == "ab   " and by_id[5]["feeling"] == "sad"
    assert by_id[8]["note"] == 'line\nbreak "quoted", comma' and by_id[9]["note"] == "NaN"
    assert by_id[11]["raw"] == bytes.fromhex("6512bd43d9caa6e02c990b0a82652dca")
    assert json.loads(by_id[5]["doc"]) == {"g": 5, "text": 'a\nb "c"'}


def test_postgres_every_type_the_sink_writes_reads_back_equal(pg: PgSchema) -> None:
    """The sink's every-type rows (but the array and the interval, which the fast reader
    leaves to the generic path) written to PostgreSQL and read back by the fast reader."""
    schema = pa.schema([f for f in EVERY_TYPE if f.name not in ("tags", "took")])
    rows = [{k: v for k, v in row.items() if k in schema.names} for row in ROWS]
    with PostgresUpsertWriter(pg.url, pg.table("every"), ["id"], "etl_stage_test") as writer:
        writer.prepare(schema)
        writer.write(pa.RecordBatch.from_pylist(rows, schema))
    fast, _ = fast_and_generic(pg.url, pg.table("every"), Window(0, 3), "adbc-postgresql")
    got = pa.Table.from_batches(fast).to_pylist()
    for read, written in zip(got, rows, strict=True):
        for column, value in written.items():
            if column == "doc" and value is not None:
                assert json.loads(read[column]) == json.loads(value)
            elif column == "exact" and value == "-0":
                assert read[column] == "0"  # PostgreSQL's numeric has no negative zero
            else:
                assert same(read[column], value), (column, read[column], value)


def test_a_postgres_table_with_an_interval_takes_the_generic_path(pg: PgSchema) -> None:
    table = pg.table("spans")
    pg.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, took interval)")
    pg.execute(f"INSERT INTO {table} VALUES (1, '1 day'), (2, NULL)")
    src = source(pg.url, table)
    assert src.reader() == "sqlalchemy (adbc-postgresql cannot carry column took (INTERVAL) exactly)"
    rows = pa.Table.from_batches(list(src.extract(Window(0, 2)))).to_pylist()
    assert rows == [{"id": 1, "took": timedelta(days=1)}, {"id": 2, "took": None}]


def test_postgres_arrays_of_one_dimension_equal_the_generic_path(pg: PgSchema) -> None:
    table = pg.table("lists")
    pg.execute(f'CREATE TABLE {table} (id int PRIMARY KEY, tags text[], "it\'s" int[], '
               f"names varchar(8)[], ats timestamptz[], flags bool[], refs uuid[])")
    pg.execute(f"INSERT INTO {table} VALUES (1, ARRAY['a', NULL, 'b\"c'], '{{1,NULL}}', '{{x}}', "
               f"ARRAY['2024-01-01 00:00+02'::timestamptz], '{{t,f}}', NULL), "
               f"(2, '{{}}', NULL, NULL, NULL, NULL, NULL), (3, NULL, '{{}}', '{{}}', '{{}}', '{{}}', NULL)")
    src = source(pg.url, table)
    assert src.reader() == "sqlalchemy (adbc-postgresql cannot carry column refs (UUID[]) exactly)"
    pg.execute(f"ALTER TABLE {table} DROP COLUMN refs")
    fast, _ = fast_and_generic(pg.url, table, Window(0, 3), "adbc-postgresql")
    rows = pa.Table.from_batches(fast).to_pylist()
    assert rows[0]["tags"] == ["a", None, 'b"c'] and rows[0]["it's"] == [1, None]
    assert rows[0]["ats"] == [datetime(2023, 12, 31, 22, tzinfo=UTC)]
    assert rows[1]["tags"] == [] and rows[2]["tags"] is None


def test_a_multidimensional_array_fails_naming_the_column(pg: PgSchema) -> None:
    """The driver would flatten it (and the list type cannot hold it): the read fails."""
    table = pg.table("grid")
    pg.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, cells int[])")
    pg.execute(f"INSERT INTO {table} VALUES (1, '{{1,2}}'), (2, '{{{{1,2}},{{3,4}}}}')")
    src = source(pg.url, table)
    assert src.reader() == "adbc-postgresql"
    assert pa.Table.from_batches(list(src.extract(Window(0, 1)))).to_pylist() == [
        {"id": 1, "cells": [1, 2]}]
    with pytest.raises(ReaderError, match=r"source 'src' window \(0, 2\] \(reader adbc-postgresql\): "
                                          r".*column cells holds a multidimensional array"):
        list(src.extract(Window(0, 2)))


# MySQL / MariaDB: connectorx

MARIADB_DDL = """
CREATE TABLE `{t}` (
    id BIGINT PRIMARY KEY, at DATETIME(6) NOT NULL, stamp TIMESTAMP(6) NULL,
    huge DECIMAL(65, 30), money DECIMAL(12, 3), unsigned_big BIGINT UNSIGNED, small TINYINT,
    flag TINYINT(1), ratio FLOAT, score DOUBLE, day DATE, code VARCHAR(20), note TEXT,
    fixed CHAR(4), choice ENUM('a', 'b'), doc JSON, raw VARBINARY(16), blob_ BLOB)
"""
MARIADB_ROW = ("(1, '2024-01-01 12:00:00.123456', '2024-01-01 12:00:00.5', "
               "12345678901234567890123456789012345.123456789012345678901234567890, "
               "-123456789.125, 18446744073709551615, -128, 1, 1.5, 21.5, '2024-02-29', "
               "'quote \" comma ,', 'hé €', 'ab', 'b', '{\"k\": [1, null]}', x'00ff', x'')")


def mariadb_table(url: str, ddl: str, rows: str, session: str = "time_zone = '+00:00'") -> str:
    """A new table of ``ddl`` holding ``rows``, written by a session with the settings
    ``session`` (UTC by default: TIMESTAMP values are written as the UTC they spell)."""
    name = f"t_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"SET SESSION {session}")
        conn.exec_driver_sql(ddl.format(t=name))
        if rows:
            conn.exec_driver_sql(f"INSERT INTO `{name}` VALUES {rows}")
    engine.dispose()
    return name


def test_mariadb_fast_reader_carries_every_type_exactly(mysql_url: str) -> None:
    nulls = "(2, '2024-01-02 00:00:00', " + ", ".join(["NULL"] * 16) + ")"
    table = mariadb_table(mysql_url, MARIADB_DDL, f"{MARIADB_ROW}, {nulls}")
    src = source(mysql_url, table, cursor="at")
    assert src.reader() == "connectorx-mysql"
    batches = list(src.extract(Window(datetime(2024, 1, 1), datetime(2024, 1, 3))))
    first, second = pa.Table.from_batches(batches).to_pylist()
    assert first == {
        "id": 1, "at": datetime(2024, 1, 1, 12, 0, 0, 123456),
        "stamp": datetime(2024, 1, 1, 12, 0, 0, 500000, tzinfo=UTC),
        "huge": Decimal("12345678901234567890123456789012345.123456789012345678901234567890"),
        "money": Decimal("-123456789.125"), "unsigned_big": 2**64 - 1, "small": -128,
        "flag": 1, "ratio": 1.5, "score": 21.5, "day": date(2024, 2, 29),
        "code": 'quote " comma ,', "note": "hé €", "fixed": "ab", "choice": "b",
        "doc": first["doc"], "raw": b"\x00\xff", "blob_": b""}
    assert json.loads(first["doc"]) == {"k": [1, None]}
    assert second["at"] == datetime(2024, 1, 2)
    assert all(value is None for key, value in second.items() if key not in ("id", "at"))
    assert batches[0].schema.field("huge").type == pa.decimal256(65, 30)
    assert batches[0].schema.field("unsigned_big").type == pa.uint64()
    assert batches[0].schema.field("stamp").type == pa.timestamp("us", tz="UTC")
    assert batches[0].schema.field("at").type == pa.timestamp("us")  # DATETIME: naive


def test_mariadb_fast_reader_equals_the_generic_path(mysql_url: str) -> None:
    rows = ", ".join(MARIADB_ROW.replace("(1, '2024-01-01 12", f"({i}, '2024-01-{i:02d} 12")
                     .replace("21.5", f"{i} / 3.0e0") for i in range(1, 29))
    table = mariadb_table(mysql_url, MARIADB_DDL, rows)
    fast_and_generic(mysql_url, table, Window(0, 28), "connectorx-mysql", chunk_rows=10)


# SQLite: connectorx

SQLITE_DDL = """CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, at DATETIME, day DATE,
    flag BOOLEAN, score FLOAT, amount NUMERIC(12, 2), raw BLOB, doc JSON, n BIGINT)"""


def sqlite_table(tmp_path: Path, rows: list[tuple]) -> str:
    url = f"sqlite:///{tmp_path / 'a dir' / 'src.db'}"
    (tmp_path / "a dir").mkdir()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(SQLITE_DDL)
        conn.exec_driver_sql("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    engine.dispose()
    return url


def test_sqlite_fast_reader_equals_the_generic_path(tmp_path: Path) -> None:
    rows = [(i, None if i % 5 == 0 else f"n{i} é", f"2024-01-01 00:00:{i % 60:02d}.{i:06d}",
             "2024-02-29", i % 2, i / 8, None if i % 3 == 0 else i * 1.005, b"\x00" * (i % 3),
             json.dumps({"i": i}), 2**62 + i) for i in range(1, 2_500)]
    # the first 2,000 names are NULL: the reader types columns by declaration, not by value
    rows = [(r[0], None if r[0] <= 2_000 else r[1], *r[2:]) for r in rows]
    url = sqlite_table(tmp_path, rows)
    fast, _ = fast_and_generic(url, "t", Window(0, 2_400), "connectorx-sqlite", chunk_rows=1_000)
    table = pa.Table.from_batches(fast)
    assert table.column("name").to_pylist()[-2:] == ["n2399 é", None]
    assert table.column("at").to_pylist()[0] == datetime(2024, 1, 1, 0, 0, 1, 1)
    assert table.column("amount").to_pylist()[:2] == [Decimal("1.00"), Decimal("2.01")]


def test_an_in_memory_sqlite_database_takes_the_generic_path() -> None:
    # another connection to an in-memory database sees another, empty database
    table = sa.Table("t", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    schema = pa.schema([pa.field("id", pa.int64())])
    assert SqliteReader.plan("sqlite://", table, schema, "id") == (
        "connectorx-sqlite cannot take this connection's options")
    assert isinstance(SqliteReader.plan("sqlite:///x.db", table, schema, "id"),
                      SqliteReader)


# Every reader: batches, order, parallel reads


@pytest.fixture(params=["postgres", "mariadb", "sqlite"])
def ids_table(request: pytest.FixtureRequest, tmp_path: Path):
    """A factory of tables of ids 1..n (and a text column) on each reader's database."""
    kind = request.param

    def make(rows: int) -> tuple[str, str, str]:
        if kind == "postgres":
            pg = request.getfixturevalue("pg")
            table = pg.table(f"ids_{rows}")
            pg.execute(f"CREATE TABLE {table} AS SELECT g::bigint AS id, 'x' || g AS v "
                       f"FROM generate_series(1, {rows}) g")
            return pg.url, table, "adbc-postgresql"
        if kind == "mariadb":
            url = request.getfixturevalue("mysql_url")
            values = ", ".join(f"({g}, 'x{g}')" for g in range(1, rows + 1))
            table = mariadb_table(url, "CREATE TABLE `{t}` (id BIGINT PRIMARY KEY, v TEXT)", values)
            return url, table, "connectorx-mysql"
        url = f"sqlite:///{tmp_path / f'ids{rows}.db'}"
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE ids (id INTEGER PRIMARY KEY, v TEXT)")
            if rows:
                conn.exec_driver_sql("INSERT INTO ids VALUES (?, ?)",
                                     [(g, f"x{g}") for g in range(1, rows + 1)])
        engine.dispose()
        return url, "ids", "connectorx-sqlite"
    return make


@pytest.mark.parametrize("rows", [0, 1, 299, 300, 301])
def test_fast_readers_cut_batches_of_chunk_rows_in_cursor_order(ids_table, rows: int) -> None:
    url, table, reader = ids_table(rows)
    src = source(url, table, chunk_rows=100)
    assert src.reader() == reader
    batches = list(src.extract(Window(0, 1_000)))
    assert sum(b.num_rows for b in batches) == rows
    assert all(b.num_rows == 100 for b in batches[:-1])
    assert [i for b in batches for i in b.column("id").to_pylist()] == list(range(1, rows + 1))


def test_parallel_reads_give_the_same_rows_in_the_same_order(ids_table) -> None:
    url, table, reader = ids_table(2_000)
    src = source(url, table, chunk_rows=64, parallel_reads=3)
    assert src.reader() == f"{reader} (3 connections per window)"
    batches = list(src.extract(Window(10, 1_990)))
    assert [b.num_rows for b in batches[:-1]] == [64] * (len(batches) - 1)
    assert [i for b in batches for i in b.column("id").to_pylist()] == list(range(11, 1_991))
    assert [v for b in batches for v in b.column("v").to_pylist()][:2] == ["x11", "x12"]


def test_slices_cover_the_window_without_gaps() -> None:
    assert slices(0, 10, 3) == [(0, 4), (4, 8), (8, 10)]
    assert slices(0, 2, 5) == [(0, 1), (1, 2)]
    start = datetime(2024, 1, 1, tzinfo=UTC)
    parts = slices(start, start + timedelta(hours=1), 4)
    assert [p[0] for p in parts] == [start + timedelta(minutes=15 * i) for i in range(4)]
    assert parts[-1][1] == start + timedelta(hours=1)
    tiny = slices(start, start + timedelta(microseconds=2), 5)
    assert tiny == [(start, start + timedelta(microseconds=1)),
                    (start + timedelta(microseconds=1), start + timedelta(microseconds=2))]


def test_a_failing_slice_fails_the_parallel_read(pg: PgSchema) -> None:
    table = pg.table("bad")
    pg.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    pg.execute(f"INSERT INTO {table} SELECT g, 'x' FROM generate_series(1, 100) g")
    src = source(pg.url, table, chunk_rows=10, parallel_reads=2)
    src.schema  # noqa: B018 (reflected now, then the table goes)
    src.reader()
    pg.execute(f"DROP TABLE {table}")
    with pytest.raises(ReaderError, match=r"source 'src' window \(0, 100\] \(reader adbc-postgresql\): "
                                          r".*does not exist"):
        list(src.extract(Window(0, 100)))


# Errors


def test_a_lost_postgres_server_is_transient_and_names_the_reader(pg: PgSchema) -> None:
    table = pg.table("t")
    pg.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    src = source(pg.url, table)
    reader = PostgresReader.plan("postgresql+psycopg://postgres:pw@127.0.0.1:1/x",
                                 src.table, src.schema, "id")
    assert isinstance(reader, PostgresReader)
    with pytest.raises(ReaderConnectionError) as failed:
        list(reader.batches(0, 1, "source 'src' window (0, 1]", StreamNotes()))
    assert is_transient(failed.value)
    assert str(failed.value).startswith("reader adbc-postgresql: OperationalError: ")
    assert ":pw@" not in str(failed.value)


def test_a_reader_error_names_source_window_reader_and_masks_the_password(mysql_url: str) -> None:
    user, password = f"reader_{uuid.uuid4().hex[:6]}", "S3cret-Pw-9"
    table = mariadb_table(mysql_url, "CREATE TABLE `{t}` (id INT PRIMARY KEY)", "(1)")
    database = sa.make_url(mysql_url).database
    admin = pymysql.connect(host="127.0.0.1", user="root")
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        cur.execute(f"GRANT SELECT ON `{database}`.* TO '{user}'@'%'")
    try:
        src = source(f"mysql+pymysql://{user}:{password}@127.0.0.1:3306/{database}", table)
        assert src.reader() == "connectorx-mysql"  # reflected while the grant holds
        with admin.cursor() as cur:
            cur.execute(f"REVOKE SELECT ON `{database}`.* FROM '{user}'@'%'")
        with pytest.raises(ReaderError) as failed:
            list(src.extract(Window(0, 1)))
        message = str(failed.value)
        assert message.startswith("source 'src' window (0, 1] (reader connectorx-mysql): ")
        assert password not in message and "denied" in message
        assert not is_transient(failed.value)
        src.dispose()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER '{user}'@'%'")
        admin.close()


def test_a_value_the_driver_cannot_parse_fails_as_a_reader_error(tmp_path: Path) -> None:
    """connectorx raises a Rust panic (a BaseException): it arrives as our terminal error."""
    url = sqlite_table(tmp_path, [(1, "a", "2024-01-01 00:00:00.000000", "2024-01-01", 1, 1.0,
                                   1.0, b"", "{}", 1),
                                  (2, "b", "2024-01-01 00:00:00.000000", "29 Feb", 1, 1.0, 1.0,
                                   b"", "{}", 2)])
    src = source(url, "t")
    assert src.reader() == "connectorx-sqlite"
    with pytest.raises(ReaderError, match=r"^source 'src' window \(0, 5\] \(reader "
                                          r"connectorx-sqlite\): column day: PanicException: .*Parse"):
        list(src.extract(Window(0, 5)))


def test_a_value_the_column_type_cannot_hold_names_the_column_and_row(tmp_path: Path) -> None:
    rows = [(i, "a", "2024-01-01 00:00:00.000000", "2024-01-01", 1, 1.0,
             1e20 if i == 7 else 1.5, b"", "{}", 1) for i in range(1, 10)]
    src = source(sqlite_table(tmp_path, rows), "t")
    assert src.reader() == "connectorx-sqlite"
    with pytest.raises(ReaderError, match=r"^source 'src' window \(0, 9\] \(reader connectorx-sqlite\): "
                                          r"column amount \(decimal128\(12, 2\)\) cannot hold 1e\+20 of "
                                          r"the row with id = 7: "):
        list(src.extract(Window(0, 9)))
    generic = source(src.url, "t", reader="generic")
    with pytest.raises(Exception, match="column amount"):  # the generic path refuses it too
        list(generic.extract(Window(0, 9)))


def test_a_naive_cursor_window_reads_with_microseconds(pg: PgSchema) -> None:
    table = pg.table("naive")
    pg.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, at timestamp, clock time)")
    pg.execute(f"INSERT INTO {table} VALUES (1, '2024-01-01 00:00:00.000001', '01:02:03'), "
               f"(2, '2024-01-01 00:00:00.000002', NULL)")
    src = source(pg.url, table, cursor="at")
    rows = pa.Table.from_batches(list(src.extract(
        Window(datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))))).to_pylist()
    assert rows == [{"id": 2, "at": datetime(2024, 1, 1, 0, 0, 0, 2), "clock": None}]
    assert src.reader() == "adbc-postgresql"
    assert time(1, 2, 3) not in [r["clock"] for r in rows]


EVERY_MARIADB_TYPE = """
CREATE TABLE `{t}` (
    id INT PRIMARY KEY, flag BOOLEAN, tiny TINYINT(4), doc JSON, born YEAR, bits BIT(5),
    bit1 BIT(1), took TIME(6), tags SET('a', 'b'), kind ENUM('x', 'y'), `we``ird` INT,
    dbl DOUBLE, big BIGINT UNSIGNED)
"""


def test_every_mariadb_type_reads_the_same_on_both_paths(mysql_url: str) -> None:
    table = mariadb_table(mysql_url, EVERY_MARIADB_TYPE, (
        "(1, TRUE, 5, '{\"a\": [1, null]}', 2024, b'10101', b'1', '-838:59:59.000000', 'a,b', "
        "'y', 3, 21.5, 18446744073709551615), "
        "(2, FALSE, -128, 'null', 1901, b'0', b'0', '838:59:59.999999', '', 'x', NULL, -0.0, 0), "
        "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"))
    fast, _ = fast_and_generic(mysql_url, table, Window(0, 3), "connectorx-mysql")
    schema = fast[0].schema
    assert schema.field("flag").type == pa.bool_() and schema.field("tiny").type == pa.int32()
    assert logical_type_of(schema.field("doc")) == "json"  # MariaDB's LONGTEXT + json_valid
    assert schema.field("took").type == pa.duration("us") and schema.field("bits").type == pa.uint64()
    first, second, third = pa.Table.from_batches(fast).to_pylist()
    assert first == {"id": 1, "flag": True, "tiny": 5, "doc": '{"a": [1, null]}', "born": 2024,
                     "bits": 21, "bit1": 1, "took": -timedelta(hours=838, minutes=59, seconds=59),
                     "tags": "a,b", "kind": "y", "we`ird": 3, "dbl": 21.5, "big": 2**64 - 1}
    assert second["flag"] is False and second["took"] == timedelta(hours=838, minutes=59, seconds=59,
                                                                    microseconds=999_999)
    assert second["doc"] == "null" and second["tags"] == "" and second["born"] == 1901
    assert all(value is None for key, value in third.items() if key != "id")


@pytest.mark.parametrize("reader", ["auto", "generic"])
def test_a_tinyint1_other_than_0_or_1_fails_unless_read_as_an_integer(mysql_url: str, reader: str) -> None:
    table = mariadb_table(mysql_url, "CREATE TABLE `{t}` (id INT PRIMARY KEY, flag TINYINT(1))",
                          "(1, 1), (2, 7)")
    with pytest.raises(EtlAssetsError, match=r"column flag .*7"):
        list(source(mysql_url, table, reader=reader).extract(Window(0, 2)))
    integers = source(mysql_url, table, reader=reader, tinyint1="integer")
    assert pa.Table.from_batches(list(integers.extract(Window(0, 2)))).column("flag").to_pylist() == [1, 7]
