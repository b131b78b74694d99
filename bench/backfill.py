"""Benchmark: backfilling 100 one-hour windows of 10k rows (1M rows x 10 columns) from a
PostgreSQL source into a PostgreSQL sink, through the whole pipeline (source asset, staging,
sink asset, checks), as Dagster runs on one instance.

Contenders, each in its own process (peak MB = that process's max RSS), each into a fresh
target table:

- one window:        ONE partition covering all 100 hours, one run (the goal's baseline)
- single-run backfill: the 100 hourly partitions in ONE run (``backfill: single_run``: what a
                     backfill from the UI launches), each window staged, written and checked
                     on its own
- run per partition: the 100 partitions as 100 runs executed in one process one after the
                     other (a lower bound for a multi-run backfill: no run-worker start-up)
- dagster job execute: ``--cli-runs`` (3) partitions as ``dagster job execute`` subprocesses,
                     timed, and the time for 100 extrapolated from their mean (marked ~)

Prints seconds (median of ``--repeat``), rows/s, peak MB and each contender's ratio to the
one-window run; the goal is single-run backfill / one window <= 1.5.

    .venv/bin/python bench/backfill.py [--windows 100] [--rows-per-window 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from bench.load_1m import SOURCE_DDL

PROJECT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
START = datetime(2024, 1, 1, tzinfo=timezone.utc)
CONTENDERS = ("one window", "single-run backfill", "run per partition", "dagster job execute")



def spec_file(folder: Path, target_table: str) -> Path:
    path = folder / f"{target_table}.yaml"
    path.write_text(json.dumps({
        "sources": {"bench": {
            "connection": {"env": "BENCH_SOURCE_URL"}, "table": "bench_source",
            "cursor": "updated_at", "primary_key": ["id"], "max_window": "1h",
            "backfill": "single_run",
        }},
        "sinks": {"bench_pg": {
            "source": "bench", "kind": "postgres", "connection": {"env": "BENCH_SOURCE_URL"},
            "table": target_table,
        }},
        "staging": {"root": str(folder / "staging" / target_table)},
    }))
    return path


def window_keys(windows: int) -> list[str]:
    from etl_assets.watermark import Window

    hour = timedelta(hours=1)
    return [Window(START + hour * i, START + hour * (i + 1)).key for i in range(windows)]


def child(contender: str, spec: Path, windows: int) -> dict[str, float]:
    """Run one contender in this process; its wall time and peak MB."""
    from dagster import DagsterInstance
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    from etl_assets.factory import build_definitions
    from etl_assets.spec import load_spec
    from etl_assets.watermark import Window

    keys = window_keys(windows)
    whole = Window(Window.from_key(keys[0]).lo, Window.from_key(keys[-1]).hi).key
    job = build_definitions(load_spec(spec)).resolve_job_def("bench_job")
    with DagsterInstance.get() as instance:
        instance.get_runs(limit=1)  # the storage is made (migrated) before the clock starts
        started = time.perf_counter()
        if contender == "one window":
            instance.add_dynamic_partitions("bench_windows", [whole])
            runs = [job.execute_in_process(instance=instance, partition_key=whole)]
        elif contender == "single-run backfill":
            instance.add_dynamic_partitions("bench_windows", keys)
            runs = [job.execute_in_process(instance=instance, tags={
                ASSET_PARTITION_RANGE_START_TAG: keys[0],
                ASSET_PARTITION_RANGE_END_TAG: keys[-1]})]
        else:
            instance.add_dynamic_partitions("bench_windows", keys)
            runs = [job.execute_in_process(instance=instance, partition_key=key)
                    for key in keys]
        seconds = time.perf_counter() - started
    if not all(run.success for run in runs):
        raise SystemExit(f"{contender}: a run failed")
    return {"seconds": seconds,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def cli_runs(spec: Path, windows: int, count: int, env: dict[str, str]) -> dict[str, float]:
    """``count`` partitions as ``dagster job execute`` subprocesses; the time for ``windows``
    extrapolated from their mean."""
    keys = window_keys(windows)[:count]
    subprocess.run([sys.executable, "-c", (
        "from dagster import DagsterInstance\n"
        f"with DagsterInstance.get() as i: i.add_dynamic_partitions('bench_windows', {keys!r})")],
        env=env, check=True)
    dagster = str(Path(sys.executable).with_name("dagster"))
    started = time.perf_counter()
    for key in keys:
        subprocess.run([dagster, "job", "execute", "-m", "etl_assets.definitions",
                        "-j", "bench_job", "--tags", json.dumps({"dagster/partition": key})],
                       env=env, check=True, capture_output=True)
    per_run = (time.perf_counter() - started) / count
    return {"seconds": per_run * windows, "peak_mb": float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=100)
    parser.add_argument("--rows-per-window", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cli-runs", type=int, default=3)
    parser.add_argument("--instance", choices=["postgres", "sqlite"], default="postgres",
                        help="the Dagster instance's storage (the project's dagster.yaml: "
                             "PostgreSQL when DAGSTER_PG_HOST is set, as deployed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.spec), args.windows)))
        return

    rows = args.windows * args.rows_per_window
    database = f"bench_backfill_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = make_url(ADMIN_URL).set(database=database).render_as_string(hide_password=False)
    try:
        print(f"generating {rows:,} rows in {args.windows} one-hour windows ...", flush=True)
        with psycopg.connect(url, autocommit=True) as conn:
            ddl = SOURCE_DDL.format(rows=rows, step=3600 / args.rows_per_window)
            conn.execute(ddl.encode())
        results: dict[str, list[dict[str, float]]] = {c: [] for c in CONTENDERS}
        with tempfile.TemporaryDirectory() as folder:
            for attempt in range(args.repeat):
                for contender in CONTENDERS:
                    table = f"target_{attempt}_{CONTENDERS.index(contender)}"
                    home = Path(folder) / f"home_{table}"
                    home.mkdir()
                    shutil.copy(PROJECT / "dagster.yaml", home)
                    spec = spec_file(Path(folder), table)
                    env = {**os.environ, "BENCH_SOURCE_URL": url, "DAGSTER_HOME": str(home),
                           "ETL_ASSETS_SPEC": str(spec), "ETL_ASSETS_HOME": str(home)}
                    env.pop("DAGSTER_PG_HOST", None)
                    if args.instance == "postgres":  # a Dagster database of its own
                        env |= dagster_database(f"{database}_{table}")
                    if contender == "dagster job execute":
                        result = cli_runs(spec, args.windows, args.cli_runs, env)
                    else:
                        out = subprocess.run(
                            [sys.executable, __file__, "--child", contender, "--spec", str(spec),
                             "--windows", str(args.windows)],
                            env=env, check=True, capture_output=True, text=True).stdout
                        result = json.loads(out.strip().splitlines()[-1])
                        with psycopg.connect(url) as conn:
                            (landed,) = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                                sql.Identifier(table))).fetchone() or (0,)
                        if landed != rows:
                            raise SystemExit(f"{contender}: {landed:,} rows landed, not {rows:,}")
                    results[contender].append(result)
                    print(f"  run {attempt + 1}: {contender}: {result['seconds']:.1f} s",
                          flush=True)
        report(results, rows, args)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            for name in [database, *made]:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))


def dagster_database(name: str) -> dict[str, str]:
    """A new database for a contender's Dagster instance, as the environment names it."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    made.append(name)
    admin = make_url(ADMIN_URL)
    return {"DAGSTER_PG_HOST": admin.host or "127.0.0.1",
            "DAGSTER_PG_PORT": str(admin.port or 5432),
            "DAGSTER_PG_USER": admin.username or "postgres",
            "DAGSTER_PG_PASSWORD": admin.password or "", "DAGSTER_PG_DB": name}


made: list[str] = []  # the databases to drop at the end


def report(results: dict[str, list[dict[str, float]]], rows: int,
           args: argparse.Namespace) -> None:
    medians = {c: statistics.median(r["seconds"] for r in runs) for c, runs in results.items()}
    base = medians["one window"]
    print(f"\n{rows:,} rows, {args.windows} windows, median of {args.repeat}, Dagster "
          f"instance on {args.instance}")
    print(f"{'contender':<24}{'seconds':>10}{'rows/s':>12}{'peak MB':>10}{'x one window':>14}")
    for contender, seconds in medians.items():
        peak = max(r["peak_mb"] for r in results[contender])
        mark = "~" if contender == "dagster job execute" else " "
        print(f"{contender:<24}{mark}{seconds:>9.1f}{rows / seconds:>12,.0f}{peak:>10.0f}"
              f"{seconds / base:>14.2f}")
    ratio = medians["single-run backfill"] / base
    print(f"\nsingle-run backfill / one window = {ratio:.2f} (goal <= 1.5): "
          f"{'met' if ratio <= 1.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
