from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pytest

from etl_assets.arrow_types import logical_field
from etl_assets.batches import last_row_per_key
from etl_assets.sinks.postgres.writer import PostgresSinkError, PostgresUpsertWriter
from etl_assets.sinks.table_writer import staging_table_name
from etl_assets_tests.conftest import PgSchema

UTC = timezone.utc


def writer(pg: PgSchema, table: str = "target", key: tuple[str, ...] = ("id",)) -> PostgresUpsertWriter:
    return PostgresUpsertWriter(pg.url, pg.table(table), list(key), "etl_stage_test")


def write_all(pg: PgSchema, batches: list[pa.RecordBatch], **kwargs: object) -> int:
    with writer(pg, **kwargs) as w:  # type: ignore[arg-type]
        w.prepare(batches[0].schema)
        return sum(w.write(b) for b in batches)


EVERY_TYPE = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("name", pa.string()),
    pa.field("at", pa.timestamp("us", tz="UTC")),
    pa.field("local", pa.timestamp("us")),
    pa.field("day", pa.date32()),
    pa.field("clock", pa.time64("us")),
    pa.field("amount", pa.decimal128(12, 3)),
    logical_field("exact", "numeric"),
    pa.field("score", pa.float64()),
    pa.field("small", pa.int16()),
    pa.field("flag", pa.bool_()),
    logical_field("doc", "json"),
    logical_field("ref", "uuid"),
    pa.field("raw", pa.binary()),
    pa.field("tags", pa.list_(pa.string())),
    pa.field("took", pa.duration("us")),
])

ROWS = [
    {"id": 1, "name": 'quote " comma , newline \n backslash \\ tab \t', "at": datetime(2024, 1, 1, 12, tzinfo=UTC),
     "local": datetime(2024, 1, 1, 12, 0, 0, 123_456), "day": date(2024, 2, 29), "clock": time(23, 59, 59, 999_999),
     "amount": Decimal("-123456789.125"), "exact": "3.14159265358979323846264338327950288419716939937510",
     "score": float("nan"), "small": -32768, "flag": True, "doc": '{"a": [1, null, "x"], "ü": "€"}',
     "ref": "0cc175b9-c0f1-b6a8-31c3-99e269772661", "raw": b"\x00\xff\\x", "tags": ["a", None, 'b"c', "{d}"],
     "took": timedelta(days=1, microseconds=5)},
    {"id": 2, "name": "", "at": None, "local": None, "day": None, "clock": None, "amount": None,
     "exact": None, "score": float("-inf"), "small": None, "flag": None, "doc": None, "ref": None,
     "raw": None, "tags": [], "took": None},
    {"id": 3, "name": None, "at": datetime(1970, 1, 1, tzinfo=UTC), "local": datetime(1, 1, 1), "day": date(1, 1, 1),
     "clock": time(0), "amount": Decimal("0.001"), "exact": "-0", "score": 0.0, "small": 0, "flag": False,
     "doc": "null", "ref": None, "raw": b"", "tags": None, "took": timedelta(0)},
]


def test_every_type_round_trips_exactly(pg: PgSchema) -> None:
    batch = pa.RecordBatch.from_pylist(ROWS, EVERY_TYPE)
    assert write_all(pg, [batch]) == 3
    types = dict(pg.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = 'target'", (pg.name,)))
    assert types["at"] == "timestamp with time zone" and types["local"] == "timestamp without time zone"
    assert types["doc"] == "jsonb" and types["ref"] == "uuid" and types["exact"] == "numeric"
    assert types["tags"] == "ARRAY" and types["took"] == "interval" and types["small"] == "smallint"
    got = pg.execute(f"SELECT id, name, at, local, day, clock, amount, exact::text, score, small, "
                     f"flag, doc, ref::text, raw, tags, took FROM {pg.table('target')} ORDER BY id")
    first, second, third = got
    assert first[1] == ROWS[0]["name"] and second[1] == "" and third[1] is None
    assert first[2] == ROWS[0]["at"] and first[3] == ROWS[0]["local"]
    assert first[4:7] == (date(2024, 2, 29), time(23, 59, 59, 999_999), Decimal("-123456789.125"))
    assert first[7] == ROWS[0]["exact"]
    assert first[8] != first[8]  # NaN
    assert second[8] == float("-inf")
    assert first[11] == {"a": [1, None, "x"], "ü": "€"}
    assert first[12] == ROWS[0]["ref"] and bytes(first[13]) == b"\x00\xff\\x"
    assert first[14] == ["a", None, 'b"c', "{d}"] and second[14] == []
    assert first[15] == timedelta(days=1, microseconds=5)
    assert second[2:8] == (None,) * 6 and second[11] is None
    assert pg.execute(f"SELECT jsonb_typeof(doc) FROM {pg.table('target')} WHERE id = 3") == [
        ("null",)]  # a JSON null stays a JSON null, not SQL NULL
    assert third[3] == datetime(1, 1, 1) and bytes(third[13]) == b""


def test_zoned_timestamps_of_any_zone_and_unit_land_as_the_same_instant(pg: PgSchema) -> None:
    instants = [datetime(2024, 3, 31, 0, 30, 15, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), None]
    columns = {"berlin_us": pa.timestamp("us", tz="Europe/Berlin"), "india_ms": pa.timestamp("ms", tz="+05:30"),
               "utc_s": pa.timestamp("s", tz="UTC"), "la_ns": pa.timestamp("ns", tz="America/Los_Angeles")}
    batch = pa.RecordBatch.from_arrays(
        [pa.array([1, 2, 3], pa.int64())] + [pa.array(instants, pa.timestamp("us", tz="UTC")).cast(t) for t in columns.values()],
        names=["id", *columns])
    assert write_all(pg, [batch]) == 3
    got = pg.execute(f"SELECT {', '.join(columns)} FROM {pg.table('target')} ORDER BY id")
    assert [list(row) for row in got] == [[instant] * len(columns) for instant in instants]


def test_upsert_updates_changed_rows_and_leaves_the_rest(pg: PgSchema) -> None:
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("v", pa.string())])
    first = pa.RecordBatch.from_pylist([{"id": i, "v": f"v{i}"} for i in range(100)], schema)
    assert write_all(pg, [first]) == 100
    assert write_all(pg, [first]) == 0  # re-run: nothing rewritten
    change = pa.RecordBatch.from_pylist([{"id": 5, "v": "changed"}, {"id": 100, "v": "new"}], schema)
    assert write_all(pg, [change]) == 2
    rows = dict(pg.execute(f"SELECT id, v FROM {pg.table('target')}"))
    assert len(rows) == 101 and rows[5] == "changed" and rows[100] == "new" and rows[6] == "v6"


def test_duplicate_keys_in_a_batch_last_wins(pg: PgSchema) -> None:
    schema = pa.schema([pa.field("k1", pa.string()), pa.field("k2", pa.int32()),
                        pa.field("v", pa.int64())])
    batch = pa.RecordBatch.from_pylist([
        {"k1": "a", "k2": 1, "v": 1}, {"k1": "a", "k2": 2, "v": 2}, {"k1": "a", "k2": 1, "v": 3},
        {"k1": "b", "k2": 1, "v": 4}, {"k1": "a", "k2": 1, "v": 5}], schema)
    assert last_row_per_key(batch, ["k1", "k2"]).to_pylist() == [
        {"k1": "a", "k2": 2, "v": 2}, {"k1": "b", "k2": 1, "v": 4}, {"k1": "a", "k2": 1, "v": 5}]
    write_all(pg, [batch], key=("k1", "k2"))
    assert sorted(pg.execute(f"SELECT k1, k2, v FROM {pg.table('target')}")) == [
        ("a", 1, 5), ("a", 2, 2), ("b", 1, 4)]


def test_new_columns_are_added(pg: PgSchema) -> None:
    old = pa.RecordBatch.from_pylist([{"id": 1, "a": "x"}])
    write_all(pg, [old])
    new = pa.RecordBatch.from_pylist([{"id": 2, "a": "y", "b": 2.5}])
    with writer(pg) as w:
        assert w.prepare(new.schema) == ["added column b double precision"]
        w.write(new)
    assert sorted(pg.execute(f"SELECT id, a, b FROM {pg.table('target')}")) == [
        (1, "x", None), (2, "y", 2.5)]


def test_a_bad_value_names_table_column_and_row_and_keeps_earlier_batches(pg: PgSchema) -> None:
    pg.execute(f"CREATE TABLE {pg.table('target')} (id int PRIMARY KEY, n smallint)")
    good = pa.RecordBatch.from_pylist([{"id": 1, "n": 1}, {"id": 2, "n": 2}])
    bad = pa.RecordBatch.from_pylist([{"id": 3, "n": 3}, {"id": 4, "n": 70_000}])
    with writer(pg) as w:
        w.prepare(good.schema)
        w.write(good)
        with pytest.raises(PostgresSinkError) as error:
            w.write(bad)
    message = str(error.value)
    assert pg.table("target") in message and "column n" in message and "id=4" in message
    assert "out of range" in message
    assert sorted(pg.execute(f"SELECT id FROM {pg.table('target')}")) == [(1,), (2,)]


def test_null_key_is_rejected_with_the_row(pg: PgSchema) -> None:
    batch = pa.RecordBatch.from_pylist([{"id": 1, "v": "a"}, {"id": None, "v": "b"}])
    with pytest.raises(PostgresSinkError, match=r"primary key column id is NULL in batch row 1: .*v='b'"):
        write_all(pg, [batch])


def test_target_without_a_matching_key_is_a_clear_error(pg: PgSchema) -> None:
    pg.execute(f"CREATE TABLE {pg.table('target')} (id int, v text)")
    with writer(pg) as w, pytest.raises(PostgresSinkError, match=r"no primary key or unique index on exactly \(id\)"):
        w.prepare(pa.schema([pa.field("id", pa.int32()), pa.field("v", pa.string())]))


def test_identifiers_are_quoted(pg: PgSchema) -> None:
    batch = pa.RecordBatch.from_pylist([{"Order": 1, "select": "x", "with space": True}])
    write_all(pg, [batch], table='Mixed "Case"', key=("Order",))
    assert pg.execute(f'SELECT "Order", "select", "with space" FROM {pg.name}."Mixed ""Case"""') == [
        (1, "x", True)]


def test_staging_table_names_are_per_partition_and_run() -> None:
    a = staging_table_name("sink", "0..10", "run-a")
    assert a != staging_table_name("sink", "0..10", "run-b")
    assert a != staging_table_name("sink", "10..20", "run-a")
    assert len(a) <= 63


def test_an_empty_table_is_copied_into_directly_until_a_key_is_there_already(pg: PgSchema) -> None:
    """Two runs prepared on an empty table both COPY straight into it; the second meets the
    first's keys, rolls its batch back to a savepoint and upserts it (newest wins) instead."""
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("at", pa.int64()),
                        pa.field("v", pa.string())])
    first = PostgresUpsertWriter(pg.url, pg.table("target"), ["id"], "etl_stage_a", cursor_column="at")
    second = PostgresUpsertWriter(pg.url, pg.table("target"), ["id"], "etl_stage_b", cursor_column="at")
    with first, second:
        first.prepare(schema)
        second.prepare(schema)
        assert first._copy_directly and second._copy_directly
        older = pa.RecordBatch.from_pylist([{"id": i, "at": 1, "v": "old"} for i in range(100)], schema)
        newer = pa.RecordBatch.from_pylist([{"id": i, "at": 2, "v": "new"} for i in range(50, 150)], schema)
        assert second.write(newer) == 100  # copied in
        assert first.write(older) == 50  # ids 50..99 are newer in the table: only 0..49 land
        assert not first._copy_directly and second._copy_directly
        assert first.write(pa.RecordBatch.from_pylist([{"id": 200, "at": 1, "v": "late"}], schema)) == 1
    rows = dict(pg.execute(f"SELECT id, v FROM {pg.table('target')}"))
    assert len(rows) == 151 and rows[0] == "old" and rows[50] == "new" and rows[149] == "new"
    assert rows[200] == "late"
    with writer(pg) as again:  # a table with rows: upserted from the first batch
        again.prepare(schema)
        assert not again._copy_directly


def test_a_unique_index_the_keyless_sink_lacks_names_the_row(pg: PgSchema) -> None:
    pg.execute(f"CREATE TABLE {pg.table('target')} (id int, v text)")
    pg.execute(f"CREATE UNIQUE INDEX ON {pg.table('target')} (v)")
    batch = pa.RecordBatch.from_pylist([{"id": 1, "v": "a"}, {"id": 2, "v": "a"}])
    with writer(pg, key=()) as w:
        w.prepare(batch.schema)
        with pytest.raises(PostgresSinkError, match=r"row id=2, v='a': duplicate key value"):
            w.write(batch)
