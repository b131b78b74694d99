"""Migrations of a live PostgreSQL table: in place where possible, else built beside and
swapped in, keeping grants, indexes and dependent views; readers keep running."""

import logging
import threading
import time
import uuid

import psycopg
import pytest

from etl_assets.sinks.postgres.errors import PostgresSinkError
from etl_assets.sinks.postgres.migrations import migrate
from etl_assets.sinks.postgres.table import ColumnDef, TableDef, existing_table
from etl_assets_tests.conftest import PgSchema

LOG = logging.getLogger("test_postgres_migrations")


def table(pg: PgSchema, *columns: ColumnDef, key: tuple[str, ...] = ("id",)) -> TableDef:
    return TableDef(pg.name, "target", columns, key)


def run(pg: PgSchema, desired: TableDef, **kwargs: object) -> list[str]:
    with pg.connect() as conn:
        return migrate(conn, desired, log=LOG, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def role(pg: PgSchema):
    name = f"reader_{uuid.uuid4().hex[:8]}"
    pg.execute(f'CREATE ROLE "{name}"')
    pg.execute(f'GRANT USAGE ON SCHEMA "{pg.name}" TO "{name}"')
    yield name
    pg.execute(f'DROP OWNED BY "{name}"')
    pg.execute(f'DROP ROLE "{name}"')


def test_missing_table_is_created_and_new_columns_added_in_place(pg: PgSchema) -> None:
    first = table(pg, ColumnDef("id", "integer", False), ColumnDef("a", "text"))
    assert run(pg, first) == [f"created table {pg.name}.target"]
    pg.execute(f"INSERT INTO {pg.table('target')} VALUES (1, 'x')")
    oid = pg.execute(f"SELECT '{pg.table('target')}'::regclass::oid")
    second = table(pg, *first.columns, ColumnDef("b", "double precision"))
    assert run(pg, second) == ["added column b double precision"]
    assert pg.execute(f"SELECT id, a, b FROM {pg.table('target')}") == [(1, "x", None)]
    assert pg.execute(f"SELECT '{pg.table('target')}'::regclass::oid") == oid  # same table
    assert run(pg, second) == []


def test_type_and_nullability_changes_keep_rows_grants_indexes_and_views(pg: PgSchema,
                                                                          role: str) -> None:
    t = pg.table("target")
    pg.execute(f"CREATE TABLE {t} (id integer PRIMARY KEY, name varchar(10) NOT NULL, n integer, "
               f"extra text)")
    pg.execute(f"INSERT INTO {t} SELECT i, 'n' || i, i * 2, 'e' FROM generate_series(1, 100) i")
    pg.execute(f"CREATE INDEX target_n_idx ON {t} (n)")
    pg.execute(f"CREATE UNIQUE INDEX target_name_idx ON {t} (lower(name))")
    pg.execute(f"COMMENT ON TABLE {t} IS 'watermark here'")
    pg.execute(f"COMMENT ON COLUMN {t}.n IS 'the n'")
    pg.execute(f"CREATE VIEW {pg.table('evens')} AS SELECT id, n FROM {t} WHERE n % 4 = 0")
    pg.execute(f"CREATE VIEW {pg.table('evens_count')} AS SELECT count(*) AS c FROM {pg.table('evens')}")
    pg.execute(f'GRANT SELECT, INSERT ON {t} TO "{role}"')
    pg.execute(f'GRANT SELECT ON {pg.table("evens")} TO "{role}"')
    desired = table(pg, ColumnDef("id", "bigint", False), ColumnDef("name", "text", True),
                    ColumnDef("n", "bigint", False))
    actions = run(pg, desired)
    assert len(actions) == 1 and actions[0].startswith(f"rebuilt {t}") and "100 rows copied" in actions[0]
    with pg.connect() as conn:
        got = existing_table(conn, pg.name, "target")
    assert got == TableDef(pg.name, "target", (
        ColumnDef("id", "bigint", False), ColumnDef("name", "text", True), ColumnDef("n", "bigint", False),
        ColumnDef("extra", "text", True)), ("id",))  # absent from desired: kept
    assert pg.execute(f"SELECT count(*), sum(n), min(name), max(extra) FROM {t}") == [(100, 10100, "n1", "e")]
    assert pg.execute(f"SELECT obj_description('{t}'::regclass, 'pg_class')") == [("watermark here",)]
    assert pg.execute(f"SELECT col_description('{t}'::regclass, 3)") == [("the n",)]
    assert pg.execute("SELECT has_table_privilege(%s, %s, 'SELECT'), has_table_privilege(%s, %s, 'INSERT'), "
                      "has_table_privilege(%s, %s, 'UPDATE')", (role, t, role, t, role, t)) == [(True, True, False)]
    assert pg.execute("SELECT has_table_privilege(%s, %s, 'SELECT')", (role, pg.table("evens"))) == [(True,)]
    assert sorted(pg.execute("SELECT indexname, indexdef LIKE '%%UNIQUE%%' FROM pg_indexes "
                             "WHERE schemaname = %s AND tablename = 'target'", (pg.name,))) == [
        ("target_n_idx", False), ("target_name_idx", True), ("target_pkey", True)]
    assert pg.execute(f"SELECT count(*), max(n) FROM {pg.table('evens')}") == [(50, 200)]
    assert pg.execute(f"SELECT c FROM {pg.table('evens_count')}") == [(50,)]
    assert pg.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass "
                      "AND attname = 'n'", (pg.table("evens"),)) == [("bigint",)]
    pg.execute(f"INSERT INTO {t} VALUES (5000000000, NULL, 1)")  # bigint, nullable now


def test_primary_key_change(pg: PgSchema) -> None:
    t = pg.table("target")
    pg.execute(f"CREATE TABLE {t} (id integer PRIMARY KEY, code text, v text)")
    pg.execute(f"INSERT INTO {t} VALUES (1, 'a', 'x'), (2, 'b', 'y')")
    desired = table(pg, ColumnDef("id", "integer", True), ColumnDef("code", "text", False),
                    ColumnDef("v", "text"), key=("code", "id"))
    run(pg, desired)
    with pg.connect() as conn:
        got = existing_table(conn, pg.name, "target")
    assert got is not None and got.primary_key == ("code", "id")
    assert got.column("id") == ColumnDef("id", "integer", False)  # key columns are NOT NULL
    assert sorted(pg.execute(f"SELECT id, code, v FROM {t}")) == [(1, "a", "x"), (2, "b", "y")]


def test_a_change_the_data_does_not_allow_names_table_and_column(pg: PgSchema) -> None:
    t = pg.table("target")
    pg.execute(f"CREATE TABLE {t} (id integer PRIMARY KEY, v text)")
    pg.execute(f"INSERT INTO {t} VALUES (1, '12'), (2, 'twelve')")
    with pytest.raises(PostgresSinkError, match=rf"{pg.name}\.target: cannot change column v from text to integer"):
        run(pg, table(pg, ColumnDef("id", "integer", False), ColumnDef("v", "integer")))
    with pytest.raises(PostgresSinkError, match=rf"{pg.name}\.target: cannot migrate column v"):
        pg.execute(f"UPDATE {t} SET v = NULL WHERE id = 2")
        run(pg, table(pg, ColumnDef("id", "integer", False), ColumnDef("v", "text", False)))
    assert sorted(pg.execute(f"SELECT id, v FROM {t}")) == [(1, "12"), (2, None)]  # unchanged
    assert pg.execute("SELECT count(*) FROM pg_class WHERE relnamespace = %s::regnamespace "
                      "AND relkind = 'r'", (pg.name,)) == [(1,)]  # no replacement left behind


def test_a_concurrent_reader_waits_only_briefly_during_a_rebuild(pg: PgSchema) -> None:
    t = pg.table("target")
    pg.execute(f"CREATE TABLE {t} (id integer PRIMARY KEY, v integer, s text)")
    pg.execute(f"INSERT INTO {t} SELECT i, i, md5(i::text) FROM generate_series(1, 200000) i")
    pg.execute(f"CREATE INDEX ON {t} (v)")
    waits: list[float] = []
    counts: set[int] = set()
    stop = threading.Event()

    def reader() -> None:
        with pg.connect() as conn:
            while not stop.is_set():
                started = time.monotonic()
                counts.add(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                waits.append(time.monotonic() - started)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        time.sleep(0.2)
        started = time.monotonic()
        run(pg, table(pg, ColumnDef("id", "bigint", False), ColumnDef("v", "bigint"), ColumnDef("s", "text")))
        total = time.monotonic() - started
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    assert counts == {200000}
    assert len(waits) > 10
    assert max(waits) < total / 4, (max(waits), total)
    assert pg.execute(f"SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '{t}'::regclass "
                      "AND attname = 'v'") == [("bigint",)]


def test_a_blocking_session_is_terminated_after_the_delay_and_logged(pg: PgSchema,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    t = pg.table("target")
    pg.execute(f"CREATE TABLE {t} (id integer PRIMARY KEY, v integer)")
    pg.execute(f"INSERT INTO {t} VALUES (1, 1)")
    blocker = psycopg.connect(pg.url, application_name="long_reader")
    blocker.execute(f"SELECT count(*) FROM {t}").fetchone()  # transaction left open
    pid = blocker.info.backend_pid
    try:
        with caplog.at_level(logging.INFO, logger=LOG.name):
            run(pg, table(pg, ColumnDef("id", "integer", False), ColumnDef("v", "bigint")),
                terminate_blockers_after_s=1.0)
        terminated = [r.getMessage() for r in caplog.records if "terminated backend" in r.getMessage()]
        assert len(terminated) == 1 and f"pid {pid}" in terminated[0] and "long_reader" in terminated[0]
        with pytest.raises(psycopg.OperationalError):
            blocker.execute("SELECT 1")
        assert pg.execute(f"SELECT id, v FROM {t}") == [(1, 1)]
    finally:
        blocker.close()


def test_a_serial_column_keeps_its_sequence_and_default(pg: PgSchema) -> None:
    t = pg.table("target")
    pg.execute(f"CREATE TABLE {t} (id serial PRIMARY KEY, v integer)")
    pg.execute(f"INSERT INTO {t} (v) VALUES (1), (2)")
    run(pg, table(pg, ColumnDef("id", "integer", False), ColumnDef("v", "bigint")))
    pg.execute(f"INSERT INTO {t} (v) VALUES (3)")
    assert pg.execute(f"SELECT id, v FROM {t} ORDER BY id") == [(1, 1), (2, 2), (3, 3)]
    assert pg.execute("SELECT pg_get_serial_sequence(%s, 'id') IS NOT NULL", (t,)) == [(True,)]


def test_the_sink_migrates_a_table_to_its_declaration_and_keeps_a_view(pg: PgSchema) -> None:
    import pyarrow as pa

    from etl_assets.sinks.postgres.writer import PostgresUpsertWriter
    from etl_assets_tests.sinks.postgres.declared_tables import readings

    t = pg.table("target")
    pg.execute(f"CREATE TABLE {t} (code varchar(4) PRIMARY KEY, id integer, amount numeric(10,2), "
               f"at timestamptz, doc jsonb)")
    pg.execute(f"INSERT INTO {t} VALUES ('S9', 9, 1.5, NULL, NULL)")
    pg.execute(f"CREATE VIEW {pg.table('codes')} AS SELECT code, id FROM {t}")
    data = pa.schema([pa.field("id", pa.int64()), pa.field("code", pa.string())])
    with PostgresUpsertWriter(pg.url, t, ["id"], "etl_stage_test", declared_table=readings,
                              declared_reference="declared_tables:readings") as writer:
        actions = writer.prepare(data)
        writer.write(pa.RecordBatch.from_pylist([{"id": 5_000_000_000, "code": "LONGCODE"}], data))
    assert actions[0].startswith(f"rebuilt {t} (column code character varying(4) -> character varying(8); "
                                 "column id integer -> bigint; column id NULL -> NOT NULL; new column note text")
    assert pg.execute(f"SELECT code, id, amount FROM {pg.table('codes')} JOIN {t} USING (code, id) "
                      "ORDER BY code") == [("LONGCODE", 5_000_000_000, None), ("S9", 9, 1.5)]


def test_a_table_from_arrow_reads_back_equal_from_the_catalog(pg: PgSchema) -> None:
    import pyarrow as pa

    from etl_assets.arrow_types import logical_field
    from etl_assets.sinks.postgres.table import table_from_arrow

    arrow = pa.schema([pa.field("id", pa.int64()), pa.field("at", pa.timestamp("us", tz="UTC")),
                       pa.field("local", pa.timestamp("us")), pa.field("clock", pa.time64("us")),
                       pa.field("amount", pa.decimal128(38, 9)), logical_field("doc", "json"),
                       pa.field("tags", pa.list_(pa.string())), pa.field("took", pa.duration("us"))])
    desired = table_from_arrow(pg.name, "target", arrow, ["id"])
    assert desired.column("at") == ColumnDef("at", "timestamp with time zone")
    assert desired.column("id") == ColumnDef("id", "bigint", False)
    assert run(pg, desired) == [f"created table {pg.name}.target"]
    with pg.connect() as conn:
        assert existing_table(conn, pg.name, "target") == desired
    assert run(pg, desired) == []  # nothing to change
