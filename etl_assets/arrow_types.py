"""Source column types (SQLAlchemy) -> Arrow types.

Arrow is the lingua franca between stages. Where Arrow has no exact type, the value travels as
a string and the field's metadata says what it is (``etl_assets.logical_type``: ``json``,
``uuid`` or ``numeric``), so sinks can create the right target type.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.sql import sqltypes

LOGICAL_TYPE = b"etl_assets.logical_type"
MAX_DECIMAL128_PRECISION = 38
MAX_DECIMAL256_PRECISION = 76


def logical_field(name: str, logical_type: str, nullable: bool = True) -> pa.Field:
    """A string field that carries ``logical_type`` (json, uuid, numeric) in its metadata."""
    return pa.field(name, pa.string(), nullable, metadata={LOGICAL_TYPE: logical_type.encode()})


def logical_type_of(field: pa.Field) -> str | None:
    """The ``etl_assets.logical_type`` of ``field``, if any."""
    if field.metadata and LOGICAL_TYPE in field.metadata:
        return field.metadata[LOGICAL_TYPE].decode()
    return None


def _integer_type(sql_type: sa.types.TypeEngine[Any], dialect: str) -> pa.DataType:
    unsigned = bool(getattr(sql_type, "unsigned", False))
    if isinstance(sql_type, sa.BigInteger) or dialect == "sqlite":
        return pa.uint64() if unsigned else pa.int64()
    if isinstance(sql_type, sa.SmallInteger):
        return pa.int32() if unsigned else pa.int16()
    return pa.int64() if unsigned else pa.int32()


def _numeric_field(name: str, sql_type: sa.Numeric[Any], nullable: bool) -> pa.Field:
    precision, scale = sql_type.precision, sql_type.scale
    if not sql_type.asdecimal:
        return pa.field(name, pa.float64(), nullable)
    if precision is None or precision > MAX_DECIMAL256_PRECISION:
        return logical_field(name, "numeric", nullable)  # unbounded: exact as text
    decimal = pa.decimal128 if precision <= MAX_DECIMAL128_PRECISION else pa.decimal256
    return pa.field(name, decimal(precision, scale or 0), nullable)


def is_tinyint1(sql_type: sa.types.TypeEngine[Any]) -> bool:
    """MySQL's TINYINT(1), which is what BOOLEAN is there."""
    return isinstance(sql_type, mysql.TINYINT) and getattr(sql_type, "display_width", None) == 1


def arrow_field(column: sa.Column[Any], dialect: str,
                tinyint1_as_boolean: bool = False) -> pa.Field:
    """The Arrow field for a reflected column of a ``dialect`` database (MySQL's TINYINT(1)
    a boolean with ``tinyint1_as_boolean``)."""
    sql_type, name, nullable = column.type, column.name, bool(column.nullable)
    if isinstance(sql_type, sa.Boolean) or (tinyint1_as_boolean and is_tinyint1(sql_type)):
        arrow: pa.DataType = pa.bool_()
    elif isinstance(sql_type, mysql.YEAR):
        arrow = pa.int16()
    elif isinstance(sql_type, mysql.BIT):  # up to 64 bits, as the unsigned number they spell
        arrow = pa.uint64()
    elif isinstance(sql_type, sa.Integer):
        arrow = _integer_type(sql_type, dialect)
    elif isinstance(sql_type, sa.Float):
        arrow = pa.float32() if isinstance(sql_type, sa.REAL) else pa.float64()
    elif isinstance(sql_type, sa.Numeric):
        return _numeric_field(name, sql_type, nullable)
    elif isinstance(sql_type, sa.DateTime):
        arrow = pa.timestamp("us", tz="UTC" if sql_type.timezone else None)
    elif isinstance(sql_type, sa.Date):
        arrow = pa.date32()
    elif isinstance(sql_type, sa.Time) and dialect in ("mysql", "mariadb"):
        arrow = pa.duration("us")  # MySQL's TIME spans -838:59:59 to 838:59:59
    elif isinstance(sql_type, sa.Time):  # a time with a zone has no Arrow type: text
        arrow = pa.string() if sql_type.timezone else pa.time64("us")
    elif isinstance(sql_type, sqltypes._AbstractInterval):
        arrow = pa.duration("us")
    elif isinstance(sql_type, sa.JSON | postgresql.JSONB | postgresql.JSON):
        return logical_field(name, "json", nullable)
    elif isinstance(sql_type, sa.Uuid | postgresql.UUID):
        return logical_field(name, "uuid", nullable)
    elif isinstance(sql_type, sa.ARRAY):
        inner = arrow_field(sa.Column(name, sql_type.item_type), dialect)
        arrow = pa.list_(inner.type)
    elif isinstance(sql_type, sa.LargeBinary | sqltypes._Binary):
        arrow = pa.binary()
    else:  # String, Text, Enum and whatever else the driver returns as text
        arrow = pa.string()
    return pa.field(name, arrow, nullable)


def _json_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _text(value: object) -> str | None:
    return value if value is None or isinstance(value, str) else str(value)


def _to_bytes(value: object) -> object:
    return bytes(value) if isinstance(value, memoryview | bytearray) else value


def _boolean(value: object) -> object:
    """A boolean, or a MySQL TINYINT(1)'s 0 or 1 as one (any other number is left as it is,
    for ``pa.array`` to refuse rather than make it true)."""
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return value == 1
    return value


def _bits(value: object) -> object:
    """MySQL's BIT(n), which the driver gives as big-endian bytes, as its number."""
    return int.from_bytes(value, "big") if isinstance(value, bytes | bytearray) else value


def value_converter(field: pa.Field) -> Callable[[object], object] | None:
    """A per-value function that makes a driver's value acceptable to ``pa.array``, or None
    where the driver's values go in as they are (see :func:`fallback_converter`)."""
    logical = logical_type_of(field)
    if logical == "json":
        return _json_text
    if logical in ("uuid", "numeric"):
        return _text
    if pa.types.is_binary(field.type):
        return _to_bytes
    if pa.types.is_boolean(field.type):
        return _boolean
    if pa.types.is_uint64(field.type):
        return _bits
    return None


def fallback_converter(field: pa.Field) -> Callable[[object], object]:
    """What to try when a driver's values did not go in as they are (a driver that returns an
    enum object for a text column, say): text for text columns, bytes for binary ones."""
    return _to_bytes if pa.types.is_binary(field.type) else _text


def infer_field(name: str, values: list[Any]) -> pa.Field:
    """The Arrow field for a query's column, from the values of its first batch."""
    sample = next((v for v in values if v is not None), None)
    if isinstance(sample, dict | list):
        return logical_field(name, "json")
    if isinstance(sample, uuid.UUID):
        return logical_field(name, "uuid")
    if isinstance(sample, Decimal):
        return logical_field(name, "numeric")
    if sample is None:
        return pa.field(name, pa.string())  # an all-NULL first batch: text is the safe guess
    converter = _to_bytes if isinstance(sample, memoryview | bytearray) else None
    data = [converter(v) for v in values] if converter else values
    arrow = pa.array(data).type
    if pa.types.is_timestamp(arrow):  # one unit, and every zone read as UTC
        arrow = pa.timestamp("us", tz="UTC" if arrow.tz else None)
    return pa.field(name, arrow)
