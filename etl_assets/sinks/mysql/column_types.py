"""Arrow types -> MySQL/MariaDB column types, for tables created from the data's types.

Text is utf8mb4 with a binary collation (keys compare as PostgreSQL's do: 'a' and 'A' are
two keys); timestamps are DATETIME(6) holding UTC (an aware source's instants; a naive
source's values as they are); unbounded text and bytes are LONGTEXT / LONGBLOB, but key
columns, which an index must hold, are VARCHAR / VARBINARY.
"""

from __future__ import annotations

import pyarrow as pa

from etl_assets.arrow_types import logical_type_of
from etl_assets.errors import DataError

TABLE_OPTIONS = "DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
"""What a table created from the data's types is made with (ENGINE: the server's default)."""

KEY_BYTES = 3072
"""The longest index key InnoDB takes (bytes); string key columns share it."""

DECIMAL_MAX_PRECISION = 65
DECIMAL_MAX_SCALE = 30

_SIMPLE: dict[pa.DataType, str] = {
    pa.bool_(): "BOOLEAN",
    pa.int8(): "TINYINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INT",
    pa.int64(): "BIGINT",
    pa.uint8(): "TINYINT UNSIGNED",
    pa.uint16(): "SMALLINT UNSIGNED",
    pa.uint32(): "INT UNSIGNED",
    pa.uint64(): "BIGINT UNSIGNED",
    pa.float16(): "FLOAT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.date32(): "DATE",
    pa.date64(): "DATE",
    pa.null(): "LONGTEXT",
}
_LOGICAL = {"json": "JSON", "uuid": "CHAR(36)",
            "numeric": f"DECIMAL({DECIMAL_MAX_PRECISION},{DECIMAL_MAX_SCALE})"}


class UnsupportedType(DataError, TypeError):
    """An Arrow type with no MySQL column type that holds it."""


def mysql_type(field: pa.Field, *, key_chars: int | None = None) -> str:
    """The MySQL type that holds ``field``'s values; ``key_chars``: the field is a key
    column, a string one of at most that many characters."""
    logical = logical_type_of(field)
    if logical in _LOGICAL:
        return _LOGICAL[logical]
    arrow = field.type
    if pa.types.is_dictionary(arrow):
        return mysql_type(pa.field(field.name, arrow.value_type), key_chars=key_chars)
    if arrow in _SIMPLE:
        return _SIMPLE[arrow]
    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow) \
            or pa.types.is_string_view(arrow):
        return f"VARCHAR({key_chars})" if key_chars else "LONGTEXT"
    if pa.types.is_binary(arrow) or pa.types.is_large_binary(arrow) \
            or pa.types.is_fixed_size_binary(arrow):
        return f"VARBINARY({key_chars})" if key_chars else "LONGBLOB"
    if pa.types.is_timestamp(arrow):
        return "DATETIME(6)"
    if pa.types.is_time(arrow) or pa.types.is_duration(arrow):
        return "TIME(6)"
    if pa.types.is_decimal(arrow):
        if arrow.precision > DECIMAL_MAX_PRECISION or arrow.scale > DECIMAL_MAX_SCALE \
                or arrow.scale < 0:
            raise UnsupportedType(
                f"column {field.name}: {arrow} does not fit MySQL's DECIMAL (at most "
                f"{DECIMAL_MAX_PRECISION} digits, {DECIMAL_MAX_SCALE} after the point): "
                f"declare the column (table_definition) or cast it in the sink's transform")
        return f"DECIMAL({arrow.precision},{arrow.scale})"
    if pa.types.is_list(arrow) or pa.types.is_large_list(arrow) or pa.types.is_struct(arrow) \
            or pa.types.is_map(arrow):
        return "JSON"
    raise UnsupportedType(f"column {field.name}: no MySQL type for Arrow {arrow}")


def key_chars(schema: pa.Schema, primary_key: list[str]) -> int:
    """Characters each string key column gets: InnoDB's key length shared among them (utf8mb4:
    4 bytes a character), at most 255."""
    strings = sum(1 for k in primary_key if k in schema.names
                  and mysql_type(schema.field(k), key_chars=1).startswith("VAR"))
    return min(255, KEY_BYTES // 4 // max(strings, 1))
