"""What a MySQL sink's table holds, for asset metadata, the asset checks and ``etl-assets
status``: its columns (as the server spells their types), its primary key, its row count,
and a window's rows.

The row count is exact (``count(*)``) when the server's estimate (``TABLE_ROWS``) is under
``EXACT_COUNT_MAX_ROWS``, else the estimate. A window's keys are loaded into a temporary
table and joined with the table's primary key, so the cost follows the window, not the table.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pymysql

from etl_assets.sinks.base import WindowCount
from etl_assets.sinks.column_schema import TargetColumn
from etl_assets.sinks.mysql.connection import LOCAL_INFILE_REFUSED, open_session
from etl_assets.sinks.mysql.errors import MysqlSinkError
from etl_assets.sinks.mysql.rows_text import (
    insert_tuples,
    load_data_statement,
    load_file_body,
    new_load_file,
    texts,
)
from etl_assets.sinks.mysql.table import Cursor, existing_table, quoted
from etl_assets.sinks.mysql.watermark import read_watermark
from etl_assets.watermark import Bound, Window

EXACT_COUNT_MAX_ROWS = 1_000_000
"""Tables the server estimates below this many rows are counted exactly (rows)."""


@dataclass(frozen=True)
class TableState:
    """A table as it is now: ``rows`` exact, or None with the server's ``estimated_rows``."""

    columns: tuple[TargetColumn, ...]
    primary_key: tuple[str, ...]
    rows: int | None
    estimated_rows: int
    watermark: Bound | None


@contextlib.contextmanager
def _session(arguments: dict[str, Any]) -> Iterator[Cursor]:
    conn = open_session(arguments, connect_timeout=10)
    try:
        yield conn.cursor()
    finally:
        conn.close()


def table_state(arguments: dict[str, Any], database: str, name: str) -> TableState | None:
    """``database.name`` as it is now; None when it does not exist."""
    with _session(arguments) as cur:
        table = existing_table(cur, database, name)
        if table is None:
            return None
        cur.execute("SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                    "AND TABLE_NAME = %s", (database, name))
        estimate = int((cur.fetchone() or (0,))[0] or 0)
        rows = None
        if estimate < EXACT_COUNT_MAX_ROWS:
            cur.execute(f"SELECT count(*) FROM {quoted(database, name)}")
            rows = int(cur.fetchone()[0])
        mark = read_watermark(cur, database, name)
    return TableState(tuple(TargetColumn(c.name, c.type, c.nullable) for c in table.columns),
                      table.primary_key, rows, estimate, mark)


def table_columns(arguments: dict[str, Any], database: str, name: str) -> list[str] | None:
    """The column names of ``database.name`` in order; None when it does not exist."""
    with _session(arguments) as cur:
        table = existing_table(cur, database, name)
    return None if table is None else [c.name for c in table.columns]


def committed_watermark(arguments: dict[str, Any], database: str, name: str) -> Bound | None:
    """The watermark on ``database.name`` (None: no table or none yet)."""
    with _session(arguments) as cur:
        return read_watermark(cur, database, name)


def count_windows(arguments: dict[str, Any], database: str, name: str, cursor: str,
                  asks: list[tuple[Window, pa.Table | None]]) -> list[WindowCount]:
    """What ``database.name`` holds of each (window, keys) of ``asks`` (see
    ``WindowCount``), on one session: with keys, their rows found by the table's key (in the
    window, or only past it); without, the rows with ``lo < cursor <= hi``."""
    with _session(arguments) as cur:
        table = existing_table(cur, database, name)
        if table is None:
            return [WindowCount(rows=0) for _ in asks]
        names = {c.name.lower() for c in table.columns}
        given = {c for _, keys in asks if keys is not None for c in keys.column_names}
        missing = [c for c in [cursor, *sorted(given)] if c.lower() not in names]
        if missing:
            raise MysqlSinkError(f"{database}.{name}: no column(s) {', '.join(missing)} "
                                 f"(columns: {', '.join(c.name for c in table.columns)}); "
                                 f"cannot count a window")
        return [_count(cur, quoted(database, name), quoted(cursor), window, keys)
                for window, keys in asks]


def _count(cur: Cursor, table: str, cursor: str, window: Window,
           keys: pa.Table | None) -> WindowCount:
    if keys is None:
        cur.execute(f"SELECT count(*) FROM {table} WHERE {cursor} > %s AND {cursor} <= %s",
                    (window.lo, window.hi))
        return WindowCount(rows=int(cur.fetchone()[0]))
    distinct = keys.group_by(keys.column_names, use_threads=False).aggregate([])
    if not distinct.num_rows:
        return WindowCount(rows=0)
    temp = quoted(f"etl_keys_{uuid.uuid4().hex[:12]}")
    columns = ", ".join(quoted(c) for c in distinct.column_names)
    cur.execute(f"CREATE TEMPORARY TABLE {temp} AS SELECT {columns} FROM {table} LIMIT 0")
    path = new_load_file()
    try:
        with open(path, "wb") as file:
            file.write(load_file_body(texts(distinct.combine_chunks().to_batches()[0])))
        _load_keys(cur, temp, path, distinct)
        match = " AND ".join(f"k.{quoted(c)} = t.{quoted(c)}" for c in distinct.column_names)
        cur.execute(f"SELECT COALESCE(SUM(t.{cursor} > %s AND t.{cursor} <= %s), 0), "
                    f"COALESCE(SUM(t.{cursor} > %s), 0) FROM {temp} k JOIN {table} t ON {match}",
                    (window.lo, window.hi, window.hi))
        inside, newer = cur.fetchone()
    finally:
        os.unlink(path)
        cur.execute(f"DROP TEMPORARY TABLE IF EXISTS {temp}")
    return WindowCount(rows=int(inside), newer=int(newer))


def _load_keys(cur: Cursor, temp: str, path: str, keys: pa.Table) -> None:
    """``keys`` (written to ``path``) into the temporary table, by INSERTs when the server
    refuses LOAD DATA LOCAL."""
    batch = keys.combine_chunks().to_batches()[0]
    columns = texts(batch)
    names = [quoted(c) for c in keys.column_names]
    try:
        cur.execute(load_data_statement(path, temp, names, columns))
    except pymysql.MySQLError as exc:
        if not exc.args or exc.args[0] not in LOCAL_INFILE_REFUSED:
            raise
        for _rows, values in insert_tuples(columns):
            cur.execute(f"INSERT INTO {temp} ({', '.join(names)}) VALUES ".encode() + values)
