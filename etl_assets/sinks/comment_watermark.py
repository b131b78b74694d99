"""The high watermark a SQL sink keeps on its target table, as JSON in the table's COMMENT
(PostgreSQL and MySQL alike; each kind reads and writes the comment its own way).

Its meaning: every source row with ``cursor <= high_watermark`` is in the table. After the
last batch of a window that is the window's ``hi``; after an earlier batch (sources are read in
cursor order) it is just below the batch's largest cursor value, since rows sharing that value
may still follow. It only advances over contiguous windows: a window that starts above the
current watermark (a later window loaded before an earlier one) leaves it where it is, so a
sensor restarting from it never skips a window. A comment someone wrote by hand is kept beside
ours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

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
        return {"comment": text}
    return data if isinstance(data, dict) else {"comment": text}


def stored_watermark(comment: str | None) -> Bound | None:
    """The watermark a table comment holds (None: none)."""
    ours = _comment_data(comment).get(COMMENT_KEY)
    if not isinstance(ours, dict) or "high_watermark" not in ours:
        return None
    return decode_bound(ours["high_watermark"])


def advanced_comment(comment: str | None, target: WatermarkTarget,
                     candidate: Bound) -> str | None:
    """The comment that records ``candidate`` as the watermark, or None when the stored one
    stays (``candidate`` is not above it, or ``target``'s window starts above it)."""
    current = stored_watermark(comment)
    if current is not None and (before(current, target.window.lo)
                                or not before(current, candidate)):
        return None
    data = _comment_data(comment)
    data[COMMENT_KEY] = {
        "high_watermark": encode_bound(candidate),
        "cursor": target.cursor,
        "partition": target.partition,
        "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return json.dumps(data, separators=(",", ":"))
