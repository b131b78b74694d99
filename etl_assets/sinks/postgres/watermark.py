"""The high watermark kept on a PostgreSQL target table, as JSON in the table's COMMENT
(:mod:`etl_assets.sinks.comment_watermark` says what it means), written in the same
transaction as each batch's rows, so it never claims rows that are not there. The sensor of a
source starts from it when the sensor's own cursor is empty and the instance has no partitions
yet.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from etl_assets.sinks.comment_watermark import WatermarkTarget, advanced_comment, stored_watermark
from etl_assets.table_names import TableName
from etl_assets.watermark import Bound

__all__ = ["WatermarkTarget", "read_watermark", "record_watermark"]


def record_watermark(conn: psycopg.Connection[Any], table: sql.Identifier, target: WatermarkTarget,
                     candidate: Bound) -> None:
    """Advance the watermark on ``table`` to ``candidate`` if contiguous; call inside the
    batch's transaction."""
    # Two runs committing batches of one table at once must not lose each other's update.
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                 ("etl_assets.watermark:" + table.as_string(conn),))
    row = conn.execute("SELECT obj_description(%s::regclass, 'pg_class')",
                       (table.as_string(conn),)).fetchone()
    comment = advanced_comment(row[0] if row else None, target, candidate)
    if comment is not None:
        conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(table, sql.Literal(comment)))


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
    return stored_watermark(row[0] if row else None)
