"""Real servers for the tests: PostgreSQL on 127.0.0.1:5432 (else an embedded one),
MariaDB on 127.0.0.1:3306, SQLite files, a real Dagster instance, and the HTTP servers that
several packages share: S3 (moto), CouchDB (pouchdb-server), datasette (one a session) and a
fault-injecting HTTP server (one a test).

With ``ETL_ASSETS_REQUIRE_SERVICES=1`` (set by ``.ci/run``) a missing MariaDB fails the tests
instead of skipping them.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import psycopg
import pymysql
import pytest
from dagster import DagsterInstance, instance_for_test
from psycopg import sql

from etl_assets_testing.servers.datasette import Datasette, datasette_binary, start_datasette
from etl_assets_testing.servers.fault_http import FaultServer
from etl_assets_testing.servers.loopback import free_port
from etl_assets_testing.servers.postgres import start_embedded_postgres
from etl_assets_testing.servers.pouchdb import POUCHDB_SERVER, PouchDB, start_pouchdb
from etl_assets_testing.servers.s3 import S3Bucket, S3Server

PROJECT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("ETL_ASSETS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL = dict(host="127.0.0.1", port=3306, user="root", password="")
REQUIRE_SERVICES = os.environ.get("ETL_ASSETS_REQUIRE_SERVICES") == "1"


# Fixtures that start a server of the session's own (here and in sinks/conftest.py): their tests are
# marked `servers`. The PostgreSQL on 5432 and MariaDB are always running: not `servers`.
SERVER_FIXTURES = frozenset({"bq_emulator", "pouchdb", "datasette", "s3_server", "restartable_pg"})


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `servers` every test that uses a server fixture, directly or through another."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


def _unavailable(what: str, error: Exception) -> NoReturn:
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required (ETL_ASSETS_REQUIRE_SERVICES=1) but unavailable: {error}")
    pytest.skip(f"{what} unavailable: {error}")


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A superuser URL: the server on 127.0.0.1:5432, or an embedded one when none runs."""
    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
        yield PG_ADMIN_URL
        return
    except psycopg.OperationalError:
        pass
    yield start_embedded_postgres(tmp_path_factory.mktemp("pg"))


def _with_database(url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A database of its own for this test session, dropped at the end."""
    name = f"etl_assets_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield _with_database(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass
class PgSchema:
    """A schema of its own for one test, in the session's database."""

    url: str
    name: str

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True)

    def execute(self, statement: str, params: object = None) -> list[tuple]:
        with self.connect() as conn:
            cur = conn.execute(statement, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def table(self, name: str) -> str:
        return f"{self.name}.{name}"


@pytest.fixture
def pg(pg_url: str, request: pytest.FixtureRequest) -> Iterator[PgSchema]:
    name = "t_" + re.sub(r"\W", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:6]
    schema = PgSchema(pg_url, name)
    schema.execute(f'CREATE SCHEMA "{name}"')
    yield schema
    schema.execute(f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """A MariaDB database of its own for this test session."""
    name = f"etl_assets_test_{uuid.uuid4().hex[:8]}"
    try:
        conn = pymysql.connect(**MYSQL, connect_timeout=3)
    except pymysql.err.OperationalError as exc:
        _unavailable("MariaDB on 127.0.0.1:3306", exc)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    conn.close()
    yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    conn = pymysql.connect(**MYSQL)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE `{name}`")
    conn.close()


@pytest.fixture(autouse=True)
def etl_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own ETL_ASSETS_HOME (staging, demo data)."""
    home = tmp_path / "home"
    monkeypatch.setenv("ETL_ASSETS_HOME", str(home))
    return home


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    """A real, persistent (SQLite, temporary) Dagster instance."""
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def project_dagster_home(folder: Path) -> Path:
    """``folder/dagster_home`` holding the project's dagster.yaml: a persistent instance
    configured as ``make demo`` and ``make dev`` configure theirs."""
    home = folder / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster.yaml", home)
    return home


@pytest.fixture(scope="session")
def pouchdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PouchDB]:
    if not POUCHDB_SERVER.exists():
        pytest.skip("pouchdb-server is not installed (make install runs npm ci)")
    folder = tmp_path_factory.mktemp("pouchdb")
    with open(folder / "pouchdb.log", "wb") as log:
        process, url = start_pouchdb(folder, log)
        try:
            yield PouchDB(url)
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def datasette(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Datasette]:
    if datasette_binary() is None:
        pytest.skip("datasette is not installed (dev extra)")
    folder = tmp_path_factory.mktemp("datasette")
    with open(folder / "datasette.log", "wb") as log:
        process, url, token = start_datasette(folder, log)
        try:
            yield Datasette(url, token)
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A new bucket on the running server; credentials only in the environment."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    if not s3_server.running:  # a test that stopped it failed before starting it again
        s3_server.start()
    bucket = S3Bucket(s3_server, f"lake-{uuid.uuid4().hex[:10]}")
    s3_server.client().create_bucket(Bucket=bucket.name)
    yield bucket
