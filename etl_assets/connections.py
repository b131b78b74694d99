"""Turning a spec's ``connection`` into a URL, without ever printing a secret.

A connection is a SQLAlchemy URL or, for PostgreSQL, a libpq keyword string
(``host=.. dbname=.. user=.. password=..``); secrets reach it only through ``env``. Every secret
of a URL resolved here is remembered by :mod:`etl_assets.secrets`, so it is masked wherever it
shows up later (a driver's error, a server's answer).
"""

from __future__ import annotations

import os

from sqlalchemy.engine import URL, make_url

from etl_assets.embedded_postgres import embedded_postgres_url
from etl_assets.errors import ConfigurationError
from etl_assets.home import expand_vars
from etl_assets.secrets import mask_url, remember_credential, remember_secrets_in, secret_parts
from etl_assets.settings import ConnectionSpec


class UnresolvedConnection(ConfigurationError):
    """A connection that cannot be resolved (an env var unset, a bad URL)."""


def resolve_url(spec: ConnectionSpec, owner: str) -> str:
    """The URL (or libpq keyword string) ``spec`` points at now; ``owner`` names the pipeline
    in errors."""
    if spec.env:
        value = os.environ.get(spec.env)
        if value:
            remember_secrets_in(value)
            return value
        if not spec.embedded:
            raise UnresolvedConnection(f"{owner}: environment variable {spec.env} is not set")
    if spec.url:
        return expand_url(spec.url, owner)
    return embedded_postgres_url(spec.database)


def values_from_env(mapping: dict[str, str], what: str, owner: str,
                    error: type[Exception] = UnresolvedConnection) -> dict[str, str]:
    """``{name: value of its env var}`` for ``mapping`` (``{name: VAR}``: headers, query
    parameters), each value remembered as a secret (masked wherever it shows up); an unset
    variable raises ``error`` naming ``owner``, the ``what`` and the variable."""
    values = {}
    for name, variable in mapping.items():
        value = os.environ.get(variable)
        if value is None:
            raise error(f"{owner}: {what} {name} comes from ${variable}, which is not set")
        remember_credential(value)
        values[name] = value
    return values


def expand_url(url: str, owner: str, field: str = "connection.url",
               advice: str = "put the whole URL in an environment variable and name it with "
                             "`env` instead of `url`") -> str:
    """A spec's ``url`` with ``${VAR}`` expanded; refused when a variable brought a secret
    into it (``url`` values are shown and stored: secrets go through ``env``, or what
    ``advice`` says for ``field``)."""
    try:
        value = expand_vars(url)
    except KeyError as exc:
        raise UnresolvedConnection(f"{owner}: {exc.args[0]}") from None
    remember_secrets_in(value)
    found = secret_parts(value)
    if found:
        raise UnresolvedConnection(
            f"{owner}: field '{field}' expands to a URL holding a secret "
            f"({', '.join(found)}): {advice}")
    return value


def is_keyword_string(url: str) -> bool:
    """Whether ``url`` is a libpq keyword string (``host=h dbname=d``), not a URL."""
    return "://" not in url and "=" in url


def _keywords(conninfo: str, owner: str = "") -> dict[str, str]:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    except psycopg.ProgrammingError:
        # psycopg's message quotes the text near the fault, which may be a password
        raise UnresolvedConnection(
            f"{owner + ': ' if owner else ''}not a valid libpq keyword string (key=value "
            f"pairs; a value with spaces or quotes goes in single quotes, with \\' and \\\\ "
            f"inside)") from None


def keyword_string_url(conninfo: str, owner: str = "") -> str:
    """A libpq keyword string as a SQLAlchemy ``postgresql+psycopg`` URL."""
    keywords = _keywords(conninfo, owner)
    user, password = keywords.pop("user", None), keywords.pop("password", None)
    database = keywords.pop("dbname", None)
    host, port = keywords.get("host", ""), keywords.get("port", "")
    simple = host and "," not in host and not host.startswith("/") and port.isdigit()
    if simple or (host and not port and "," not in host and not host.startswith("/")):
        keywords.pop("host")
        keywords.pop("port", None)
    else:
        host, port = "", ""
    return URL.create("postgresql+psycopg", username=user, password=password,
                      host=host or None, port=int(port) if port else None, database=database,
                      query=keywords).render_as_string(hide_password=False)


def sqlalchemy_url(url: str, owner: str = "") -> str:
    """A URL SQLAlchemy opens with the drivers we ship (psycopg 3, PyMySQL); a libpq keyword
    string becomes a ``postgresql+psycopg`` URL. ``owner`` names the pipeline in errors."""
    if is_keyword_string(url):
        return keyword_string_url(url, owner)
    parsed = make_url(url)
    driver = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
              "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}.get(parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False) if driver else url


def libpq_url(url: str, owner: str = "") -> str:
    """What psycopg opens: a SQLAlchemy ``postgresql+driver://`` URL without the driver, or a
    libpq keyword string as it is. ``owner`` names the pipeline in errors."""
    if is_keyword_string(url):
        _keywords(url, owner)  # a malformed one fails here, with a message showing no secret
        return url
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise UnresolvedConnection(f"{owner + ': ' if owner else ''}not a PostgreSQL URL: "
                                   f"{mask_url(url)}")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


# SQLAlchemy dialect names -> the kind Dagster's UI shows an icon for
_KIND_OF_DIALECT = {"postgresql": "postgres", "mariadb": "mariadb", "mysql": "mysql",
                    "sqlite": "sqlite", "mssql": "sqlserver", "oracle": "oracle",
                    "duckdb": "duckdb", "snowflake": "snowflake", "bigquery": "bigquery"}


def database_kind(spec: ConnectionSpec) -> str:
    """The kind of database ``spec`` points at, from its URL's scheme alone (``sql`` when
    the URL is not known here); the embedded server is ``postgres``."""
    text = os.environ.get(spec.env, "") if spec.env else ""
    text = text or spec.url or ""
    if not text:
        return "postgres" if spec.embedded else "sql"
    scheme = text.split("://", 1)[0] if "://" in text else ""
    if not scheme:  # a libpq keyword string
        return "postgres"
    dialect = scheme.split("+", 1)[0].lower()
    return _KIND_OF_DIALECT.get(dialect, dialect)
