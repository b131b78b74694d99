"""Bring a PostgreSQL table to a desired shape while readers keep reading it.

- missing table: created;
- new nullable columns: ``ALTER TABLE .. ADD COLUMN`` in place (a brief exclusive lock, taken
  with a short ``lock_timeout`` and retried);
- a column type, nullability or primary key change, or a new NOT NULL column: a replacement
  table is built beside the live one, the rows copied (cast to the new types) and swapped in
  (``TableSwap``): readers keep reading the old table throughout and wait at most one short
  lock attempt; writers wait for the copy (the live table is held in SHARE mode meanwhile, so
  no write is lost).

Columns the table has but ``desired`` lacks are kept, never dropped; an empty desired primary
key keeps the table's. A change the data does not allow (a cast that fails on a stored value,
NULLs in a column made NOT NULL, duplicates under a new key) raises PostgresSinkError naming
the table and column, and leaves the table as it was. Concurrent migrations of one table are
serialised by an advisory lock.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql

from etl_assets.logs import Log
from etl_assets.sinks.postgres.errors import PostgresSinkError
from etl_assets.sinks.postgres.swap import TableSwap, lock_exclusively
from etl_assets.sinks.postgres.table import ColumnDef, TableDef, existing_table


def create_table(conn: psycopg.Connection[Any], table: TableDef) -> None:
    """CREATE TABLE (and its schema) for ``table``, in the caller's transaction."""
    columns = [sql.SQL("{} {}{}").format(sql.Identifier(c.name), sql.SQL(c.type),
                                         sql.SQL("" if c.nullable else " NOT NULL"))
               for c in table.columns]
    if table.primary_key:
        columns.append(sql.SQL("PRIMARY KEY ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, table.primary_key))))
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(table.schema)))
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table.identifier,
                                                        sql.SQL(", ").join(columns)))


def target_shape(existing: TableDef, desired: TableDef) -> TableDef:
    """The table a migration builds: the existing columns in their order (with the desired
    type and nullability where desired names them), then the new ones."""
    kept = tuple(desired.column(c.name) or c for c in existing.columns)
    new = tuple(c for c in desired.columns if existing.column(c.name) is None)
    return TableDef(existing.schema, existing.name, kept + new,
                    desired.primary_key or existing.primary_key)


def changes(existing: TableDef, desired: TableDef) -> list[str]:
    """What needs a rebuild, in words (empty: adding columns in place is enough)."""
    found = []
    for column in desired.columns:
        old = existing.column(column.name)
        if old is None:
            if not column.nullable:
                found.append(f"new NOT NULL column {column.name} {column.type}")
            continue
        if old.type != column.type:
            found.append(f"column {column.name} {old.type} -> {column.type}")
        if old.nullable != column.nullable:
            found.append(f"column {column.name} "
                         f"{'NULL -> NOT NULL' if old.nullable else 'NOT NULL -> NULL'}")
    if desired.primary_key and desired.primary_key != existing.primary_key:
        found.append(f"primary key ({', '.join(existing.primary_key)}) -> "
                     f"({', '.join(desired.primary_key)})")
    return found


def migrate(conn: psycopg.Connection[Any], desired: TableDef, *, log: Log,
            terminate_blockers_after_s: float | None = None,
            lock_timeout_s: float = 0.5) -> list[str]:
    """Bring ``desired.schema.desired.name`` to ``desired`` (see the module docstring); returns
    the actions taken. ``terminate_blockers_after_s``: after that many seconds of waiting for
    the exclusive lock, terminate the sessions holding the table (None: wait for them)."""
    what = desired.display
    key = sql.Literal(what)
    with conn.transaction():
        conn.execute(sql.SQL("SELECT pg_advisory_lock(hashtext({}))").format(key))
    try:
        with conn.transaction():
            existing = existing_table(conn, desired.schema, desired.name)
            if existing is None:
                create_table(conn, desired)
                return [f"created table {what}"]
        needed = changes(existing, desired)
        if not needed:
            added = [c for c in desired.columns if existing.column(c.name) is None]
            if added:
                _add_columns(conn, existing, added, log, lock_timeout_s,
                             terminate_blockers_after_s)
            return [f"added column {c.name} {c.type}" for c in added]
        needed += [f"new column {c.name} {c.type}" for c in desired.columns
                   if c.nullable and existing.column(c.name) is None]
        return _rebuild(conn, existing, target_shape(existing, desired), needed, log,
                        lock_timeout_s, terminate_blockers_after_s)
    finally:
        with conn.transaction():
            conn.execute(sql.SQL("SELECT pg_advisory_unlock(hashtext({}))").format(key))


def _add_columns(conn: psycopg.Connection[Any], existing: TableDef, added: list[ColumnDef],
                 log: Log, lock_timeout_s: float, terminate_after_s: float | None) -> None:
    with conn.transaction():
        oid = conn.execute("SELECT %s::regclass::oid",
                           (existing.identifier.as_string(conn),)).fetchone()
        assert oid is not None
        lock_exclusively(conn, [(oid[0], existing.identifier.as_string(conn))],
                         existing.display, log=log, lock_timeout_s=lock_timeout_s,
                         terminate_blockers_after_s=terminate_after_s)
        for column in added:
            conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                existing.identifier, sql.Identifier(column.name), sql.SQL(column.type)))


def _rebuild(conn: psycopg.Connection[Any], existing: TableDef, target: TableDef,
             needed: list[str], log: Log, lock_timeout_s: float,
             terminate_after_s: float | None) -> list[str]:
    what = existing.display
    log.info(f"{what}: rebuilding beside the live table ({'; '.join(needed)})")
    started = time.monotonic()
    swap = TableSwap(conn, target, log=log, lock_timeout_s=lock_timeout_s,
                     terminate_blockers_after_s=terminate_after_s)
    live_types = {c.name: c.type for c in existing.columns}
    try:
        with conn.transaction():
            # SHARE: readers go on, writers wait, so nothing written meanwhile is lost.
            conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(existing.identifier))
            swap.build()
            rows = swap.copy(existing.names, live_types)
            log.info(f"{what}: copied {rows} rows into the new table "
                     f"({time.monotonic() - started:.1f} s)")
            skipped = swap.build_indexes()
            swap.swap()
    except psycopg.Error as exc:
        raise PostgresSinkError(_explain(conn, existing, target, exc)) from None
    actions = [f"rebuilt {what} ({'; '.join(needed)}): {rows} rows copied, swapped in "
               f"after {time.monotonic() - started:.1f} s"]
    actions += [f"index {name} no longer applies: not recreated" for name in skipped]
    return actions


def _explain(conn: psycopg.Connection[Any], existing: TableDef, target: TableDef,
             exc: psycopg.Error) -> str:
    """Which column the failed copy is about: each changed column is tried on its own."""
    what = existing.display
    reason = exc.diag.message_primary or str(exc)
    if exc.diag.column_name:
        return f"{what}: cannot migrate column {exc.diag.column_name}: {reason}"
    for column in target.columns:
        old = existing.column(column.name)
        if old is None:
            continue
        probe = None
        if old.type != column.type:
            probe = sql.SQL("SELECT count(CAST({} AS {})) FROM {}").format(
                sql.Identifier(column.name), sql.SQL(column.type), existing.identifier)
        try:
            with conn.transaction():
                if probe is not None:
                    conn.execute(probe)
        except psycopg.Error as probe_exc:
            return (f"{what}: cannot change column {column.name} from {old.type} to "
                    f"{column.type}: {probe_exc.diag.message_primary or probe_exc}")
    if target.primary_key != existing.primary_key:
        return (f"{what}: cannot make ({', '.join(target.primary_key)}) the primary key: "
                f"{reason}{f' ({exc.diag.message_detail})' if exc.diag.message_detail else ''}")
    return f"{what}: migration failed: {reason}"
