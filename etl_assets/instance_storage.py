"""Dagster instance storage chosen by the environment: PostgreSQL when configured, else SQLite.

``dagster.yaml`` names this class under ``storage: custom``. With ``DAGSTER_PG_HOST`` set, runs,
event logs and schedules go to PostgreSQL (dagster-postgres, through psycopg2: with SQLAlchemy
2.1 and psycopg 3 installed it would otherwise pick psycopg 3 and fail on ``NOTIFY``);
otherwise to SQLite files under ``$DAGSTER_HOME/storage``.

Environment: ``DAGSTER_PG_HOST``, ``DAGSTER_PG_PORT`` (5432), ``DAGSTER_PG_USER`` (postgres),
``DAGSTER_PG_PASSWORD`` (empty), ``DAGSTER_PG_DB`` (dagster).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import get_conn_string

PG_HOST_ENV = "DAGSTER_PG_HOST"


def postgres_url_from_env() -> str | None:
    """The dagster-postgres URL the environment describes, or None when it describes none."""
    host = os.environ.get(PG_HOST_ENV)
    if not host:
        return None
    return get_conn_string(
        username=os.environ.get("DAGSTER_PG_USER", "postgres"),
        password=os.environ.get("DAGSTER_PG_PASSWORD", ""),
        hostname=host,
        port=os.environ.get("DAGSTER_PG_PORT", "5432"),
        db_name=os.environ.get("DAGSTER_PG_DB", "dagster"),
        scheme="postgresql+psycopg2",
    )


class PostgresOrSqliteStorage(DagsterStorage, ConfigurableClass):
    """Builds ``DagsterPostgresStorage`` or ``DagsterSqliteStorage`` from the environment.

    Never instantiated itself: Dagster checks that the configured class is a storage class,
    then calls :meth:`from_config_value`, which returns one of the two real storages.
    """

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config_value(  # type: ignore[override]  # a factory of two other classes, not Self
            cls, inst_data: ConfigurableClassData | None,
            config_value: Mapping[str, Any]) -> DagsterStorage:
        url = postgres_url_from_env()
        if url:
            storage = DagsterPostgresStorage(postgres_url=url, inst_data=inst_data)
            keep_connections_open(storage)
            return storage
        home = os.environ.get("DAGSTER_HOME") or "."
        return DagsterSqliteStorage(base_dir=os.path.join(home, "storage"), inst_data=inst_data)


def keep_connections_open(storage: DagsterPostgresStorage) -> None:
    """Let each storage keep one connection open for the life of the process, as the
    webserver's do (``optimize_for_webserver``), instead of dagster-postgres' default of a new
    connection a statement: a run stores an event or more a partition it materializes, and
    each new connection costs a server process start (a run of 100 windows stores ~600
    events). No statement timeout (0): runs and daemons wait for what they store."""
    for part in (storage.event_log_storage, storage.run_storage, storage.schedule_storage):
        part.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=4)
