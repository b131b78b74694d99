"""Servers of the sink tests, one per session unless said otherwise: a real BigQuery API
and a private PostgreSQL that may be restarted (per test). S3 (moto), CouchDB
(pouchdb-server), datasette and the fault-injecting HTTP server, which staging and the HTTP
source's tests use too, are in the root conftest. How each starts: etl_assets_testing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from etl_assets_testing.servers.bigquery import BigQueryEmulator
from etl_assets_testing.servers.loopback import free_port
from etl_assets_testing.servers.postgres import (
    RestartablePostgres,
    postgres_binaries,
    restartable_postgres,
)
from etl_assets_tests.conftest import _unavailable


@pytest.fixture(scope="session")
def bq_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryEmulator]:
    emulator = BigQueryEmulator(free_port(), tmp_path_factory.mktemp("bqemulator"))
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def bq_dataset(bq_emulator: BigQueryEmulator) -> str:
    """A dataset name of its own for each test (the sink creates it)."""
    if not bq_emulator.running:  # a test that stopped it failed before starting it again
        bq_emulator.start()
    return f"ds_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def restartable_pg() -> Iterator[RestartablePostgres]:
    binaries = postgres_binaries()
    if binaries is None:
        _unavailable("PostgreSQL server binaries (/usr/lib/postgresql/*/bin)",
                     FileNotFoundError("pg_ctl"))
    with restartable_postgres(binaries) as server:
        yield server
