"""Delete mode ALL for MySQL: a run's rows replace the table's, and readers never see it empty.

The run's first batch is loaded into a replacement ``<table[:40]>_etl_new_<hex>`` made by
``CREATE TABLE .. LIKE`` the live one (same columns, indexes, options, comment; no rows);
right after that batch commits one ``RENAME TABLE`` swaps the two atomically and the old table
is dropped. Later batches upsert into the now-live table. A run without rows drops the
replacement and leaves the table as it is.

A run killed between building and swapping leaves its replacement behind. The builder holds a
named lock of its own replacement (``GET_LOCK``, gone with its session); the next run of the
table drops every replacement whose lock nobody holds.
"""

from __future__ import annotations

import re
import uuid

from etl_assets.logs import Log
from etl_assets.sinks.mysql.locks import named_lock, release_lock
from etl_assets.sinks.mysql.table import Cursor, quoted

REPLACEMENT_INFIX = "_etl_new_"


def _builder_lock(database: str, replacement: str) -> str:
    return named_lock("replacement", database, replacement)


class ReplaceAll:
    """The replacement of ``database.name`` one run loads and swaps in."""

    def __init__(self, database: str, name: str, log: Log) -> None:
        self.database, self.name, self.log = database, name, log
        self.replacement = f"{name[:40]}{REPLACEMENT_INFIX}{uuid.uuid4().hex[:8]}"

    @property
    def sql(self) -> str:
        return quoted(self.database, self.replacement)

    def start(self, cur: Cursor) -> str:
        """Take the builder lock and create the (empty) replacement."""
        self.hold(cur)
        cur.execute(f"CREATE TABLE {self.sql} LIKE {quoted(self.database, self.name)}")
        return f"delete all: loading into {self.replacement}, swapped in after the first batch"

    def hold(self, cur: Cursor) -> bool:
        """Take the builder lock (on a new session too); whether the replacement exists."""
        cur.execute("SELECT GET_LOCK(%s, 0)", (_builder_lock(self.database, self.replacement),))
        cur.execute("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND "
                    "TABLE_NAME = %s", (self.database, self.replacement))
        return cur.fetchone() is not None

    def swap_in(self, cur: Cursor) -> None:
        """One atomic RENAME TABLE: the replacement becomes the table; the old one dropped."""
        old = f"{self.name[:40]}_etl_old_{uuid.uuid4().hex[:8]}"
        live = quoted(self.database, self.name)
        cur.execute(f"RENAME TABLE {live} TO {quoted(self.database, old)}, {self.sql} TO {live}")
        cur.execute(f"DROP TABLE {quoted(self.database, old)}")
        self.release(cur)

    def abandon(self, cur: Cursor) -> None:
        """Drop the replacement (a run without rows, or one that failed)."""
        cur.execute(f"DROP TABLE IF EXISTS {self.sql}")
        self.release(cur)

    def release(self, cur: Cursor) -> None:
        release_lock(cur, _builder_lock(self.database, self.replacement))


def drop_stale_replacements(cur: Cursor, database: str, name: str, *, log: Log) -> list[str]:
    """Drop the replacements of ``database.name`` no live run holds (their builder was killed
    or lost its session); each is logged."""
    prefix = f"{name[:40]}{REPLACEMENT_INFIX}"
    cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND "
                "LEFT(TABLE_NAME, %s) = %s", (database, len(prefix), prefix))
    dropped = []
    for (table,) in cur.fetchall():
        if not re.fullmatch(re.escape(prefix) + "[0-9a-f]{8}", table):
            continue
        cur.execute("SELECT IS_USED_LOCK(%s)", (_builder_lock(database, table),))
        holder = cur.fetchone()
        if holder and holder[0] is not None:
            continue  # a live run is loading it
        cur.execute(f"DROP TABLE IF EXISTS {quoted(database, table)}")
        dropped.append(table)
        log.warning(f"{database}.{name}: dropped {table}, a replacement table left by a run "
                    f"that was killed or lost its connection")
    return dropped
