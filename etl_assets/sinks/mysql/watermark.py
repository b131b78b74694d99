"""The high watermark kept on a MySQL target table, as JSON in its COMMENT (what it means:
:mod:`etl_assets.sinks.comment_watermark`).

MySQL cannot put a COMMENT change in a batch's transaction (``ALTER TABLE`` commits
implicitly), so it is written right after each batch commits: a crash in between leaves the
watermark behind the rows, never ahead of them (a re-run writes the same rows again). Two
runs of one table update it under a named lock, so neither loses the other's advance.
"""

from __future__ import annotations

from etl_assets.sinks.comment_watermark import WatermarkTarget, advanced_comment, stored_watermark
from etl_assets.sinks.mysql.locks import named_lock, release_lock, take_lock
from etl_assets.sinks.mysql.table import Cursor, quoted
from etl_assets.watermark import Bound


def _comment(cur: Cursor, database: str, name: str) -> str | None:
    cur.execute("SELECT TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                "AND TABLE_NAME = %s", (database, name))
    row = cur.fetchone()
    return row[0] if row else None


def record_watermark(cur: Cursor, database: str, name: str, target: WatermarkTarget,
                     candidate: Bound) -> None:
    """Advance the watermark on ``database.name`` to ``candidate`` if contiguous; call after
    the batch's transaction committed (the ALTER commits on its own)."""
    lock = named_lock("watermark", database, name)
    take_lock(cur, lock, f"{database}.{name}: recording the watermark")
    try:
        comment = advanced_comment(_comment(cur, database, name), target, candidate)
        if comment is not None:
            cur.execute(f"ALTER TABLE {quoted(database, name)} COMMENT = %s", (comment,))
    finally:
        release_lock(cur, lock)


def read_watermark(cur: Cursor, database: str, name: str) -> Bound | None:
    """The watermark stored on ``database.name``; None when the table or it is missing."""
    return stored_watermark(_comment(cur, database, name))
