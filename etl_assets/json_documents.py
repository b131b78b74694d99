"""Arrow record batches -> JSON documents, for sinks that speak JSON (HTTP APIs, JSON lines).

One mapping for every JSON sink: timestamps and dates as ISO 8601 text (timestamps with a zone
end in ``Z`` or an offset), decimals and unbounded numerics as text (exact), JSON columns as
the JSON value itself (not a string holding it), UUIDs as text, binary as base64, durations
as seconds (float). NaN and infinities become null, which JSON has no other way to say.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pyarrow as pa

from etl_assets.arrow_types import logical_type_of

Document = dict[str, Any]


def _iso_datetime(value: datetime) -> str:
    if value.tzinfo is not None and value.utcoffset() == timedelta(0):
        return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"
    return value.isoformat()


def _float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _plain(value: Any) -> Any:
    """A Python value from ``to_pylist`` -> a value ``json.dumps`` writes as intended."""
    if isinstance(value, datetime):
        return _iso_datetime(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _parsed_json(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _converter(field: pa.Field) -> Callable[[Any], Any] | None:
    """The per-value conversion for ``field``; None where the Python value is JSON already."""
    if logical_type_of(field) == "json":
        return _parsed_json
    kind = field.type
    if pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind) \
            or pa.types.is_boolean(kind) or pa.types.is_null(kind):
        return None
    if pa.types.is_floating(kind):
        return lambda v: None if v is None else _float(v)
    return lambda v: None if v is None else _plain(v)


def documents(batch: pa.RecordBatch | pa.Table) -> list[Document]:
    """Every row of ``batch`` as a JSON-ready dict, columns in schema order."""
    names = batch.schema.names
    columns = []
    for i, field in enumerate(batch.schema):
        values = batch.column(i).to_pylist()
        convert = _converter(field)
        columns.append([convert(v) for v in values] if convert else values)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def iter_json_lines(batch: pa.RecordBatch | pa.Table) -> Iterator[bytes]:
    """Each row of ``batch`` as one line of compact JSON (UTF-8, ending in ``\\n``)."""
    for document in documents(batch):
        yield dumps(document) + b"\n"


def dumps(document: Any) -> bytes:
    """Compact UTF-8 JSON; NaN is refused (use :func:`documents` first)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()
