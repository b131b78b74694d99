"""Delete modes of the PostgreSQL sink: OFF keeps other rows; ALL replaces them, readers never
seeing an empty table."""

import threading

import pyarrow as pa
import pytest

from etl_assets.sinks.postgres.spec import PostgresSinkSpec
from etl_assets.sinks.postgres.writer import PostgresSinkError, PostgresUpsertWriter
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.log_lines import LogLines

SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("v", pa.string())])


def writer(pg: PgSchema, delete: str) -> PostgresUpsertWriter:
    return PostgresUpsertWriter(pg.url, pg.table("target"), ["id"], "etl_stage_test", delete=delete)


def rows(ids: range, tag: str) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([{"id": i, "v": f"{tag}{i}"} for i in ids], SCHEMA)


def old_table(pg: PgSchema, n: int = 1000) -> None:
    pg.execute(f"CREATE TABLE {pg.table('target')} (id bigint PRIMARY KEY, v text)")
    pg.execute(f"INSERT INTO {pg.table('target')} SELECT i, 'old' || i FROM generate_series(1, {n}) i")
    pg.execute(f"CREATE VIEW {pg.table('view')} AS SELECT id, v FROM {pg.table('target')} WHERE id % 2 = 0")


def tables(pg: PgSchema) -> list[tuple[str]]:
    return pg.execute("SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace "
                      "AND relkind = 'r' ORDER BY 1", (pg.name,))


def test_delete_all_replaces_the_rows_and_readers_never_see_an_empty_table(pg: PgSchema) -> None:
    old_table(pg)
    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        with pg.connect() as conn:
            while not stop.is_set():
                seen.append(conn.execute(f"SELECT count(*) FROM {pg.table('target')}").fetchone()[0])

    thread = threading.Thread(target=reader)
    thread.start()
    visible = []
    try:
        with writer(pg, "all") as w:
            actions = w.prepare(SCHEMA)
            assert any(a.startswith("delete all: loading into") for a in actions)
            for n in range(5):
                w.write(rows(range(5000 + n * 300, 5000 + (n + 1) * 300), "new"))
                visible.append(pg.execute(f"SELECT count(*) FROM {pg.table('target')}")[0][0])
            w.finish()
    finally:
        stop.set()
        thread.join()
    assert visible == [300, 600, 900, 1200, 1500]  # each batch visible once it commits
    assert seen and 0 not in seen
    assert set(seen) <= {1000, 300, 600, 900, 1200, 1500}
    assert pg.execute(f"SELECT count(*), min(id), max(id), min(v) FROM {pg.table('target')}") == [
        (1500, 5000, 6499, "new5000")]
    assert pg.execute(f"SELECT count(*) FROM {pg.table('view')}") == [(750,)]  # view on the new table
    assert tables(pg) == [("target",)]


def test_delete_all_resolves_duplicate_keys_in_a_batch_last_wins(pg: PgSchema) -> None:
    old_table(pg, 10)
    batch = pa.RecordBatch.from_pylist([{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 1, "v": "c"}],
                                       SCHEMA)
    with writer(pg, "all") as w:
        w.prepare(SCHEMA)
        w.write(batch)
    assert sorted(pg.execute(f"SELECT id, v FROM {pg.table('target')}")) == [(1, "c"), (2, "b")]


def test_delete_off_keeps_the_other_rows(pg: PgSchema) -> None:
    old_table(pg, 10)
    with writer(pg, "off") as w:
        w.prepare(SCHEMA)
        w.write(rows(range(5, 15), "new"))
    got = dict(pg.execute(f"SELECT id, v FROM {pg.table('target')}"))
    assert len(got) == 14 and got[1] == "old1" and got[5] == "new5" and got[14] == "new14"


def test_delete_all_without_rows_leaves_the_table_as_it_is(pg: PgSchema) -> None:
    old_table(pg, 10)
    with writer(pg, "all") as w:
        w.prepare(SCHEMA)
        w.finish()
    assert pg.execute(f"SELECT count(*) FROM {pg.table('target')}") == [(10,)]
    assert tables(pg) == [("target",)]


def test_delete_all_whose_first_batch_fails_keeps_the_old_rows(pg: PgSchema) -> None:
    old_table(pg, 10)
    bad = pa.RecordBatch.from_pylist([{"id": 1, "v": "a"}, {"id": None, "v": "b"}], SCHEMA)
    with pytest.raises(PostgresSinkError, match="primary key column id is NULL"), writer(pg, "all") as w:
        w.prepare(SCHEMA)
        w.write(bad)
    assert pg.execute(f"SELECT count(*), min(v) FROM {pg.table('target')}") == [(10, "old1")]
    assert tables(pg) == [("target",)]


def test_delete_mode_in_the_spec_defaults_to_off() -> None:
    base = {"kind": "postgres", "source": "s", "connection": {"url": "postgresql://h/db"}, "table": "t"}
    assert PostgresSinkSpec.model_validate(base).delete == "off"
    assert PostgresSinkSpec.model_validate({**base, "delete": "all"}).delete == "all"
    with pytest.raises(ValueError):
        PostgresSinkSpec.model_validate({**base, "delete": "some"})


def test_delete_all_on_a_table_without_a_key(pg: PgSchema) -> None:
    pg.execute(f"CREATE TABLE {pg.table('target')} (id bigint, v text)")
    pg.execute(f"INSERT INTO {pg.table('target')} VALUES (1, 'old'), (1, 'old')")
    with PostgresUpsertWriter(pg.url, pg.table("target"), [], "etl_stage_test", delete="all") as w:
        w.prepare(SCHEMA)
        w.write(rows(range(1, 3), "new"))
        w.write(rows(range(3, 4), "new"))
    assert sorted(pg.execute(f"SELECT id, v FROM {pg.table('target')}")) == [(1, "new1"), (2, "new2"), (3, "new3")]


@pytest.mark.slow
def test_a_sink_with_delete_all_holds_only_the_last_runs_rows(pg: PgSchema, instance, monkeypatch) -> None:
    from datetime import datetime, timezone

    from etl_assets.factory import build_definitions
    from etl_assets.spec import parse_spec
    from etl_assets.watermark import Window
    from etl_assets_tests.sample_tables import create_pg_readings
    from etl_assets_tests.test_factory import readings_spec, run_partition

    monkeypatch.setenv("TEST_SOURCE_URL", pg.url)
    monkeypatch.setenv("TEST_TARGET_URL", pg.url)
    source = create_pg_readings(pg, last=120)  # rows at 00:01 .. 02:00
    defs = build_definitions(parse_spec(readings_spec(pg, source, delete="all")))
    start = datetime(2024, 3, 1, tzinfo=timezone.utc)
    first = Window(start, start.replace(hour=1))
    run_partition(defs, instance, first)
    assert pg.execute(f"SELECT min(id), max(id), count(*) FROM {pg.table('readings_copy')}") == [(1, 60, 60)]
    run_partition(defs, instance, Window(first.hi, start.replace(hour=2)))
    assert pg.execute(f"SELECT min(id), max(id), count(*) FROM {pg.table('readings_copy')}") == [(61, 120, 60)]


def abandoned_build(pg: PgSchema) -> str:
    """A delete-all run that built its replacement and then lost its session without cleaning
    up (as when killed): the replacement's name."""
    w = writer(pg, "all")
    w.__enter__()
    w.prepare(SCHEMA)
    name = w._replace.swap.new_name
    assert w.conn is not None
    w.conn.close()  # the session ends; nothing drops the table
    return name


def test_the_next_run_drops_a_replacement_whose_builder_is_gone(pg: PgSchema) -> None:
    old_table(pg, 10)
    stale = abandoned_build(pg)
    pg.execute(f"INSERT INTO {pg.table(stale)} SELECT i, 'x' || i FROM generate_series(1, 20000) i")
    assert tables(pg) == sorted([("target",), (stale,)])
    log = LogLines()
    with PostgresUpsertWriter(pg.url, pg.table("target"), ["id"], "etl_stage_test", log=log) as w:
        w.prepare(SCHEMA)
        w.write(rows(range(1, 3), "new"))
    assert tables(pg) == [("target",)]
    dropped = [line for line in log.lines if "dropped" in line]
    assert len(dropped) == 1
    assert dropped[0].startswith(f"{pg.name}.target: dropped {stale} (")
    assert "kB" in dropped[0] or "MB" in dropped[0]


def test_a_live_replacement_is_left_alone_and_swapped_in(pg: PgSchema) -> None:
    old_table(pg, 10)
    with writer(pg, "all") as live:
        live.prepare(SCHEMA)  # building, holding the builder lock
        building = live._replace.swap.new_name
        with PostgresUpsertWriter(pg.url, pg.table("target"), ["id"], "etl_stage_other") as other:
            other.prepare(SCHEMA)
        assert (building,) in tables(pg)
        live.write(rows(range(100, 103), "new"))
    assert pg.execute(f"SELECT id FROM {pg.table('target')} ORDER BY id") == [(100,), (101,), (102,)]
    assert tables(pg) == [("target",)]


def test_a_builder_on_a_new_connection_holds_its_replacement_again(pg: PgSchema) -> None:
    import psycopg

    old_table(pg, 10)
    with writer(pg, "all") as live:
        live.prepare(SCHEMA)
        replace = live._replace
        assert live.conn is not None
        live.conn.close()  # the connection is lost
        live.conn = psycopg.connect(pg.url)
        assert replace.hold(live.conn)  # nobody took it for stale meanwhile
        with PostgresUpsertWriter(pg.url, pg.table("target"), ["id"], "etl_stage_other") as other:
            other.prepare(SCHEMA)  # held again: not dropped
        assert (replace.swap.new_name,) in tables(pg)

        live.conn.close()
        live.conn = psycopg.connect(pg.url)
        with PostgresUpsertWriter(pg.url, pg.table("target"), ["id"], "etl_stage_other") as other:
            other.prepare(SCHEMA)  # no builder alive at this moment: stale, dropped
        assert not replace.hold(live.conn)
        replace.pending = False  # nothing left to drop
        live._replace = None


def test_two_delete_all_runs_at_once_keep_the_views(pg: PgSchema) -> None:
    old_table(pg, 10)
    with writer(pg, "all") as first, PostgresUpsertWriter(
            pg.url, pg.table("target"), ["id"], "etl_stage_second", delete="all") as second:
        first.prepare(SCHEMA)
        second.prepare(SCHEMA)  # built off the table the first run is about to replace
        first.write(rows(range(1, 5), "a"))
        second.write(rows(range(1, 7), "b"))
    assert pg.execute(f"SELECT count(*), min(v) FROM {pg.table('target')}") == [(6, "b1")]
    assert pg.execute(f"SELECT count(*) FROM {pg.table('view')}") == [(3,)]  # ids 2, 4, 6
    assert tables(pg) == [("target",)]
