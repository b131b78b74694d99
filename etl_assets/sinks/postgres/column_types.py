"""Arrow types -> PostgreSQL column types, and Arrow columns -> text that COPY CSV reads."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.arrow_types import logical_type_of
from etl_assets.errors import DataError

_SIMPLE: dict[pa.DataType, str] = {
    pa.bool_(): "boolean",
    pa.int8(): "smallint",
    pa.int16(): "smallint",
    pa.int32(): "integer",
    pa.int64(): "bigint",
    pa.uint8(): "smallint",
    pa.uint16(): "integer",
    pa.uint32(): "bigint",
    pa.uint64(): "numeric(20,0)",
    pa.float16(): "real",
    pa.float32(): "real",
    pa.float64(): "double precision",
    pa.string(): "text",
    pa.large_string(): "text",
    pa.string_view(): "text",
    pa.binary(): "bytea",
    pa.large_binary(): "bytea",
    pa.date32(): "date",
    pa.date64(): "date",
    pa.null(): "text",
}
_LOGICAL = {"json": "jsonb", "uuid": "uuid", "numeric": "numeric"}


class UnsupportedType(DataError, TypeError):
    """An Arrow type with no PostgreSQL column type."""


def postgres_type(field: pa.Field) -> str:
    """The PostgreSQL type that holds ``field``'s values without loss."""
    logical = logical_type_of(field)
    if logical in _LOGICAL:
        return _LOGICAL[logical]
    arrow = field.type
    if arrow in _SIMPLE:
        return _SIMPLE[arrow]
    if pa.types.is_timestamp(arrow):
        return "timestamptz" if arrow.tz else "timestamp"
    if pa.types.is_decimal(arrow):
        return f"numeric({arrow.precision},{arrow.scale})"
    if pa.types.is_time(arrow):
        return "time"
    if pa.types.is_duration(arrow):
        return "interval"
    if pa.types.is_list(arrow) or pa.types.is_large_list(arrow):
        return postgres_type(pa.field(field.name, arrow.value_type)) + "[]"
    if pa.types.is_struct(arrow) or pa.types.is_map(arrow):
        return "jsonb"
    if pa.types.is_dictionary(arrow):
        return postgres_type(pa.field(field.name, arrow.value_type))
    raise UnsupportedType(f"column {field.name}: no PostgreSQL type for Arrow {arrow}")


def _array_literal(values: list[Any] | None) -> str | None:
    if values is None:
        return None
    items = []
    for value in values:
        if value is None:
            items.append("NULL")
        elif isinstance(value, list):
            items.append(_array_literal(value) or "NULL")
        else:
            text = str(value).replace("\\", "\\\\").replace('"', '\\"')
            items.append(f'"{text}"')
    return "{" + ",".join(items) + "}"


def csv_ready(column: pa.Array | pa.ChunkedArray, field: pa.Field) -> pa.Array | pa.ChunkedArray:
    """``column`` as something pyarrow's CSV writer writes in a form COPY reads back exactly."""
    arrow = field.type
    if pa.types.is_dictionary(arrow):
        return csv_ready(column.cast(arrow.value_type), pa.field(field.name, arrow.value_type))
    if pa.types.is_timestamp(arrow) and arrow.tz:
        # The UTC instant as text with "+00": ~14x faster than pyarrow writing zoned values
        # itself (it converts each value to the zone's local time, ~2.5 us a value).
        utc = pc.cast(column.cast(pa.timestamp(arrow.unit)), pa.string())
        return pc.binary_join_element_wise(utc, "+00", "")
    if pa.types.is_binary(arrow) or pa.types.is_large_binary(arrow):
        hexed = [None if v is None else "\\x" + v.hex() for v in column.to_pylist()]
        return pa.array(hexed, pa.string())
    if pa.types.is_duration(arrow):
        micros = pc.cast(column.cast(pa.duration("us")), pa.int64())
        return pc.binary_join_element_wise(pc.cast(micros, pa.string()), " microseconds", "")
    if pa.types.is_list(arrow) or pa.types.is_large_list(arrow):
        return pa.array([_array_literal(v) for v in column.to_pylist()], pa.string())
    if pa.types.is_struct(arrow) or pa.types.is_map(arrow):
        return pa.array([None if v is None else json.dumps(v, default=str)
                         for v in column.to_pylist()], pa.string())
    return column
