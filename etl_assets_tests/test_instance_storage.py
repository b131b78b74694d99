"""dagster.yaml: PostgreSQL storage when DAGSTER_PG_* is set, SQLite otherwise."""

import uuid
from pathlib import Path

import psycopg
import pytest
from dagster import DagsterInstance
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster_postgres import DagsterPostgresStorage
from psycopg import sql
from sqlalchemy.engine import make_url

from etl_assets_tests.conftest import project_dagster_home


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = project_dagster_home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD",
                 "DAGSTER_PG_DB"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_sqlite_when_no_postgres_is_configured(dagster_home: Path) -> None:
    with DagsterInstance.get() as instance:
        assert isinstance(instance.get_ref().storage, DagsterSqliteStorage)
        instance.add_dynamic_partitions("w", ["0..10"])
        assert instance.get_dynamic_partitions("w") == ["0..10"]
    assert (dagster_home / "storage").is_dir()


def test_postgres_when_configured(dagster_home: Path, pg_admin_url: str,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    url = make_url(pg_admin_url)
    if not url.host or url.host.startswith("/"):
        pytest.skip("needs PostgreSQL over TCP")
    database = f"dagster_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host)
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_USER", url.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_DB", database)
    try:
        with DagsterInstance.get() as instance:
            assert isinstance(instance.get_ref().storage, DagsterPostgresStorage)
            instance.add_dynamic_partitions("w", ["0..10", "10..20"])
        with psycopg.connect(make_url(pg_admin_url).set(database=database)
                             .render_as_string(hide_password=False)) as conn:
            stored = conn.execute("SELECT partition FROM dynamic_partitions "
                                  "WHERE partitions_def_name = 'w' ORDER BY partition").fetchall()
        assert stored == [("0..10",), ("10..20",)]
        assert not (dagster_home / "storage").exists()
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database)))
