"""Delete mode ALL: a run's rows replace the table's, and readers never see it empty.

The run's first batch is loaded into a replacement table built beside the live one (same
columns, key, indexes, grants, owner, comment; no rows copied); right after that batch commits
the replacement is swapped in (``TableSwap``: a short exclusive lock, dependent views
recreated). Later batches upsert into the now-live table. A run without rows leaves the table
as it is: the replacement is dropped.

A run killed (or cut off by a server restart) between building the replacement and swapping it
in leaves ``<table[:40]>_etl_new_<hex>`` behind. To tell such a stale table from one a live run
is loading, a run building a replacement holds a session-level shared advisory lock on the
target (``builder_lock``) from before the build until the swap or drop; the next run of the
sink (``drop_stale_replacements``) takes that lock exclusively without waiting: when it gets
it, no builder is alive and every replacement of the table is stale and dropped. (Migrations
build and swap their replacement in one transaction, so a crash rolls it back: they leave
nothing.)
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

from etl_assets.logs import Log
from etl_assets.sinks.postgres.swap import TableSwap
from etl_assets.sinks.postgres.table import existing_table

REPLACEMENT_INFIX = "_etl_new_"
_LOCK_SPACE = "etl_assets replacement builders"  # the advisory lock's first key


def builder_lock(schema: str, name: str) -> sql.Composed:
    """The two-key advisory lock argument of the builders of ``schema.name``'s replacements.
    Keyed by the name's first 40 characters, as the replacements are named: tables sharing
    them share the lock, so one's sweep never drops another's live replacement."""
    return sql.SQL("hashtext({}), hashtext({})").format(
        sql.Literal(_LOCK_SPACE), sql.Literal(f"{schema}.{name[:40]}"))


def drop_stale_replacements(conn: psycopg.Connection[Any], schema: str, name: str, *,
                            log: Log) -> list[str]:
    """Drop the replacements of ``schema.name`` that no live run is building (their builder
    was killed or lost its connection); returns their names. Each is logged with its size."""
    lock = builder_lock(schema, name)
    with conn.transaction():
        taken = conn.execute(sql.SQL("SELECT pg_try_advisory_lock({})").format(lock)).fetchone()
    if not taken or not taken[0]:
        return []  # a run is building a replacement right now: its table is not stale
    prefix = f"{name[:40]}{REPLACEMENT_INFIX}"
    dropped = []
    try:
        with conn.transaction():
            rows = conn.execute(
                "SELECT c.relname, pg_size_pretty(pg_total_relation_size(c.oid)) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
                "AND c.relkind = 'r' AND left(c.relname, %s) = %s ORDER BY 1",
                (schema, len(prefix), prefix)).fetchall()
        for table, size in rows:
            if not re.fullmatch(re.escape(prefix) + "[0-9a-f]{8}", table):
                continue
            try:
                with conn.transaction():
                    conn.execute("SET LOCAL lock_timeout = '5s'")
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(
                        sql.Identifier(schema, table)))
            except psycopg.errors.LockNotAvailable:
                log.warning(f"{schema}.{name}: {table}, left by an earlier run, is in use; "
                            f"not dropped (the next run tries again)")
                continue
            dropped.append(table)
            log.warning(f"{schema}.{name}: dropped {table} ({size}), a replacement table left "
                        f"by a run that was killed or lost its connection")
    finally:
        with conn.transaction():
            conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(lock))
    return dropped


class ReplaceAll:
    """The replacement table of one run in delete mode ALL."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str, name: str, *, log: Log,
                 terminate_blockers_after_s: float | None = None) -> None:
        self.conn = conn
        self.log = log
        live = existing_table(conn, schema, name)
        assert live is not None, "migrate() creates the table first"
        self.swap = TableSwap(conn, live, log=log,
                              terminate_blockers_after_s=terminate_blockers_after_s)
        self._lock = builder_lock(schema, name)
        self._holding = False
        self.pending = False

    @property
    def replacement(self) -> sql.Identifier:
        return self.swap.new

    def start(self) -> str:
        """Build the empty replacement (committed, so batches can load into it), holding the
        builder lock so no other run takes it for stale."""
        self._hold_lock()
        with self.conn.transaction():
            self.swap.build()
            self.swap.build_indexes()
        self.pending = True
        return (f"delete all: loading into {self.swap.new_name}, swapped in for "
                f"{self.swap.display} after the first batch")

    def hold(self, conn: psycopg.Connection[Any]) -> bool:
        """Go on with ``conn``, a new connection after the previous one was lost (its session,
        and so the builder lock, went with it): take the builder lock again on ``conn``.
        Returns whether the replacement still exists; False means a run that started while no
        lock was held dropped it as stale: ``start()`` again if no batch committed into it,
        else fail (its rows are gone)."""
        self.conn = conn
        self.swap.conn = conn
        if not self.pending:
            return True
        self._holding = False  # the lost session released it
        self._hold_lock()
        with conn.transaction():
            found = conn.execute("SELECT to_regclass(%s)",
                                 (self.replacement.as_string(conn),)).fetchone()
        return found is not None and found[0] is not None

    def swap_in(self) -> None:
        """Swap the loaded replacement in (after the first batch committed)."""
        with self.conn.transaction():
            # One swap of this table at a time (concurrent runs, migrations): each replaces
            # the table that is live when it holds this lock.
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.swap.display,))
            self.swap.swap()
        self.pending = False
        self._release_lock()
        self.log.info(f"{self.swap.display}: delete all: new table swapped in")

    def abandon(self) -> None:
        """Drop a replacement that was never swapped in (no rows, or the run failed)."""
        if not self.pending:
            self._release_lock()
            return
        self.pending = False
        try:
            with self.conn.transaction():
                self.swap.discard()
            self._release_lock()
        except psycopg.Error as exc:
            self.log.warning(f"{self.swap.display}: could not drop {self.swap.new_name} "
                             f"({exc}); the next run of the sink drops it")

    def _hold_lock(self) -> None:
        if self._holding:
            return
        with self.conn.transaction():
            self.conn.execute(sql.SQL("SELECT pg_advisory_lock_shared({})").format(self._lock))
        self._holding = True

    def _release_lock(self) -> None:
        if not self._holding:
            return
        self._holding = False
        try:
            with self.conn.transaction():
                self.conn.execute(sql.SQL("SELECT pg_advisory_unlock_shared({})").format(
                    self._lock))
        except psycopg.Error:
            pass  # the session is gone, and the lock with it
