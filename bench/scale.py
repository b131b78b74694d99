"""Benchmark: runs spread over Celery workers, and staging on an object store.

8 partitions x 250k rows (10 columns) from a PostgreSQL source into a PostgreSQL sink, each
partition a `dagster job execute` run (at most ``--runs-at-once`` at a time, as the run queue's
``max_concurrent_runs`` would allow) whose steps (the source's extraction into staging, the
sink's load) are Celery tasks on ``etl-assets worker`` processes (concurrency 1 each).
Dagster's storage is PostgreSQL, the broker Redis. Four contenders, each into a fresh target
table:

- 1 worker, local staging      (the baseline)
- 2 workers, local staging     (one disk shared by the workers, as a volume would be)
- 1 worker, S3 staging         (moto's S3 server on loopback; the worker has a disk of its own)
- 2 workers, S3 staging        (no shared disk: each worker its own working directory and
                                ETL_ASSETS_HOME, as on two machines)

Prints the median wall time of ``--repeat`` runs of each, rows/s, the peak RSS of the
largest worker (its process tree, sampled every 0.2 s), and the ratios: 2 workers / 1 worker
for each staging, S3 / local for each worker count; the goal is S3 / local <= 1.3. Each
contender's target is checked against the source (row count and a checksum of every column).
The machine's cores bound what a second worker can give: with 2 cores the runs' own processes
and PostgreSQL compete with the workers.

    .venv/bin/python bench/scale.py [--partitions 8] [--rows-per-partition 250000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
import redis
from psycopg import sql
from sqlalchemy.engine import make_url

from bench.load_1m import SOURCE_DDL
from etl_assets_testing.servers.loopback import free_port
from etl_assets_testing.servers.s3 import S3Server

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
CONTENDERS = (("local", 1), ("local", 2), ("s3", 1), ("s3", 2))
GOAL_S3_OVER_LOCAL = 1.3
# the source's columns, as text, for the checksum (numeric and float8 print exactly)
CHECKSUM = ("SELECT count(*), coalesce(sum(hashtextextended(concat_ws('|', id, updated_at, "
            "code, description, site, reading, active, day, amount, attrs::text), 0)), 0) "
            "FROM {}")


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    peak_mb: float = 0.0

    def tree_mb(self) -> float:
        try:
            root = psutil.Process(self.process.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0.0
        total = 0
        for process in processes:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        return total / 2**20


@dataclass
class Contender:
    staging: str
    workers: int
    seconds: list[float] = field(default_factory=list)
    peak_mb: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.workers} worker{'s' if self.workers > 1 else ''}, {self.staging} staging"


def spec_text(table: str, staging: dict[str, object]) -> str:
    return json.dumps({
        "sources": {"bench": {
            "connection": {"env": "BENCH_SOURCE_URL"}, "table": "bench_source",
            "cursor": "updated_at", "primary_key": ["id"], "max_window": "1h",
        }},
        "sinks": {"bench_pg": {
            "source": "bench", "kind": "postgres", "connection": {"env": "BENCH_SOURCE_URL"},
            "table": table,
        }},
        "executor": {"kind": "celery"},
        "staging": staging,
        "dead_letters": {**staging, "root": f"{staging['root']}_dead_letters"},
    })


def window_keys(partitions: int) -> list[str]:
    from datetime import datetime, timedelta, timezone

    from etl_assets.watermark import Window

    start, hour = datetime(2024, 1, 1, tzinfo=timezone.utc), timedelta(hours=1)
    return [Window(start + hour * i, start + hour * (i + 1)).key for i in range(partitions)]


@contextmanager
def workers_running(count: int, folder: Path, env: dict[str, str], own_disk: bool,
                    ) -> Iterator[list[Worker]]:
    """``count`` workers, each (``own_disk``) in a working directory and ETL_ASSETS_HOME of
    its own; stopped (SIGTERM, then SIGKILL of their process groups) when the block ends."""
    workers = []
    try:
        for number in range(count):
            name = f"w{number + 1}"
            home = folder / name
            home.mkdir()
            worker_env = dict(env)
            if own_disk:
                worker_env["ETL_ASSETS_HOME"] = str(home / "etl_home")
            log = home / "worker.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [str(BIN / "etl-assets"), "worker", "--name", name, "--concurrency", "1"],
                    cwd=home if own_disk else folder, env=worker_env, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True)
            workers.append(Worker(name, process, log))
        for worker in workers:
            deadline = time.monotonic() + 60
            while " ready." not in worker.log.read_text():
                if worker.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"worker {worker.name} did not start:\n"
                                     f"{worker.log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield workers
    finally:
        for worker in workers:
            with suppress(ProcessLookupError):
                os.killpg(worker.process.pid, signal.SIGTERM)
        for worker in workers:
            try:
                worker.process.wait(30)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(worker.process.pid, signal.SIGKILL)
                worker.process.wait(10)


@contextmanager
def sampling(workers: list[Worker]) -> Iterator[None]:
    """Sample each worker's process tree RSS every 0.2 s while the block runs."""
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            for worker in workers:
                worker.peak_mb = max(worker.peak_mb, worker.tree_mb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def run_partitions(keys: list[str], folder: Path, env: dict[str, str], at_once: int) -> None:
    """``dagster job execute`` of bench_job for each key, ``at_once`` at a time."""
    waiting = list(keys)
    running: list[tuple[subprocess.Popen[bytes], Path]] = []
    while waiting or running:
        while waiting and len(running) < at_once:
            key = waiting.pop(0)
            log = folder / f"run-{key}.log"
            with log.open("wb") as out:
                running.append((subprocess.Popen(
                    [str(BIN / "dagster"), "job", "execute", "-m", "etl_assets.definitions",
                     "-j", "bench_job", "--tags", json.dumps({"dagster/partition": key})],
                    cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT), log))
        time.sleep(0.1)
        for process, log in list(running):
            if process.poll() is None:
                continue
            running.remove((process, log))
            if process.returncode != 0 or "RUN_SUCCESS" not in log.read_text():
                raise SystemExit(f"a run failed:\n{log.read_text()[-4000:]}")


def measure(contender: Contender, attempt: int, keys: list[str], root: Path,
            env: dict[str, str], s3: S3Server, bucket: str, source: str, url: str,
            at_once: int) -> None:
    table = f"target_{contender.staging}_{contender.workers}_{attempt}"
    folder = root / table
    folder.mkdir()
    if contender.staging == "s3":
        staging: dict[str, object] = {"root": f"s3://{bucket}/{table}/staging",
                                      "storage_options": {"endpoint_url": s3.endpoint}}
    else:
        staging = {"root": str(folder / "etl_home" / "staging")}
    spec = folder / "spec.yaml"
    spec.write_text(spec_text(table, staging))
    run_env = {**env, "ETL_ASSETS_SPEC": str(spec), "ETL_ASSETS_HOME": str(folder / "etl_home")}
    redis.Redis.from_url(REDIS_URL).flushdb()
    with workers_running(contender.workers, folder, run_env,
                         own_disk=contender.staging == "s3") as workers, sampling(workers):
        started = time.perf_counter()
        run_partitions(keys, folder, run_env, at_once)
        seconds = time.perf_counter() - started
    with psycopg.connect(url) as conn:
        want = conn.execute(sql.SQL(CHECKSUM).format(sql.Identifier(source))).fetchone()
        got = conn.execute(sql.SQL(CHECKSUM).format(sql.Identifier(table))).fetchone()
    if want != got:
        raise SystemExit(f"{contender.label}: the target differs from the source "
                         f"(count, checksum): {got} != {want}")
    if contender.staging == "s3" and (folder / "etl_home" / "staging").exists():
        raise SystemExit(f"{contender.label}: staging was written to the local disk")
    contender.seconds.append(seconds)
    contender.peak_mb.append(max(w.peak_mb for w in workers))
    print(f"  run {attempt + 1}: {contender.label}: {seconds:.1f} s, largest worker "
          f"{max(w.peak_mb for w in workers):.0f} MB", flush=True)


def report(contenders: list[Contender], rows: int) -> None:
    print(f"\n{'contender':<28}{'seconds':>9}{'rows/s':>10}{'peak MB':>9}")
    median = {(c.staging, c.workers): statistics.median(c.seconds) for c in contenders}
    for c in contenders:
        seconds = median[(c.staging, c.workers)]
        print(f"{c.label:<28}{seconds:>9.1f}{rows / seconds:>10,.0f}{max(c.peak_mb):>9.0f}")
    print()
    for staging in ("local", "s3"):
        if (staging, 1) in median and (staging, 2) in median:
            print(f"2 workers / 1 worker, {staging} staging: "
                  f"{median[(staging, 2)] / median[(staging, 1)]:.2f}")
    for workers in (1, 2):
        if ("local", workers) in median and ("s3", workers) in median:
            ratio = median[("s3", workers)] / median[("local", workers)]
            verdict = "met" if ratio <= GOAL_S3_OVER_LOCAL else "MISSED"
            print(f"S3 / local staging, {workers} worker(s): {ratio:.2f} "
                  f"(goal <= {GOAL_S3_OVER_LOCAL}: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--rows-per-partition", type=int, default=250_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--runs-at-once", type=int, default=4)
    args = parser.parse_args()

    rows = args.partitions * args.rows_per_partition
    database = f"bench_scale_{uuid.uuid4().hex[:8]}"
    dagster_db = f"{database}_dagster"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        for name in (database, dagster_db):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(ADMIN_URL).set(database=database).render_as_string(hide_password=False)
    admin = make_url(ADMIN_URL)
    # moto takes any credentials; the bench's S3 client and every run and worker read these
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    s3 = S3Server(free_port())
    s3.start()
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "BENCH_SOURCE_URL": url, "ETL_ASSETS_CELERY_BROKER": REDIS_URL,
           "DAGSTER_PG_HOST": admin.host or "127.0.0.1", "DAGSTER_PG_PORT": str(admin.port or 5432),
           "DAGSTER_PG_USER": admin.username or "postgres",
           "DAGSTER_PG_PASSWORD": admin.password or "", "DAGSTER_PG_DB": dagster_db,
           "PYTHONWARNINGS": "ignore"}
    try:
        s3.client().create_bucket(Bucket=bucket)
        print(f"generating {rows:,} rows in {args.partitions} one-hour windows ...", flush=True)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SOURCE_DDL.format(rows=rows, step=3600 / args.rows_per_partition)
                         .encode())
        keys = window_keys(args.partitions)
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            home = root / "dagster_home"
            home.mkdir()
            shutil.copy(PROJECT / "dagster.yaml", home)
            env["DAGSTER_HOME"] = str(home)
            spec = root / "spec.yaml"
            spec.write_text(spec_text("unused", {"root": str(root / "staging")}))
            subprocess.run([sys.executable, "-c", (
                "from dagster import DagsterInstance\n"
                f"with DagsterInstance.get() as i: i.add_dynamic_partitions('bench_windows', "
                f"{keys!r})")], env={**env, "ETL_ASSETS_SPEC": str(spec)}, check=True)
            contenders = [Contender(staging, workers) for staging, workers in CONTENDERS]
            for attempt in range(args.repeat):
                for contender in contenders:
                    measure(contender, attempt, keys, root, env, s3, bucket, "bench_source",
                            url, args.runs_at_once)
        report(contenders, rows)
    finally:
        s3.stop()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            for name in (database, dagster_db):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))


if __name__ == "__main__":
    main()
