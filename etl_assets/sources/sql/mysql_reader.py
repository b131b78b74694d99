"""MySQL's and MariaDB's fast reader: connectorx (the only Arrow-native reader of the MySQL
protocol on PyPI; about 7x pymysql through SQLAlchemy, docs/extraction.md).

connectorx reads every DECIMAL as decimal(38,10) through a 28-digit type, so decimals are
selected as their text and cast back to the column's own precision and scale; types it would
change (TIME beyond 24 h, BIT, YEAR, SET) send the table to the generic path.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from etl_assets.arrow_types import logical_type_of
from etl_assets.connections import sqlalchemy_url
from etl_assets.sources.sql.connectorx_reader import ConnectorxReader, carried_as_is

_EXACT_TEXT = (sa.String, sa.Enum)
_CHANGED = (mysql.SET, mysql.YEAR, mysql.BIT, sa.Time)


class MySqlReader(ConnectorxReader):
    """A MySQL or MariaDB table through connectorx (``connectorx-mysql``)."""

    name = "connectorx-mysql"

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
        if isinstance(sql_type, _CHANGED):
            return None
        if pa.types.is_decimal(arrow) or logical_type_of(field) == "numeric":
            return f"CAST({quoted} AS CHAR)"
        if logical_type_of(field) == "json" or (pa.types.is_string(arrow)
                                                and isinstance(sql_type, _EXACT_TEXT)):
            return quoted
        return quoted if carried_as_is(arrow) else None
