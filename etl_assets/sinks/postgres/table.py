"""A PostgreSQL table's shape (columns, types, nullability, primary key) as plain data.

Types are spelled as PostgreSQL's ``format_type`` prints them (``timestamp with time zone``,
``numeric(38,9)``, ``integer[]``), so a desired table compares exactly with the catalog's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from etl_assets.sinks.postgres.column_types import postgres_type
from etl_assets.table_names import TableName

# postgres_type's short spellings -> format_type's.
_FORMAT_TYPE = {
    "timestamptz": "timestamp with time zone",
    "timestamp": "timestamp without time zone",
    "time": "time without time zone",
    "timetz": "time with time zone",
}


@dataclass(frozen=True)
class ColumnDef:
    """One column: ``type`` as format_type prints it."""

    name: str
    type: str
    nullable: bool = True


@dataclass(frozen=True)
class TableDef:
    """A table's columns (in order) and primary key (empty: none)."""

    schema: str
    name: str
    columns: tuple[ColumnDef, ...]
    primary_key: tuple[str, ...]

    @property
    def display(self) -> str:
        return TableName(self.schema, self.name).display

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def column(self, name: str) -> ColumnDef | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


def format_type_name(type_text: str) -> str:
    """``type_text`` (as postgres_type writes it) as format_type prints it."""
    base, brackets = type_text, ""
    while base.endswith("[]"):
        base, brackets = base[:-2], brackets + "[]"
    return _FORMAT_TYPE.get(base, base) + brackets


def table_from_arrow(schema: str, name: str, arrow_schema: pa.Schema,
                     primary_key: tuple[str, ...] | list[str]) -> TableDef:
    """The table that holds ``arrow_schema``'s columns; primary key columns are NOT NULL."""
    key = tuple(primary_key)
    return TableDef(schema, name, tuple(
        ColumnDef(f.name, format_type_name(postgres_type(f)), f.name not in key)
        for f in arrow_schema), key)


def existing_table(conn: psycopg.Connection[Any], schema: str, name: str) -> TableDef | None:
    """The table ``schema.name`` as the catalog describes it, or None when there is none."""
    qualified = sql.Identifier(schema, name).as_string(conn)
    row = conn.execute("SELECT to_regclass(%s)::oid", (qualified,)).fetchone()
    if row is None or row[0] is None:
        return None
    oid = row[0]
    columns = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod), NOT attnotnull FROM pg_attribute "
        "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (oid,)).fetchall()
    key = conn.execute(
        "SELECT a.attname FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
        "JOIN pg_attribute a ON a.attnum = k.attnum "
        "WHERE i.indrelid = %s AND i.indisprimary AND a.attrelid = i.indrelid ORDER BY k.n",
        (oid,)).fetchall()
    return TableDef(schema, name,
                    tuple(ColumnDef(n, t, bool(nullable)) for n, t, nullable in columns),
                    tuple(k for (k,) in key))
