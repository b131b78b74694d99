"""Opening a MySQL/MariaDB session for the sink: pymysql from the sink's SQLAlchemy URL (its
host, port, user, database, ssl and charset parameters, read by SQLAlchemy's own pymysql
dialect), with LOCAL INFILE allowed, UTC, utf8mb4 and a strict sql_mode, so a value the
table cannot hold fails instead of being silently truncated."""

from __future__ import annotations

from typing import Any

import pymysql
from sqlalchemy.dialects.mysql.pymysql import MySQLDialect_pymysql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from etl_assets.errors import ConfigurationError
from etl_assets.secrets import mask_url

STRICT_SQL_MODE = ("STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
                   "NO_ENGINE_SUBSTITUTION")
"""The session's sql_mode: modes MySQL 8 and MariaDB both know (no NO_AUTO_CREATE_USER)."""

LOCAL_INFILE_REFUSED = {1148, 3948, 2068, 4166}
"""Error codes of a refused LOAD DATA LOCAL: MySQL 5.7 and older MariaDB, MySQL 8, the
client, MariaDB 10.6+."""


def connect_arguments(url: str, owner: str) -> dict[str, Any]:
    """pymysql's keyword arguments for ``url`` (``mysql://``, ``mysql+pymysql://``,
    ``mariadb://``...); a URL of another database is refused naming ``owner``."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError(f"{owner}: {mask_url(url)} is not a database URL") from None
    if parsed.get_backend_name() not in ("mysql", "mariadb"):
        raise ConfigurationError(f"{owner}: {mask_url(url)} is not a MySQL/MariaDB URL "
                                 f"(mysql+pymysql://user@host:3306/database)")
    _, kwargs = MySQLDialect_pymysql().create_connect_args(
        parsed.set(drivername="mysql+pymysql"))
    arguments = dict(kwargs)
    arguments.setdefault("charset", "utf8mb4")
    return arguments


def url_database(url: str) -> str | None:
    """The database a URL names (None: none)."""
    return make_url(url).database


def open_session(arguments: dict[str, Any], *,
                 connect_timeout: int = 30) -> pymysql.connections.Connection:
    """A new connection (autocommit off) with the sink's session settings; LOCAL INFILE
    allowed unless the URL says ``local_infile=0``."""
    return pymysql.connect(
        **{"local_infile": True, **arguments}, autocommit=False,
        connect_timeout=connect_timeout,
        init_command=f"SET SESSION sql_mode = '{STRICT_SQL_MODE}', time_zone = '+00:00'")
