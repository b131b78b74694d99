"""A target table declared by the user as a SQLAlchemy ``Table`` with database-level types.

A declared table wins over the types derived from the data: the target is created with its
columns, types, nullability and primary key, and each batch is COPYed into a staging table of
those types, so a value that does not fit is refused with its row and column named. The
declared types are written out by PostgreSQL itself (through a temporary table), so they
compare exactly with what the catalog says of an existing table.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql

from etl_assets.sinks.declared_table import load_declared_table
from etl_assets.sinks.postgres.table import ColumnDef

__all__ = ["DeclaredTable", "compiled_type", "load_declared_table", "resolve_declared_table"]


@dataclass(frozen=True)
class DeclaredTable:
    """The columns (in order) and primary key a user declared for a target table."""

    reference: str
    columns: tuple[ColumnDef, ...]
    primary_key: tuple[str, ...]

    def column(self, name: str) -> ColumnDef | None:
        return next((c for c in self.columns if c.name == name), None)


def compiled_type(column: sa.Column[Any]) -> str:
    """The column's type as PostgreSQL DDL."""
    return column.type.compile(dialect=postgresql.dialect())


def resolve_declared_table(conn: psycopg.Connection[Any], table: sa.Table,
                           reference: str) -> DeclaredTable:
    """``table``'s columns with their types as PostgreSQL spells them. Raises ValueError naming
    the column whose type PostgreSQL does not know."""
    probe = sql.Identifier(f"etl_declared_{uuid.uuid4().hex[:12]}")
    columns = []
    for column in table.columns:
        try:
            columns.append(sql.SQL("{} {}").format(sql.Identifier(column.name),
                                                   sql.SQL(compiled_type(column))))
        except sa.exc.CompileError as exc:
            raise ValueError(f"{reference}: column {column.name}: {exc}") from None
    with conn.transaction():
        try:
            conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                probe, sql.SQL(", ").join(columns)))
        except psycopg.Error as exc:
            raise ValueError(f"{reference}: {exc.diag.message_primary or exc}") from None
        types = dict(conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (probe.as_string(conn),)).fetchall())
    key = tuple(c.name for c in table.primary_key.columns)
    return DeclaredTable(
        reference=reference,
        columns=tuple(ColumnDef(c.name, types[c.name],
                                     bool(c.nullable) and c.name not in key)
                      for c in table.columns),
        primary_key=key,
    )
