"""A target table declared as a SQLAlchemy Table: it wins over the data's types."""

from datetime import datetime, timezone
from decimal import Decimal

import pyarrow as pa
import pytest
import sqlalchemy as sa

from etl_assets.factory import build_definitions
from etl_assets.sinks.postgres.writer import PostgresSinkError, PostgresUpsertWriter
from etl_assets.spec import parse_spec
from etl_assets.transforms import TransformError
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sinks.postgres.declared_tables import readings

REFERENCE = "etl_assets_tests.sinks.postgres.declared_tables:readings"
UTC = timezone.utc
DATA = pa.schema([pa.field("id", pa.int32()), pa.field("code", pa.string()),
                  pa.field("amount", pa.float64()), pa.field("at", pa.timestamp("us", tz="UTC")),
                  pa.field("doc", pa.string())])


def declared_writer(pg: PgSchema, table: sa.Table = readings) -> PostgresUpsertWriter:
    # the data's own key (id) is what the source says; the declaration's (code) wins
    return PostgresUpsertWriter(pg.url, pg.table("target"), ["id"], "etl_stage_test",
                                declared_table=table, declared_reference=REFERENCE)


def batch(*rows: dict) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(list(rows), DATA)


def row(i: int, **changes: object) -> dict:
    return {"id": i, "code": f"S{i}", "amount": i + 0.125, "at": datetime(2024, 1, i, tzinfo=UTC),
            "doc": f'{{"i": {i}}}', **changes}


def column_types(pg: PgSchema) -> dict[str, tuple[str, str]]:
    return {name: (kind, nullable) for name, kind, nullable in pg.execute(
        "SELECT attname, format_type(atttypid, atttypmod), CASE WHEN attnotnull THEN 'not null' "
        "ELSE 'null' END FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
        (pg.table("target"),))}


def test_the_declared_table_wins_over_the_data_types(pg: PgSchema) -> None:
    with declared_writer(pg) as writer:
        writer.prepare(DATA)
        writer.write(batch(row(1), row(2)))
        writer.write(batch(row(2, id=20, amount=7.0)))  # same code: an update, by the declared key
    assert column_types(pg) == {
        "code": ("character varying(8)", "not null"), "id": ("bigint", "not null"),
        "amount": ("numeric(10,2)", "null"), "at": ("timestamp with time zone", "null"),
        "doc": ("jsonb", "null"), "note": ("text", "null")}
    assert pg.execute(f"SELECT code, id, amount, at, doc, note FROM {pg.table('target')} ORDER BY code") == [
        ("S1", 1, Decimal("1.13"), datetime(2024, 1, 1, tzinfo=UTC), {"i": 1}, None),
        ("S2", 20, Decimal("7.00"), datetime(2024, 1, 2, tzinfo=UTC), {"i": 2}, None)]
    assert pg.execute("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                      "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
                      (pg.table("target"),)) == [("code",)]


def test_a_value_that_does_not_fit_names_table_column_and_row(pg: PgSchema) -> None:
    with declared_writer(pg) as writer:
        writer.prepare(DATA)
        writer.write(batch(row(1), row(2)))
        with pytest.raises(PostgresSinkError) as error:
            writer.write(batch(row(3), row(4, code="TOO-LONG-CODE")))
        with pytest.raises(PostgresSinkError) as overflow:
            writer.write(batch(row(5, amount=1e12)))
    message = str(error.value)
    assert pg.table("target") in message and "column code" in message
    assert "TOO-LONG-CODE" in message and "character varying(8)" in message
    assert "column amount" in str(overflow.value) and "code='S5'" in str(overflow.value)
    assert pg.execute(f"SELECT code FROM {pg.table('target')} ORDER BY code") == [("S1",), ("S2",)]


def test_a_data_column_the_declaration_lacks_is_a_clear_error(pg: PgSchema) -> None:
    extra = DATA.append(pa.field("colour", pa.string()))
    with declared_writer(pg) as writer, pytest.raises(
            PostgresSinkError, match=rf"column\(s\) colour of the data are not in the declared table {REFERENCE}"):
        writer.prepare(extra)


def test_declared_columns_missing_from_the_table_are_added(pg: PgSchema) -> None:
    pg.execute(f"CREATE TABLE {pg.table('target')} (code varchar(8) PRIMARY KEY, id bigint NOT NULL, "
               f"amount numeric(10,2), at timestamptz, doc jsonb)")
    pg.execute(f"INSERT INTO {pg.table('target')} VALUES ('S9', 9, 1, NULL, NULL)")
    with declared_writer(pg) as writer:
        assert writer.prepare(DATA) == ["added column note text"]
        writer.write(batch(row(1)))
    assert pg.execute(f"SELECT code, note FROM {pg.table('target')} ORDER BY code") == [("S1", None), ("S9", None)]


def test_a_bad_reference_fails_when_the_definitions_load(pg: PgSchema) -> None:
    def spec(reference: str) -> dict:
        return {"sources": {"s": {"connection": {"url": "sqlite:///x.db"}, "table": "t", "cursor": "id"}},
                "sinks": {"s_pg": {"source": "s", "kind": "postgres", "connection": {"url": pg.url},
                                   "table": "t", "table_definition": reference}}}
    build_definitions(parse_spec(spec(REFERENCE)))
    with pytest.raises(TransformError, match=r"sink 's_pg': table_definition .*:nowhere: .* has no nowhere"):
        build_definitions(parse_spec(spec("etl_assets_tests.sinks.postgres.declared_tables:nowhere")))
    with pytest.raises(TransformError, match="is a str, not a SQLAlchemy Table"):
        build_definitions(parse_spec(spec("etl_assets_tests.sinks.postgres.declared_tables:not_a_table")))
