"""Delete mode ALL: a run's rows replace the table's, and readers never see it empty.

The run's first batch is loaded into a replacement table built beside the live one (same
columns, key, indexes, grants, owner, comment; no rows copied); right after that batch commits
the replacement is swapped in (``TableSwap``: a short exclusive lock, dependent views
recreated). Later batches upsert into the now-live table. A run without rows leaves the table
as it is: the replacement is dropped.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from etl_assets.io_managers.postgres_swap import Log, TableSwap
from etl_assets.io_managers.postgres_table import existing_table

DELETE_MODES = ("off", "all")


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
        self.pending = False

    @property
    def replacement(self) -> sql.Identifier:
        return self.swap.new

    def start(self) -> str:
        """Build the empty replacement (committed, so batches can load into it)."""
        with self.conn.transaction():
            self.swap.build()
            self.swap.build_indexes()
        self.pending = True
        return (f"delete all: loading into {self.swap.new_name}, swapped in for "
                f"{self.swap.display} after the first batch")

    def reattach(self, conn: psycopg.Connection[Any]) -> None:
        """Go on on ``conn``: the connection this run used was lost and made again."""
        self.conn = conn
        self.swap.conn = conn

    def swap_in(self) -> None:
        """Swap the loaded replacement in (after the first batch committed)."""
        with self.conn.transaction():
            self.swap.swap()
        self.pending = False
        self.log.info(f"{self.swap.display}: delete all: new table swapped in")

    def abandon(self) -> None:
        """Drop a replacement that was never swapped in (no rows, or the run failed)."""
        if not self.pending:
            return
        self.pending = False
        try:
            with self.conn.transaction():
                self.swap.discard()
        except psycopg.Error as exc:
            self.log.warning(f"{self.swap.display}: could not drop {self.swap.new_name}: {exc}")
