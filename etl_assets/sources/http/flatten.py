"""Nested JSON objects of a record as columns: ``flatten_depth`` levels of objects become
``a.b`` fields; deeper objects and every list stay JSON values (a ``json`` column)."""

from __future__ import annotations

from typing import Any

from etl_assets.sources.records import RecordsError


def flattened(record: dict[str, Any], depth: int, what: str = "") -> dict[str, Any]:
    """``record`` with objects down to ``depth`` levels made ``parent.child`` fields (an
    empty object leaves no field). Two fields of one name fail, naming it."""
    if depth <= 0 or not any(isinstance(v, dict) for v in record.values()):
        return record
    out: dict[str, Any] = {}
    for key, value in record.items():
        inner = flattened(value, depth - 1, what).items() if isinstance(value, dict) \
            else [(None, value)]
        for child, item in inner:
            name = key if child is None else f"{key}.{child}"
            if name in out:
                raise RecordsError(f"{what}: field {name!r} is both a field and a flattened "
                                   f"one; lower flatten_depth")
            out[name] = item
    return out
