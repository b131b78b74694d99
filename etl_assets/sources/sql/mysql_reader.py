"""MySQL's and MariaDB's fast reader: connectorx (the only Arrow-native reader of the MySQL
protocol on PyPI; about 7x pymysql through SQLAlchemy, docs/extraction.md).

connectorx reads every DECIMAL as decimal(38,10) through a 28-digit type, so decimals are
selected as their text and cast back to the column's own precision and scale; TIME (which
spans ±838 hours) as its microseconds; BIT(n) comes as bytes, made its number here, and
TINYINT(1) as a boolean only when it holds 0 or 1. connectorx panics on a zero date: DATE,
DATETIME and TIMESTAMP are selected with zero dates as NULL and, last, ``col IS NULL`` each,
which tells the zero dates from the column's nulls here (counted, then dropped); the session
runs in UTC, so a TIMESTAMP comes as its UTC instant
(:mod:`etl_assets.sources.sql.mysql_dates`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from etl_assets.arrow_types import logical_type_of
from etl_assets.batches import StreamNotes
from etl_assets.connections import sqlalchemy_url
from etl_assets.sources.sql.connectorx_reader import ConnectorxReader, carried_as_is
from etl_assets.sources.sql.mysql_dates import UTC_SESSION, holds_dates, without_zero_date
from etl_assets.watermark import Bound

_EXACT_TEXT = (sa.String, sa.Enum)


class MySqlReader(ConnectorxReader):
    """A MySQL or MariaDB table through connectorx (``connectorx-mysql``)."""

    name = "connectorx-mysql"
    session = (UTC_SESSION,)

    def __init__(self, url: str, dialect: sa.Dialect, table: sa.Table, schema: pa.Schema,
                 cursor: str, select: list[str],
                 converters: dict[str, Callable[[pa.Array], pa.Array]]) -> None:
        super().__init__(url, dialect, table, schema, cursor, select, converters)
        # the columns whose zero dates are read as null, with `col IS NULL` each, selected last
        self._dated = [column.name for column in table.columns if holds_dates(column)]
        identifier = dialect.identifier_preparer.quote
        self._select = [*select, *(f"{identifier(name)} IS NULL" for name in self._dated)]

    @classmethod
    def driver_url(cls, source_url: str) -> str | None:
        url = sa.make_url(sqlalchemy_url(source_url))
        if url.query or not url.host:  # a socket, TLS or charset option: pymysql's only
            return None
        user = quote(url.username or "", safe="")
        password = f":{quote(url.password, safe='')}" if url.password else ""
        port = f":{url.port}" if url.port else ""
        return f"mysql://{user}{password}@{url.host}{port}/{quote(url.database or '')}"

    @classmethod
    def select_expression(cls, column: sa.Column[Any], field: pa.Field,
                          quoted: str) -> str | None:
        arrow, sql_type = field.type, column.type
        if holds_dates(column) and (pa.types.is_date32(arrow) or pa.types.is_timestamp(arrow)):
            # a zero date as null (counted in noted); a TIMESTAMP (tz UTC) comes as the naive
            # UTC time of the session, which the cast makes the instant
            return without_zero_date(quoted)
        if pa.types.is_duration(arrow) and isinstance(sql_type, sa.Time):
            return f"CAST(TIME_TO_SEC({quoted}) * 1000000 AS SIGNED)"
        if pa.types.is_uint64(arrow) and isinstance(sql_type, mysql.BIT):
            return quoted
        if pa.types.is_decimal(arrow) or logical_type_of(field) == "numeric":
            return f"CAST({quoted} AS CHAR)"
        if logical_type_of(field) == "json" or (pa.types.is_string(arrow)
                                                and isinstance(sql_type, _EXACT_TEXT)):
            return quoted
        return quoted if carried_as_is(arrow) else None

    def noted(self, batch: pa.RecordBatch, notes: StreamNotes) -> pa.RecordBatch:
        """Counts each date column's zero dates (its nulls less the column's own, which its
        ``IS NULL`` column says) and drops the ``IS NULL`` columns."""
        columns = len(self.schema)
        for name, nulls in zip(self._dated, batch.columns[columns:], strict=True):
            read_as_null = batch.column(self.schema.get_field_index(name)).null_count
            notes.count_zero_dates(name, read_as_null - int(pc.sum(nulls).as_py() or 0))
        return batch.select(range(columns)) if self._dated else batch

    def literal(self, value: Bound) -> str:
        """An aware bound as the UTC time the session (in UTC) compares a TIMESTAMP with."""
        if isinstance(value, datetime) and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return super().literal(value)

    @classmethod
    def value_converter(cls, field: pa.Field) -> Callable[[pa.Array], pa.Array] | None:
        if pa.types.is_boolean(field.type):
            return _boolean
        if pa.types.is_uint64(field.type):
            return _bits
        return None


def _boolean(array: pa.Array) -> pa.Array:
    """TINYINT(1) (an integer array) as booleans; a value other than 0 or 1 is refused."""
    if pa.types.is_boolean(array.type):
        return array
    other = pc.and_(pc.not_equal(array, 0), pc.not_equal(array, 1))
    if pc.any(other).as_py():
        raise pa.ArrowInvalid("a TINYINT(1) read as a boolean holds a value other than 0 or "
                              "1 (tinyint1: integer reads it as a number)")
    return pc.cast(array, pa.bool_())


def _bits(array: pa.Array) -> pa.Array:
    """BIT(n) (big-endian bytes) as numbers; other unsigned integers as they are."""
    if not (pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type)):
        return array
    return pa.array([None if value is None else int.from_bytes(value, "big")
                     for value in array.to_pylist()], pa.uint64())
