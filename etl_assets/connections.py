"""Turning a spec's ``connection`` into a URL, without ever printing a secret."""

from __future__ import annotations

import os

from dagster import EnvVar
from sqlalchemy.engine import make_url

from etl_assets.embedded_postgres import embedded_postgres_url
from etl_assets.home import expand_vars
from etl_assets.spec import ConnectionSpec


class UnresolvedConnection(RuntimeError):
    """A connection that cannot be resolved (an env var unset, a bad URL)."""


def resolve_url(spec: ConnectionSpec, owner: str) -> str:
    """The SQLAlchemy URL ``spec`` points at now; ``owner`` names the pipeline in errors."""
    if spec.env:
        value = os.environ.get(spec.env)
        if value:
            return value
        if not spec.embedded:
            raise UnresolvedConnection(f"{owner}: environment variable {spec.env} is not set")
    if spec.url:
        try:
            return expand_vars(spec.url)
        except KeyError as exc:
            raise UnresolvedConnection(f"{owner}: {exc.args[0]}") from None
    return embedded_postgres_url(spec.database)


def dagster_url_value(spec: ConnectionSpec, owner: str) -> str | EnvVar:
    """The value to give a Dagster resource's URL field.

    An env-held URL is passed as ``EnvVar`` so that Dagster resolves it in the run worker and
    never shows it in the UI; the embedded server is started only when a run needs it.
    """
    if spec.env and (os.environ.get(spec.env) or not spec.embedded):
        return EnvVar(spec.env)
    if spec.url:
        return resolve_url(spec, owner)
    return ""  # empty: the resource starts the embedded server


def redacted(url: str) -> str:
    """``url`` with its password masked, for logs and errors."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL we can parse: show only its scheme
        return url.split("://", 1)[0] + "://***"


def sqlalchemy_url(url: str) -> str:
    """A URL SQLAlchemy opens with the drivers we ship (psycopg 3, PyMySQL)."""
    parsed = make_url(url)
    driver = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
              "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}.get(parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False) if driver else url


def libpq_url(url: str) -> str:
    """A URL psycopg opens: a SQLAlchemy ``postgresql+driver://`` URL without the driver."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise UnresolvedConnection(f"not a PostgreSQL URL: {redacted(url)}")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)
