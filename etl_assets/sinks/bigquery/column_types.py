"""Arrow -> BigQuery: the table schema a sink creates, and batches in the shape a parquet load
job puts into those columns without loss."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from google.cloud.bigquery import SchemaField

from etl_assets.arrow_types import logical_type_of
from etl_assets.errors import DataError
from etl_assets.json_documents import json_values

# NUMERIC holds 38 digits with 9 after the point; wider decimals need BIGNUMERIC (76.76).
_NUMERIC_SCALE, _NUMERIC_INTEGER_DIGITS = 9, 29
_BIGNUMERIC = pa.decimal256(76, 38)


class UnsupportedBigQueryType(DataError, TypeError):
    """An Arrow type no BigQuery column holds."""


def bigquery_type(field: pa.Field) -> str:
    """The BigQuery type that holds ``field``'s values without loss."""
    logical = logical_type_of(field)
    if logical == "json":
        return "JSON"
    if logical == "numeric":
        return "BIGNUMERIC"
    if logical == "uuid":
        return "STRING"
    kind = field.type
    if pa.types.is_dictionary(kind):
        return bigquery_type(pa.field(field.name, kind.value_type))
    if pa.types.is_boolean(kind):
        return "BOOL"
    if pa.types.is_unsigned_integer(kind) and kind.bit_width == 64:
        return "NUMERIC"  # above INT64's range
    if pa.types.is_integer(kind):
        return "INT64"
    if pa.types.is_floating(kind):
        return "FLOAT64"
    if pa.types.is_decimal(kind):
        fits = kind.scale <= _NUMERIC_SCALE and kind.precision - kind.scale <= \
            _NUMERIC_INTEGER_DIGITS
        return "NUMERIC" if fits else "BIGNUMERIC"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or \
            pa.types.is_string_view(kind) or pa.types.is_null(kind):
        return "STRING"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "BYTES"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMP" if kind.tz else "DATETIME"
    if pa.types.is_date(kind):
        return "DATE"
    if pa.types.is_time(kind):
        return "TIME"
    if pa.types.is_duration(kind):
        return "INT64"  # microseconds
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_struct(kind) \
            or pa.types.is_map(kind):
        return "JSON"
    raise UnsupportedBigQueryType(f"column {field.name}: no BigQuery type for Arrow {kind}")


def bigquery_schema(schema: pa.Schema, required: list[str] | None = None) -> list[SchemaField]:
    """One NULLABLE column per field (``required`` ones REQUIRED, e.g. the primary key)."""
    required = required or []
    return [SchemaField(f.name, bigquery_type(f),
                        mode="REQUIRED" if f.name in required else "NULLABLE")
            for f in schema]


def loadable(table: pa.Table) -> pa.Table:
    """``table`` with each column in the Arrow type a parquet load puts into its BigQuery
    column as the same value: decimals at BigQuery's scale, unbounded numerics parsed,
    durations as microseconds, nested values as JSON text, dictionaries decoded."""
    columns, fields = [], []
    for field, column in zip(table.schema, table.columns, strict=True):
        column, field = _loadable_column(column.combine_chunks(), field)
        columns.append(column)
        fields.append(field)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _loadable_column(column: pa.Array, field: pa.Field) -> tuple[pa.Array, pa.Field]:
    kind = field.type
    target = bigquery_type(field)
    if pa.types.is_dictionary(kind):
        return _loadable_column(column.dictionary_decode(), pa.field(field.name, kind.value_type))
    if logical_type_of(field) == "numeric":
        try:
            return _cast(column, field, _BIGNUMERIC)
        except pa.ArrowInvalid as exc:
            raise ValueError(f"column {field.name}: a value does not fit BIGNUMERIC "
                             f"(76 digits, 38 after the point): {exc}") from None
    if pa.types.is_decimal(kind):
        wanted = pa.decimal128(38, 9) if target == "NUMERIC" else _BIGNUMERIC
        return _cast(column, field, wanted)
    if pa.types.is_unsigned_integer(kind) and kind.bit_width == 64:
        return _cast(column, field, pa.decimal128(38, 9))
    if pa.types.is_timestamp(kind) and kind.unit == "ns":  # BigQuery keeps microseconds
        return _cast(column, field, pa.timestamp("us", kind.tz), safe=False)
    if pa.types.is_duration(kind):
        micros = pc.cast(column.cast(pa.duration("us")), pa.int64())
        return micros, pa.field(field.name, pa.int64(), field.nullable)
    if target == "JSON" and logical_type_of(field) is None:
        text = pc.if_else(column.is_null(), pa.scalar(None, pa.large_string()),
                          json_values(column, field))
        return text.cast(pa.string()), pa.field(field.name, pa.string(), field.nullable)
    if pa.types.is_null(kind):
        return column.cast(pa.string()), pa.field(field.name, pa.string())
    return column, field


def _cast(column: pa.Array, field: pa.Field, kind: pa.DataType,
          safe: bool = True) -> tuple[pa.Array, pa.Field]:
    return column.cast(kind, safe=safe), pa.field(field.name, kind, field.nullable)
