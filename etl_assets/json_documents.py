"""Arrow record batches -> JSON documents, for sinks that speak JSON (HTTP APIs, JSON lines).

One mapping for every JSON sink: timestamps and dates as ISO 8601 text (timestamps with a zone
end in ``Z`` or an offset), decimals and unbounded numerics as plain text (exact), integers
beyond ±(2^53 - 1) as text where the sink says so (``big_integers``), JSON columns as
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
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.arrow_types import logical_type_of

Document = dict[str, Any]
BigIntegers = Literal["string", "number"]
"""How an integer beyond ±(2^53 - 1) is written: as a JSON string (what a JavaScript-based
reader keeps exactly: it reads every number as a double) or as a JSON number."""

SAFE_INTEGER = 2**53 - 1
"""The largest integer a double holds exactly (JavaScript's ``Number.MAX_SAFE_INTEGER``)."""


def _iso_datetime(value: datetime) -> str:
    if value.tzinfo is not None and value.utcoffset() == timedelta(0):
        return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"
    return value.isoformat()


def _float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def plain(value: object) -> object:
    """A Python value from ``to_pylist`` -> a value ``json.dumps`` writes as intended."""
    if isinstance(value, datetime):
        return _iso_datetime(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")  # plain notation: "0.0000000000", not "0E-10"
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _parsed_json(value: str | None) -> object:
    return None if value is None else json.loads(value)


def _big_as_string(value: int | None) -> int | str | None:
    return str(value) if value is not None and abs(value) > SAFE_INTEGER else value


def _converter(field: pa.Field, big_integers: BigIntegers = "number",
               ) -> Callable[[Any], Any] | None:
    """The per-value conversion for ``field``; None where the Python value is JSON already."""
    if logical_type_of(field) == "json":
        return _parsed_json
    kind = field.type
    if pa.types.is_integer(kind):
        return _big_as_string if big_integers == "string" and kind.bit_width == 64 else None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) \
            or pa.types.is_boolean(kind) or pa.types.is_null(kind):
        return None
    if pa.types.is_floating(kind):
        return lambda v: None if v is None else _float(v)
    return lambda v: None if v is None else plain(v)


def documents(batch: pa.RecordBatch | pa.Table,
              big_integers: BigIntegers = "number") -> list[Document]:
    """Every row of ``batch`` as a JSON-ready dict, columns in schema order."""
    names = batch.schema.names
    columns = []
    for i, field in enumerate(batch.schema):
        values = batch.column(i).to_pylist()
        convert = _converter(field, big_integers)
        columns.append([convert(v) for v in values] if convert else values)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def iter_json_lines(batch: pa.RecordBatch | pa.Table,
                    big_integers: BigIntegers = "number") -> Iterator[bytes]:
    """Each row of ``batch`` as one line of compact JSON (UTF-8, ending in ``\\n``)."""
    for document in documents(batch, big_integers):
        yield dumps(document) + b"\n"


def dumps(document: object) -> bytes:
    """Compact UTF-8 JSON; NaN is refused (use :func:`documents` first)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
encode_string = json.encoder.encode_basestring  # C-accelerated, the ensure_ascii=False form
_NULL = pa.scalar("null", pa.large_string())
_EMPTY = pa.scalar("", pa.large_string())
_POINT_ZERO = pa.scalar(".0", pa.large_string())
_QUOTE = pa.scalar('"', pa.large_string())
_Z = pa.scalar("Z", pa.large_string())
_NEEDS_ESCAPE = r'["\\\x00-\x1f]'
_UTC_NAMES = (None, "UTC", "utc", "Etc/UTC", "+00:00", "Z")


def json_lines(batch: pa.RecordBatch | pa.Table, big_integers: BigIntegers = "number") -> bytes:
    """Every row of ``batch`` as a line of compact JSON: the documents of :func:`documents`,
    serialised a column at a time (integers, booleans and floats by Arrow kernels, strings by
    the C string encoder) and joined by Arrow, several times faster than a row at a time."""
    if batch.num_rows == 0:
        return b""
    parts: list[pa.Scalar | pa.Array] = []
    for i, field in enumerate(batch.schema):
        key = encode_string(field.name) + ":"
        parts.append(pa.scalar(("{" if i == 0 else ",") + key, pa.large_string()))
        parts.append(json_values(_as_array(batch.column(i)), field, big_integers))
    parts.append(pa.scalar("}\n", pa.large_string()))
    lines = pc.binary_join_element_wise(*parts, _EMPTY)
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    offset_buffer, data = lines.buffers()[1], lines.buffers()[2]
    assert offset_buffer is not None and data is not None
    offsets = np.frombuffer(offset_buffer, dtype=np.int64)
    offsets = offsets[lines.offset:lines.offset + len(lines) + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    return data.slice(start, end - start).to_pybytes()


def _iso_timestamps(column: pa.Array, *, utc: bool) -> pa.Array:
    """As ``datetime.isoformat`` (no fraction when it is zero), ``Z`` for UTC; numpy formats
    several times faster than Arrow's strftime or cast."""
    micros = column.cast(pa.timestamp("us", column.type.tz)).cast(pa.int64()).fill_null(0)
    text = np.datetime_as_string(micros.to_numpy().astype("datetime64[us]"), unit="us")
    iso = pc.replace_substring(pa.array(text, pa.large_string()), ".000000", "")
    if utc:
        iso = pc.binary_join_element_wise(iso, _Z, _EMPTY)
    return pc.if_else(column.is_null(), pa.scalar(None, pa.large_string()), iso)


def _json_strings(column: pa.Array) -> pa.Array:
    """Strings as JSON strings: quoted by Arrow; the few that need escapes (quote, backslash,
    control characters) escaped by the C encoder."""
    text = column.cast(pa.large_string())
    escape = pc.fill_null(pc.match_substring_regex(text, _NEEDS_ESCAPE), False)
    quoted = pc.binary_join_element_wise(_QUOTE, text, _QUOTE, _EMPTY)
    if pc.any(escape).as_py():
        escaped = pa.array([encode_string(v) for v in text.filter(escape).to_pylist()],
                           pa.large_string())
        quoted = pc.replace_with_mask(quoted, escape, escaped)
    return pc.fill_null(quoted, _NULL)


def _quoted(text: pa.Array) -> pa.Array:
    """ISO text (no characters JSON escapes) as JSON strings; null as ``null``."""
    quoted = pc.binary_join_element_wise(_QUOTE, text.cast(pa.large_string()), _QUOTE, _EMPTY)
    return pc.fill_null(quoted, _NULL)


def _as_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def json_values(column: pa.Array, field: pa.Field,
                big_integers: BigIntegers = "number") -> pa.Array:
    """``column`` as JSON text, one value a row, ``null`` for nulls (large_string)."""
    kind = field.type
    if logical_type_of(field) is None:
        if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
            text = pc.cast(column, pa.large_string())
            if big_integers == "string" and pa.types.is_integer(kind) and kind.bit_width == 64:
                big = pc.greater(column, pa.scalar(SAFE_INTEGER, kind))
                if pa.types.is_signed_integer(kind):
                    big = pc.or_(big, pc.less(column, pa.scalar(-SAFE_INTEGER, kind)))
                text = pc.if_else(big, _quoted(text), text)
            return pc.fill_null(text, _NULL)
        if pa.types.is_floating(kind):
            text = pc.cast(column, pa.large_string())
            # Arrow writes 3.0 as "3": keep it a float for readers that infer types.
            whole = pc.invert(pc.match_substring_regex(text, r"[.eE]"))
            text = pc.if_else(whole, pc.binary_join_element_wise(text, _POINT_ZERO, _EMPTY), text)
            return pc.fill_null(pc.if_else(pc.is_finite(column), text, None), _NULL)
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return _json_strings(column)
        if pa.types.is_null(kind):
            return pa.array(["null"] * len(column), pa.large_string())
        if pa.types.is_date32(kind):
            return _quoted(pc.cast(column, pa.large_string()))
        if pa.types.is_timestamp(kind) and kind.unit != "ns" and kind.tz in _UTC_NAMES:
            return _quoted(_iso_timestamps(column, utc=kind.tz is not None))
    # the rest a value at a time, as documents() gives it: decimals among them, whose text
    # Arrow's cast writes in scientific notation at times ("0E-10")
    convert = _converter(field, big_integers) or (lambda v: v)
    return pa.array([_ENCODER.encode(convert(v)) for v in column.to_pylist()], pa.large_string())
