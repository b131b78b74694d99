"""Runs on Celery workers, for real: Dagster's storage on PostgreSQL (a database of the test's
own), Redis or RabbitMQ as broker, `etl-assets worker` processes, partitions run by
`dagster job execute` whose steps are sent to the workers; the targets end equal to the
source, value for value, and no process, log or stored run shows the broker's password.

The issue's test (two workers in working directories and ETL_ASSETS_HOMEs of their own, no
shared disk: staging and dead letters on S3) is the last one."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
from psycopg import sql
from sqlalchemy.engine import make_url

from etl_assets.run_monitoring import (
    RUN_WORKER_TAG,
    LocalRunWorkerLauncher,
    RunWorker,
    WorkerStatus,
)
from etl_assets_testing.servers.s3 import S3Bucket, S3Server
from etl_assets_tests.conftest import PgSchema, _unavailable, project_dagster_home
from etl_assets_tests.sinks.mysql.mariadb import MariaDb
from etl_assets_tests.test_killed_and_concurrent_runs import COLUMNS, create_source

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
ROWS, WINDOW = 400, 100  # four partitions
KEYS = [f"{lo}..{lo + WINDOW}" for lo in range(0, ROWS, WINDOW)]
WORKER_READY_S = 90
RUN_TIMEOUT_S = 300


# -- the servers: Dagster's storage, the brokers -------------------------------------------

@pytest.fixture
def dagster_pg(pg_admin_url: str) -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database for Dagster's storage: the DAGSTER_PG_* environment of
    etl_assets.instance_storage (runs and workers write their events there)."""
    url = make_url(pg_admin_url)
    name = f"etl_dagster_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    env = {"DAGSTER_PG_HOST": url.host or "127.0.0.1", "DAGSTER_PG_PORT": str(url.port or 5432),
           "DAGSTER_PG_USER": url.username or "postgres", "DAGSTER_PG_DB": name}
    if url.password:
        env["DAGSTER_PG_PASSWORD"] = url.password
    yield env
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def redis_broker() -> Iterator[str]:
    """A Redis URL with a database number of the test's own (an empty one, emptied again at
    the end) and a password in its user info (Redis' `default` user takes any): a secret the
    logs must never show."""
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        _unavailable("Redis on 127.0.0.1:6379", exc)
    number = next((n for n in range(15, 0, -1)
                   if redis.Redis(host="127.0.0.1", port=6379, db=n).dbsize() == 0), None)
    if number is None:
        pytest.fail("no empty Redis database (1-15) for the test")
    yield f"redis://default:{secrets.token_hex(12)}@127.0.0.1:6379/{number}"
    redis.Redis(host="127.0.0.1", port=6379, db=number).flushdb()


RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture
def rabbitmq_queue() -> Iterator[str]:
    """A queue of the test's own on the RabbitMQ at 127.0.0.1:5672 (guest), deleted at the
    end."""
    from kombu import Connection

    queue = f"etl_test_{uuid.uuid4().hex[:8]}"
    try:
        with Connection(RABBITMQ, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # kombu's OperationalError and socket errors alike
        _unavailable("RabbitMQ on 127.0.0.1:5672", exc)
    yield queue
    with Connection(RABBITMQ) as conn:
        conn.default_channel.queue_delete(queue)


# -- the deployment: workers and runs ------------------------------------------------------

@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    home: Path

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WORKER_READY_S
        while f"{self.name}@" not in self.log.read_text() or " ready." not in \
                self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker {self.name} did not start:\n{self.log.read_text()[-4000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL for whatever of its process group is left."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        deadline = time.monotonic() + 10
        while _group_alive(self.process.pid):  # the pool's children leave after their parent
            if time.monotonic() > deadline:
                os.killpg(self.process.pid, signal.SIGKILL)
                pytest.fail(f"worker {self.name}: processes left after it stopped")
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Deployment:
    """A spec, the run process' environment (its own DAGSTER_HOME, working directory and
    ETL_ASSETS_HOME) and the workers started for it."""

    root: Path
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def run_home(self) -> Path:
        return Path(self.env["ETL_ASSETS_HOME"])

    def write_spec(self, spec: dict[str, Any]) -> None:
        Path(self.env["ETL_ASSETS_SPEC"]).write_text(yaml.safe_dump(spec))

    def start_worker(self, name: str, *args: str, own_disk: bool = False) -> Worker:
        """`etl-assets worker` with the run's environment; ``own_disk``: in a working
        directory with an ETL_ASSETS_HOME and a copy of the spec of its own, and no
        DAGSTER_HOME (as on another machine)."""
        env = dict(self.env)
        folder = self.root / name
        folder.mkdir()
        if own_disk:
            spec = folder / "spec.yaml"
            shutil.copy(self.env["ETL_ASSETS_SPEC"], spec)
            env.update(ETL_ASSETS_SPEC=str(spec), ETL_ASSETS_HOME=str(folder / "etl_home"))
            del env["DAGSTER_HOME"]
        log = folder / "worker.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(BIN / "etl-assets"), "worker", "--name", name, "--concurrency", "1", *args],
                cwd=folder if own_disk else self.run_dir, env=env, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        worker = Worker(name, process, log, Path(env["ETL_ASSETS_HOME"]))
        self.workers.append(worker)
        return worker

    def add_partitions(self, source: str) -> list[str]:
        done = subprocess.run([str(BIN / "etl-assets"), "add-partitions", source],
                              cwd=self.run_dir, env=self.env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    def execute(self, job: str, keys: Sequence[str | None]) -> list[str]:
        """`dagster job execute` of ``job`` for each key (None: a job without partitions),
        all at once; their outputs, each run having succeeded."""
        started = []
        for number, key in enumerate(keys):
            log = self.run_dir / f"{job}-{number}.log"
            tags = ["--tags", json.dumps({"dagster/partition": key})] if key else []
            with log.open("wb") as out:
                started.append((subprocess.Popen(
                    [str(BIN / "dagster"), "job", "execute", "-m", "etl_assets.definitions",
                     "-j", job, *tags], cwd=self.run_dir, env=self.env, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True), log))
        outputs = []
        for process, log in started:
            try:
                process.wait(RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                for other, _ in started:
                    os.killpg(other.pid, signal.SIGKILL)
                pytest.fail(f"a run timed out:\n{log.read_text()[-4000:]}\n"
                            + "\n".join(w.log.read_text()[-3000:] for w in self.workers))
            output = log.read_text()
            assert process.returncode == 0 and "RUN_SUCCESS" in output, (
                output[-4000:] + "\n".join(w.log.read_text()[-3000:] for w in self.workers))
            outputs.append(output)
        return outputs

    def instance(self, monkeypatch: pytest.MonkeyPatch) -> DagsterInstance:
        """The Dagster instance of the runs (on PostgreSQL), seen from the test."""
        for name in ("DAGSTER_HOME", *(k for k in self.env if k.startswith("DAGSTER_PG_"))):
            monkeypatch.setenv(name, self.env[name])
        return DagsterInstance.get()

    def logs(self) -> str:
        """Every run's and worker's output."""
        return "\n".join(p.read_text() for p in sorted(self.root.rglob("*.log")))


@pytest.fixture
def deployment(tmp_path: Path, dagster_pg: dict[str, str], pg: PgSchema,
               mysql_url: str) -> Iterator[Deployment]:
    """The run's side: a DAGSTER_HOME with the project's dagster.yaml (storage: the test's
    PostgreSQL database), a working directory and ETL_ASSETS_HOME; the workers it starts are
    stopped at the end, every process of theirs gone."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_ASSETS_", "DAGSTER_"))}
    env.update(dagster_pg, DAGSTER_HOME=str(project_dagster_home(run_dir)),
               ETL_ASSETS_HOME=str(run_dir / "etl_home"),
               ETL_ASSETS_SPEC=str(run_dir / "spec.yaml"), TEST_PG_URL=pg.url,
               TEST_MYSQL_URL=mysql_url, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    deployed = Deployment(tmp_path, env)
    yield deployed
    for worker in deployed.workers:
        worker.stop()


# -- the pipeline: a PostgreSQL source, a PostgreSQL and a MariaDB sink --------------------

def pipeline(pg: PgSchema, maria: MariaDb, source: str,
             executor: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "sources": {"src": {"connection": {"env": "TEST_PG_URL"}, "table": source,
                            "cursor": "id", "primary_key": ["id"], "max_window": WINDOW,
                            "chunk_rows": 30}},
        "sinks": {"to_pg": {"source": "src", "kind": "postgres",
                            "connection": {"env": "TEST_PG_URL"}, "table": pg.table("dst")},
                  "to_maria": {"source": "src", "kind": "mysql",
                               "connection": {"env": "TEST_MYSQL_URL"}, "table": maria.name}},
        "executor": executor,
        **more,
    }


def source_rows(pg: PgSchema, source: str) -> list[tuple[Any, ...]]:
    return pg.execute(f"SELECT {COLUMNS} FROM {source} ORDER BY id")


def assert_targets_equal_the_source(pg: PgSchema, maria: MariaDb, source: str) -> None:
    """Both targets hold the source's rows, value for value (MariaDB's DATETIME is UTC)."""
    want = source_rows(pg, source)
    assert len(want) == ROWS
    assert pg.execute(f"SELECT {COLUMNS} FROM {pg.table('dst')} ORDER BY id") == want
    landed = [(i, t.replace(tzinfo=timezone.utc), c, n, a) for i, t, c, n, a in
              maria.query(f"SELECT {COLUMNS} FROM `{maria.name}` ORDER BY id")]
    assert landed == want
    assert isinstance(landed[0][4], Decimal)


def step_workers(instance: DagsterInstance) -> dict[tuple[str, str], str]:
    """(partition, step) -> the Celery worker that executed it (dagster-celery's engine event
    'Executing steps ... in celery worker'), over every run of the instance."""
    found: dict[tuple[str, str], str] = {}
    for run in instance.get_runs():
        records = instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.ENGINE_EVENT).records
        for record in records:
            event = record.event_log_entry.dagster_event
            assert event is not None
            worker = event.engine_event_data.metadata.get("Celery worker")
            if worker is not None and event.step_key:
                found[(run.tags.get("dagster/partition", ""), event.step_key)] = \
                    str(worker.value)
    return found


def assert_no_secret_shown(deployment: Deployment, instance: DagsterInstance,
                           secret: str) -> None:
    """Neither a log nor a stored run (its config, tags and events) holds ``secret``."""
    assert secret not in deployment.logs()
    for run in instance.get_runs():
        assert secret not in json.dumps(run.run_config) + json.dumps(dict(run.tags))
        assert all(secret not in (r.message or "") for r in instance.all_logs(run.run_id))


# -- the tests -----------------------------------------------------------------------------
# The broker's fixture comes before `deployment`: set up first, it is torn down after the
# workers stop (a queue or database emptied under a running worker would be declared again).

@pytest.fixture
def maria(mysql_url: str) -> MariaDb:
    return MariaDb(mysql_url)


def test_partitions_run_on_two_redis_workers_and_land_equal_to_the_source(
        redis_broker: str, deployment: Deployment, pg: PgSchema, maria: MariaDb,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers sharing the run's disk (staging in its ETL_ASSETS_HOME: a shared volume);
    the four partitions run at once; every step runs on a worker."""
    source = create_source(pg, ROWS)
    deployment.env["ETL_ASSETS_CELERY_BROKER"] = redis_broker
    deployment.write_spec(pipeline(pg, maria, source, {"kind": "celery"}))
    workers = [deployment.start_worker("red1"), deployment.start_worker("red2")]
    assert deployment.add_partitions("src") == KEYS
    for worker in workers:
        worker.wait_ready()
    outputs = deployment.execute("src_job", KEYS)
    assert all('to queue "dagster"' in output for output in outputs)
    assert_targets_equal_the_source(pg, maria, source)

    with deployment.instance(monkeypatch) as instance:
        runs = instance.get_runs()
        assert sorted(r.tags["dagster/partition"] for r in runs) == KEYS
        assert all(r.status == DagsterRunStatus.SUCCESS for r in runs)
        ran_on = step_workers(instance)
        assert sorted(ran_on) == sorted((k, s) for k in KEYS for s in ("src", "to_pg",
                                                                       "to_maria"))
        assert set(ran_on.values()) <= {f"{w.name}@{os.uname().nodename}" for w in workers}
        password = make_url(redis_broker).password
        assert password is not None
        assert_no_secret_shown(deployment, instance, password)
    assert "Connected to redis://default:***@127.0.0.1" in workers[0].log.read_text()


def test_rabbitmq_as_broker_on_a_queue_of_the_tests_own(
        rabbitmq_queue: str, deployment: Deployment, pg: PgSchema, maria: MariaDb,
        monkeypatch: pytest.MonkeyPatch) -> None:
    source = create_source(pg, ROWS)
    deployment.env["ETL_ASSETS_CELERY_BROKER"] = RABBITMQ
    deployment.write_spec(pipeline(pg, maria, source,
                                   {"kind": "celery", "queue": rabbitmq_queue}))
    worker = deployment.start_worker("rabbit1")
    assert deployment.add_partitions("src") == KEYS
    worker.wait_ready()
    outputs = deployment.execute("src_job", KEYS)
    assert all(f'to queue "{rabbitmq_queue}"' in output for output in outputs)
    assert_targets_equal_the_source(pg, maria, source)
    with deployment.instance(monkeypatch) as instance:
        assert set(step_workers(instance).values()) == {f"rabbit1@{os.uname().nodename}"}
        assert_no_secret_shown(deployment, instance, "guest:guest@")
    assert "transport:   amqp://guest:**@127.0.0.1:5672//" in worker.log.read_text()


def test_two_workers_without_a_shared_disk_staging_and_dead_letters_on_s3(
        redis_broker: str, s3: S3Bucket, s3_server: S3Server, deployment: Deployment,
        pg: PgSchema, maria: MariaDb, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17: two workers, each in a working directory with an ETL_ASSETS_HOME of its own
    and no DAGSTER_HOME; staging and dead letters on the S3 server. The source's steps go to
    one worker's queue, the sinks' to the other's, so every partition's rows cross from one
    to the other through S3. The MariaDB table is too narrow for some codes: those rows
    become dead letters (on S3), which the replay job, run on the workers, writes once the
    table is widened. The targets end equal to the source; nothing is staged on any disk."""
    source = create_source(pg, ROWS)
    pg.execute(f"UPDATE {source} SET code = 'LONGER-CODE-' || id WHERE id % 50 = 0")
    maria.query(f"CREATE TABLE `{maria.name}` (id BIGINT PRIMARY KEY, updated_at DATETIME(6) "
                f"NOT NULL, code VARCHAR(9) NOT NULL, note TEXT, amount DECIMAL(12, 3))")
    options = {"endpoint_url": s3_server.endpoint}
    spec = pipeline(pg, maria, source, {"kind": "celery", "queues": {"src": "extract"}},
                    staging={"root": s3.url("staging"), "storage_options": options},
                    dead_letters={"root": s3.url("dead_letters"), "storage_options": options})
    spec["sinks"]["to_maria"]["on_error"] = "dead_letter"
    deployment.env.update(ETL_ASSETS_CELERY_BROKER=redis_broker,
                          **{k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID",
                                                        "AWS_SECRET_ACCESS_KEY",
                                                        "AWS_DEFAULT_REGION")})
    deployment.write_spec(spec)
    extractor = deployment.start_worker("extractor", "--queue", "extract", own_disk=True)
    loader = deployment.start_worker("loader", own_disk=True)  # the default queue: the sinks
    assert deployment.add_partitions("src") == KEYS
    extractor.wait_ready()
    loader.wait_ready()
    deployment.execute("src_job", KEYS)

    refused = [(i, f"LONGER-CODE-{i}") for i in range(50, ROWS + 1, 50)]
    assert maria.query(f"SELECT id, code FROM `{maria.name}` WHERE id % 50 = 0") == []
    assert s3.keys("dead_letters/")  # the refused rows, kept on S3
    maria.query(f"ALTER TABLE `{maria.name}` MODIFY code VARCHAR(32) NOT NULL")
    deployment.execute("to_maria_replay_dead_letters", [None])
    assert maria.query(f"SELECT id, code FROM `{maria.name}` WHERE id % 50 = 0 "
                       f"ORDER BY id") == refused
    assert_targets_equal_the_source(pg, maria, source)
    assert s3.keys("staging/src/")

    with deployment.instance(monkeypatch) as instance:
        ran_on = step_workers(instance)
        host = os.uname().nodename
        for key in KEYS:  # every partition: extracted on one worker, loaded on the other
            assert ran_on[(key, "src")] == f"extractor@{host}"
            assert ran_on[(key, "to_pg")] == ran_on[(key, "to_maria")] == f"loader@{host}"
        assert set(ran_on.values()) == {f"extractor@{host}", f"loader@{host}"}
        password = make_url(redis_broker).password
        assert password is not None
        assert_no_secret_shown(deployment, instance, password)
    for home in (deployment.run_home, extractor.home, loader.home):
        assert not (home / "staging").exists(), home
        assert not (home / "dead_letters").exists(), home


def test_a_killed_run_process_is_seen_by_run_monitoring_though_its_steps_run_on_workers(
        redis_broker: str, deployment: Deployment, pg: PgSchema, maria: MariaDb,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's process executes no step (workers do), so the executor tags the run with it
    before the first step goes out; no worker runs here: the run waits for its first step."""
    source = create_source(pg, ROWS)
    deployment.env["ETL_ASSETS_CELERY_BROKER"] = redis_broker
    deployment.write_spec(pipeline(pg, maria, source, {"kind": "celery"}))
    key = deployment.add_partitions("src")[0]
    log = deployment.run_dir / "waiting.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "dagster"), "job", "execute", "-m", "etl_assets.definitions", "-j",
             "src_job", "--tags", json.dumps({"dagster/partition": key})],
            cwd=deployment.run_dir, env=deployment.env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    launcher = LocalRunWorkerLauncher()
    try:
        with deployment.instance(monkeypatch) as instance:
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while not (runs := instance.get_runs()) or RUN_WORKER_TAG not in runs[0].tags:
                assert process.poll() is None, log.read_text()[-4000:]
                assert time.monotonic() < deadline, "the run was never tagged"
                time.sleep(0.2)
            (run,) = runs
            assert RunWorker.from_tag(run.tags[RUN_WORKER_TAG]).pid == process.pid
            assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            health = launcher.check_run_worker_health(instance.get_run_by_id(run.run_id))
            assert health.status == WorkerStatus.NOT_FOUND
            assert f"pid {process.pid}" in health.msg
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
