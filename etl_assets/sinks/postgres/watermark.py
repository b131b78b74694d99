"""The high watermark kept on a PostgreSQL target table, as JSON in the table's COMMENT.

Written in the same transaction as each batch's rows, so it never claims rows that are not
there. Its meaning: every source row with ``cursor <= high_watermark`` is in the table. After
the last batch of a window that is the window's ``hi``; after an earlier batch (sources are
read in cursor order) it is just below the batch's largest cursor value, since rows sharing
that value may still follow. It only advances over contiguous windows: a window that starts
above the current watermark (a later window loaded before an earlier one) leaves it where it
is, so a sensor restarting from it never skips a window. The sensor of a source starts from
it when the sensor's own cursor is empty and the instance has no partitions yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from etl_assets.table_names import TableName
from etl_assets.watermark import Bound, Window, before, decode_bound, encode_bound

COMMENT_KEY = "etl_assets"
_ONE_STEP: dict[type, Any] = {int: 1, datetime: timedelta(microseconds=1)}


@dataclass(frozen=True)
class WatermarkTarget:
    """What a sink writes: a window of ``cursor`` named by ``partition``."""

    cursor: str
    window: Window
    partition: str

    def after_batch(self, batch: pa.RecordBatch, final: bool) -> Bound:
        """The watermark once ``batch`` is in: the window's hi after the last batch; else
        just below the batch's largest cursor value (never below the window's lo)."""
        if final:
            return self.window.hi
        if self.cursor not in batch.schema.names or batch.num_rows == 0:
            return self.window.lo
        largest = pc.max(batch.column(self.cursor)).as_py()
        if largest is None:
            return self.window.lo
        if isinstance(largest, datetime) and isinstance(self.window.lo, datetime):
            largest = _like(largest, self.window.lo)
        below = largest - _ONE_STEP[datetime if isinstance(largest, datetime) else int]
        return max(self.window.lo, min(below, self.window.hi))


def _like(value: datetime, like: datetime) -> datetime:
    """``value`` with the same awareness as ``like`` (Arrow gives UTC for zoned columns)."""
    if like.tzinfo is None:
        return value.replace(tzinfo=None) if value.tzinfo else value
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _comment_data(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {"comment": text}  # a comment someone wrote by hand is kept beside ours
    return data if isinstance(data, dict) else {"comment": text}


def _stored(data: dict[str, Any]) -> Bound | None:
    ours = data.get(COMMENT_KEY)
    if not isinstance(ours, dict) or "high_watermark" not in ours:
        return None
    return decode_bound(ours["high_watermark"])


def record_watermark(conn: psycopg.Connection[Any], table: sql.Identifier, target: WatermarkTarget,
                     candidate: Bound) -> Bound | None:
    """Advance the watermark on ``table`` to ``candidate`` if contiguous; call inside the
    batch's transaction. Returns the watermark now stored."""
    # Two runs committing batches of one table at once must not lose each other's update.
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                 ("etl_assets.watermark:" + table.as_string(conn),))
    row = conn.execute("SELECT obj_description(%s::regclass, 'pg_class')",
                       (table.as_string(conn),)).fetchone()
    data = _comment_data(row[0] if row else None)
    current = _stored(data)
    if current is not None and (before(current, target.window.lo)
                                or not before(current, candidate)):
        return current
    data[COMMENT_KEY] = {
        "high_watermark": encode_bound(candidate),
        "cursor": target.cursor,
        "partition": target.partition,
        "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(
        table, sql.Literal(json.dumps(data, separators=(",", ":")))))
    return candidate


def read_watermark(conninfo: str, table: str | TableName) -> Bound | None:
    """The watermark stored on ``table`` (as a spec writes it, or read; without a schema: in
    ``public``); None when the table or the watermark is missing."""
    name = (table if isinstance(table, TableName) else TableName.parse(table)).in_schema("public")
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        regclass = conn.execute("SELECT to_regclass(%s)",
                                (name.sql().as_string(conn),)).fetchone()
        if not regclass or regclass[0] is None:
            return None
        row = conn.execute("SELECT obj_description(%s::regclass, 'pg_class')",
                           (regclass[0],)).fetchone()
    return _stored(_comment_data(row[0] if row else None))
