"""A MySQL table's shape (columns, types, nullability, primary key) as plain data, and the DDL
that creates it or brings it to a desired shape.

Types are spelled as the server spells them (``SHOW COLUMNS`` / ``COLUMN_TYPE``: ``int(11)``
on MariaDB, ``int`` on MySQL 8), so a declared table, written out by the server itself through
a temporary probe table, compares exactly with an existing one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pymysql
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from etl_assets.sinks.mysql.column_types import TABLE_OPTIONS

Cursor = Any
"""A pymysql cursor."""


def quoted(*parts: str) -> str:
    """``parts`` as one dotted MySQL identifier, each part back-quoted."""
    return ".".join("`" + p.replace("`", "``") + "`" for p in parts)


@dataclass(frozen=True)
class ColumnDef:
    """One column: ``type`` as the server spells it (or as DDL gives it, for a new one)."""

    name: str
    type: str
    nullable: bool = True

    def ddl(self) -> str:
        return f"{quoted(self.name)} {self.type}{'' if self.nullable else ' NOT NULL'}"


@dataclass(frozen=True)
class TableDef:
    """A table's columns (in order) and primary key (empty: none)."""

    database: str
    name: str
    columns: tuple[ColumnDef, ...]
    primary_key: tuple[str, ...]

    @property
    def sql(self) -> str:
        return quoted(self.database, self.name)

    def column(self, name: str) -> ColumnDef | None:
        return next((c for c in self.columns if c.name.lower() == name.lower()), None)


def existing_table(cur: Cursor, database: str, name: str) -> TableDef | None:
    """``database.name`` as the server describes it, or None when there is no such table."""
    cur.execute("SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE = 'YES' FROM "
                "information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
                "ORDER BY ORDINAL_POSITION", (database, name))
    columns = cur.fetchall()
    if not columns:
        return None
    cur.execute("SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s "
                "AND TABLE_NAME = %s AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
                (database, name))
    key = tuple(k for (k,) in cur.fetchall())
    return TableDef(database, name, tuple(ColumnDef(n, t, bool(null)) for n, t, null in columns),
                    key)


def unique_keys(cur: Cursor, table: TableDef) -> list[set[str]]:
    """The column sets of the table's primary key and unique indexes (lower case)."""
    cur.execute("SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS WHERE "
                "TABLE_SCHEMA = %s AND TABLE_NAME = %s AND NON_UNIQUE = 0",
                (table.database, table.name))
    found: dict[str, set[str]] = {}
    for index, column in cur.fetchall():
        found.setdefault(index, set()).add(column.lower())
    return list(found.values())


def create_table(cur: Cursor, table: TableDef) -> None:
    """CREATE TABLE ``table`` (the database must exist)."""
    parts = [c.ddl() for c in table.columns]
    if table.primary_key:
        parts.append(f"PRIMARY KEY ({', '.join(quoted(k) for k in table.primary_key)})")
    cur.execute(f"CREATE TABLE {table.sql} ({', '.join(parts)}) {TABLE_OPTIONS}")


def alterations(existing: TableDef, desired: TableDef, *, declared: bool) -> list[str]:
    """The ALTER TABLE clauses that bring ``existing`` to ``desired``: new columns added
    (nullable unless declared NOT NULL); for a declared table also its types, nullability
    and primary key. Columns the table has beyond ``desired`` are kept."""
    clauses = []
    for column in desired.columns:
        old = existing.column(column.name)
        if old is None:
            added = column if declared else ColumnDef(column.name, column.type)
            clauses.append(f"ADD COLUMN {added.ddl()}")
        elif declared and (old.type.lower() != column.type.lower()
                           or old.nullable != column.nullable):
            clauses.append(f"MODIFY COLUMN {column.ddl()}")
    if declared and desired.primary_key and [k.lower() for k in desired.primary_key] != [
            k.lower() for k in existing.primary_key]:
        if existing.primary_key:
            clauses.append("DROP PRIMARY KEY")
        clauses.append(f"ADD PRIMARY KEY ({', '.join(quoted(k) for k in desired.primary_key)})")
    return clauses


def compiled_type(column: sa.Column[Any]) -> str:
    """The column's type as MySQL DDL."""
    return str(column.type.compile(dialect=mysql.dialect()))


def declared_columns(cur: Cursor, table: sa.Table, reference: str) -> tuple[ColumnDef, ...]:
    """``table``'s columns with their types as the server spells them (through a temporary
    probe table). Raises ValueError naming the column or type the server refuses."""
    key = {c.name for c in table.primary_key.columns}
    parts = []
    for column in table.columns:
        try:
            parts.append(f"{quoted(column.name)} {compiled_type(column)}")
        except sa.exc.CompileError as exc:
            raise ValueError(f"{reference}: column {column.name}: {exc}") from None
    probe = quoted(f"etl_declared_{uuid.uuid4().hex[:12]}")
    try:
        cur.execute(f"CREATE TEMPORARY TABLE {probe} ({', '.join(parts)}) {TABLE_OPTIONS}")
    except pymysql.MySQLError as exc:
        raise ValueError(f"{reference}: {exc.args[-1]}") from None
    try:
        cur.execute(f"SHOW COLUMNS FROM {probe}")
        types = {name: kind for name, kind, *_ in cur.fetchall()}
    finally:
        cur.execute(f"DROP TEMPORARY TABLE {probe}")
    return tuple(ColumnDef(c.name, types[c.name], bool(c.nullable) and c.name not in key)
                 for c in table.columns)
