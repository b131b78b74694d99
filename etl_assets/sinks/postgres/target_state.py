"""What a PostgreSQL sink's table holds, for asset metadata and the asset checks: its columns
(as ``format_type`` spells their types), its primary key, its row count, and a window's rows.

Cheap by design: the catalog in one query, the row count exact (``count(*)``) only when the
planner estimates fewer than ``EXACT_COUNT_MAX_ROWS`` rows, else the planner's estimate
(``pg_class.reltuples`` scaled to the table's current size, which also covers a table never
analyzed).
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from etl_assets.sinks.base import WindowCount
from etl_assets.sinks.column_schema import TargetColumn
from etl_assets.sinks.postgres.column_types import csv_ready
from etl_assets.sinks.postgres.errors import PostgresSinkError
from etl_assets.table_names import TableName
from etl_assets.watermark import Window

EXACT_COUNT_MAX_ROWS = 1_000_000
"""Tables the planner estimates below this many rows are counted exactly (rows)."""

ARRAY_KEYS_MAX = 100_000
"""Up to this many keys of one column are sent as one array parameter; more are COPYed into
a temporary table (an array of 1M Python values doubled a run's peak memory)."""

_CATALOG = """
WITH t AS (SELECT to_regclass(%s)::oid AS oid)
SELECT current_database(), a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
       k.n
FROM t LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN (SELECT key.attnum, key.n FROM t, pg_index i,
                  unnest(i.indkey) WITH ORDINALITY AS key(attnum, n)
           WHERE i.indrelid = t.oid AND i.indisprimary) k ON k.attnum = a.attnum
ORDER BY a.attnum
"""


@dataclass(frozen=True)
class TableState:
    """A table as it is now: ``rows`` exact, or None with the planner's ``estimated_rows``."""

    database: str
    name: TableName
    columns: tuple[TargetColumn, ...]
    primary_key: tuple[str, ...]
    rows: int | None
    estimated_rows: int


def _catalog(conn: psycopg.Connection[Any], name: TableName
             ) -> tuple[str, tuple[TargetColumn, ...], tuple[str, ...]] | None:
    """(database, columns, primary key) of ``name``; None when there is no such table."""
    found = conn.execute(_CATALOG, (name.sql().as_string(conn),)).fetchall()
    if not found or found[0][1] is None:
        return None
    columns = tuple(TargetColumn(column, kind, bool(nullable))
                    for _db, column, kind, nullable, _n in found)
    key = tuple(column for _db, column, _k, _null, n in sorted(
        (r for r in found if r[4] is not None), key=lambda r: r[4]))
    return found[0][0], columns, key


def table_state(conninfo: str, name: TableName) -> TableState | None:
    """``name`` (schema-qualified) as it is now; None when it does not exist."""
    with psycopg.connect(conninfo, connect_timeout=10, autocommit=True) as conn:
        catalog = _catalog(conn, name)
        if catalog is None:
            return None
        database, columns, key = catalog
        row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {}").format(
            name.sql())).fetchone()
        estimated = int(row[0][0]["Plan"]["Plan Rows"]) if row else 0
        rows = None
        if estimated < EXACT_COUNT_MAX_ROWS:
            counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                name.sql())).fetchone()
            rows = int(counted[0]) if counted else 0
    return TableState(database, name, columns, key, rows, estimated)


def table_columns(conninfo: str, name: TableName) -> list[str] | None:
    """The column names of ``name`` in order; None when it does not exist."""
    with psycopg.connect(conninfo, connect_timeout=10, autocommit=True) as conn:
        catalog = _catalog(conn, name)
    return None if catalog is None else [c.name for c in catalog[1]]


PROBED_KEYS_MAX = 100_000
"""Above this many keys a window's keys are hash-joined with the table, not probed one by one
through its key's index."""


def count_windows(conninfo: str, name: TableName, cursor: str,
                  asks: list[tuple[Window, pa.Table | None]]) -> list[WindowCount]:
    """What ``name`` holds of each (window, keys) of ``asks`` (see ``WindowCount``), on one
    connection. With keys (a table of key columns), the distinct keys are looked up by the
    table's key (its primary key index: the cost follows the window's keys, not the table's
    size); without, the rows with ``lo < cursor <= hi`` are counted. The window's bounds are
    bound as the writer binds them (an aware timestamp as timestamptz, a naive one as
    timestamp, an id as an integer)."""
    # autocommit: the catalog query must not open the transaction the keys' table lives in
    with psycopg.connect(conninfo, connect_timeout=10, autocommit=True) as conn:
        catalog = _catalog(conn, name)
        if catalog is None:
            return [WindowCount(rows=0) for _ in asks]
        names = [c.name for c in catalog[1]]
        given = {c for _, keys in asks if keys is not None for c in keys.column_names}
        missing = [c for c in [cursor, *sorted(given)] if c not in names]
        if missing:
            raise PostgresSinkError(f"{name.display}: no column(s) {', '.join(missing)} "
                                    f"(columns: {', '.join(names)}); cannot count a window")
        column = sql.Identifier(cursor)
        types = {c.name: c.type for c in catalog[1]}
        return [_count(conn, name, column, window, keys, types) for window, keys in asks]


def _count(conn: psycopg.Connection[Any], name: TableName, column: sql.Identifier,
           window: Window, keys: pa.Table | None, types: dict[str, str]) -> WindowCount:
    if keys is None:
        (rows,) = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} > %s AND {} <= %s")
                               .format(name.sql(), column, column),
                               (window.lo, window.hi)).fetchone() or (0,)
        return WindowCount(rows=int(rows))
    if len(keys.column_names) == 1 and keys.num_rows <= ARRAY_KEYS_MAX:
        return _count_one_column_keys(conn, name, column, window, keys,
                                      types[keys.column_names[0]])
    with conn.transaction():
        return _count_keys(conn, name, column, window, keys)


def _count_one_column_keys(conn: psycopg.Connection[Any], name: TableName,
                           cursor: sql.Identifier, window: Window, keys: pa.Table,
                           kind: str) -> WindowCount:
    """``_count_keys`` for a key of one column: the distinct keys as one array parameter of
    the column's type (``= ANY``: an index scan of the key), no temporary table."""
    distinct = pc.unique(keys.column(0).combine_chunks()).drop_null()
    if not len(distinct):
        return WindowCount(rows=0)
    values = _array_literal(distinct)
    key = sql.Identifier(keys.column_names[0])
    # The key's index, not a scan of the table, which the planner prefers for 10k keys in a
    # cached 1M-row table (62-80 ms against 6 ms). Our own connection: closed after.
    conn.execute("SET enable_seqscan = off")
    inside, newer = conn.execute(sql.SQL(
        "SELECT count(*) FILTER (WHERE {0} > %s AND {0} <= %s), count(*) FILTER (WHERE {0} > %s)"
        " FROM {1} WHERE {2} = ANY(%s::{3}[])"
    ).format(cursor, name.sql(), key, sql.SQL(kind)),
        (window.lo, window.hi, window.hi, values)).fetchone() or (0, 0)
    return WindowCount(rows=int(inside), newer=int(newer))


def _count_keys(conn: psycopg.Connection[Any], name: TableName, cursor: sql.Identifier,
                window: Window, keys: pa.Table) -> WindowCount:
    """Of ``keys``, how many rows of ``name`` hold a cursor in the window and how many past its
    hi (inside the caller's transaction; the temporary table goes with it)."""
    if not keys.num_rows:
        return WindowCount(rows=0)
    distinct = keys.group_by(keys.column_names, use_threads=False).aggregate([])
    temp = sql.Identifier(f"etl_keys_{uuid.uuid4().hex[:12]}")
    columns = sql.SQL(", ").join(map(sql.Identifier, keys.column_names))
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA")
                 .format(temp, columns, name.sql()))
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            temp, columns)) as copy:
        copy.write(_csv(distinct))
    if distinct.num_rows < PROBED_KEYS_MAX:
        # One index probe a key: the planner, costing random reads as on disk, would rather
        # hash-join a scan of the whole table (144 ms against 10 ms for 10k keys in 1M rows).
        # An upsert target always has the unique index ON CONFLICT needs.
        conn.execute("SET LOCAL enable_hashjoin = off")
        conn.execute("SET LOCAL enable_mergejoin = off")
    else:  # so many keys that a hash join wins (1M keys: 0.6 s against 1.1 s of probes)
        conn.execute(sql.SQL("ANALYZE {}").format(temp))
    match = sql.SQL(" AND ").join(
        sql.SQL("k.{0} = t.{0}").format(sql.Identifier(c)) for c in keys.column_names)
    inside, newer = conn.execute(sql.SQL(
        "SELECT count(*) FILTER (WHERE t.{0} > %s AND t.{0} <= %s), "
        "count(*) FILTER (WHERE t.{0} > %s) FROM {1} k JOIN {2} t ON {3}"
    ).format(cursor, temp, name.sql(), match),
        (window.lo, window.hi, window.hi)).fetchone() or (0, 0)
    return WindowCount(rows=int(inside), newer=int(newer))


def _array_literal(values: pa.Array) -> str | list[Any]:
    """``values`` as PostgreSQL's array text (``{1,2}``, ``{"a","b\\"c"}``) for integers and
    strings, which the server parses faster than psycopg adapts 10k Python values (8 ms
    against 14-18 ms); other types as a Python list, which psycopg adapts."""
    if pa.types.is_integer(values.type):
        text = pc.cast(values, pa.string())
    elif pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        escaped = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
        text = pc.binary_join_element_wise('"', escaped, '"', "")
    else:
        return values.to_pylist()
    return "{" + ",".join(text.to_pylist()) + "}"


def _csv(table: pa.Table) -> bytes:
    """``table`` as COPY CSV reads it (the writer's conversions)."""
    ready = pa.Table.from_arrays([csv_ready(table.column(i), table.schema.field(i))
                                  for i in range(table.num_columns)], names=table.column_names)
    out = io.BytesIO()
    pacsv.write_csv(ready, out, pacsv.WriteOptions(include_header=False,
                                                   quoting_style="all_valid"))
    return out.getvalue()
