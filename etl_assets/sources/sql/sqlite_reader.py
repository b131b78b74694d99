"""SQLite's fast reader: connectorx, which types each column by its declared type.

ADBC's SQLite driver reads faster but types each column by the values of its first batch, so
a column whose first rows are NULL fails later (docs/extraction.md). Timestamps compare as the
text SQLAlchemy stores them in. NUMERIC(p, s) values are stored as floats: each becomes the
decimal SQLAlchemy makes of it (the float rounded to ``s`` places). TIME and zoned timestamps
go to the generic path.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import sqlalchemy as sa

from etl_assets.arrow_types import logical_type_of
from etl_assets.connections import sqlalchemy_url
from etl_assets.sources.sql.connectorx_reader import ConnectorxReader, carried_as_is


class SqliteReader(ConnectorxReader):
    """A SQLite table of a database file through connectorx (``connectorx-sqlite``)."""

    name = "connectorx-sqlite"

    @classmethod
    def driver_url(cls, source_url: str) -> str | None:
        url = sa.make_url(sqlalchemy_url(source_url))
        database = url.database
        if not database or database == ":memory:" or url.query:
            return None  # in memory: another connection sees another database
        return "sqlite://" + quote(str(Path(database).resolve()))

    @classmethod
    def select_expression(cls, column: sa.Column[Any], field: pa.Field,
                          quoted: str) -> str | None:
        arrow, sql_type = field.type, column.type
        if logical_type_of(field) == "json":
            return quoted
        if pa.types.is_decimal(arrow):
            return quoted
        if pa.types.is_string(arrow):
            return quoted if isinstance(sql_type, sa.String) else None
        return quoted if carried_as_is(arrow) else None

    @classmethod
    def value_converter(cls, field: pa.Field) -> Callable[[pa.Array], pa.Array] | None:
        if not pa.types.is_decimal(field.type):
            return None
        scale = field.type.scale

        def to_decimal(floats: pa.Array) -> pa.Array:
            # as SQLAlchemy's SQLite Numeric: the float to ``scale`` places, as text
            return pa.array([None if value is None else Decimal(f"{value:.{scale}f}")
                             for value in floats.to_pylist()], field.type)
        return to_decimal
