"""The newest-wins rule of every sink that replaces rows by key: a row replaces the stored one
of its key only when its cursor value is not older (null is the oldest; a tie replaces), so
partitions written in any order give the same target. ``conflict: last_write`` turns it off.
Each sink applies it in its own terms (SQL guard, MERGE condition, merge of files, CouchDB
revisions); this module holds what they share."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timezone

_INTEGER_TEXT = re.compile(r"-?[0-9]+")


def missing_cursor(where: str, column: str, columns: Sequence[str]) -> str:
    """The error for rows that lack the cursor column the rule compares (a transform dropped
    or renamed it): what is missing and the three ways out."""
    return (f"{where}: conflict newest compares the cursor column {column}, which the rows do "
            f"not have (columns: {', '.join(columns)}); keep it in the transform, name the "
            f"column that holds it with cursor_column, or set conflict: last_write")


def is_newer(stored: object, ours: object) -> bool:
    """Whether a stored cursor value is strictly newer than ours, as JSON documents hold them:
    numbers, or ISO 8601 text (a zoned time compared as its UTC instant). Null is the oldest;
    values of different kinds (or neither numbers nor text) cannot be compared and ours wins."""
    if stored is None:
        return False
    if ours is None:
        return True
    left, right = _comparable(stored), _comparable(ours)
    if isinstance(left, datetime) and isinstance(right, datetime):
        return left > right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left > right
    if isinstance(left, str) and isinstance(right, str):
        return left > right
    return False


def _comparable(value: object) -> object:
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        return int(value)  # an integer beyond 2^53 written as text (``big_integers``)
    if isinstance(value, str):
        try:  # Python 3.10's fromisoformat does not read a trailing Z
            moment = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z")
                                            else value)
        except ValueError:
            return value
        if moment.tzinfo is not None:
            moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
        return moment
    return value  # numbers compare as they are: an int beyond 2^53 exactly
