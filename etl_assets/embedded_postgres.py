"""The embedded PostgreSQL server (``pgserver``) used when no target URL is configured."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from types import ModuleType

import psycopg
from psycopg import sql

from etl_assets.home import etl_home


def _pgserver() -> ModuleType:
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pgserver  # imported here: starting a server is the only reason to load it
    return pgserver


def default_data_dir() -> Path:
    return etl_home() / "pgdata"


def embedded_postgres_url(database: str = "etl_assets", data_dir: Path | None = None) -> str:
    """Start (or reuse) the embedded server and return a libpq URL to ``database``.

    The server keeps running after this process exits so that the webserver, the daemon and
    run workers share it; it listens only on a Unix socket. pgserver serialises concurrent
    starts with a lock of its own.
    """
    data_dir = data_dir or default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    server = _pgserver().get_server(data_dir, cleanup_mode=None)
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (database,)).fetchone()
        if not exists:
            # another process may create it in the meantime
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return server.get_uri(database)


def stop_embedded_postgres(data_dir: Path | None = None) -> None:
    """Stop the embedded server of ``data_dir`` if it runs."""
    data_dir = data_dir or default_data_dir()
    if (data_dir / "postmaster.pid").exists():
        _pgserver().get_server(data_dir, cleanup_mode="stop").cleanup()
