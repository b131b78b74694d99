"""Benchmark: extracting one window of 1M rows x 10 columns into Arrow, ours side by side with
the fastest readers (issue 14), from PostgreSQL, MariaDB and SQLite.

Each database holds the table of bench/load_1m.py: bigint id, timestamptz updated_at (the
cursor, indexed), text code and description, int site, float8 reading, boolean active, date
day, numeric amount (its SOURCE_DDL casts the divisor, not the column, to numeric(12,2)), jsonb
attrs; in MariaDB DATETIME(6), DOUBLE, BOOLEAN, DECIMAL(12,2), JSON; in SQLite timestamps and
dates as the text SQLAlchemy writes and compares, NUMERIC(12,2), JSON text. Row g is updated
at 2024-01-01 + g seconds (UTC).

1. Extraction. Each contender reads one window covering every row (``lo < updated_at <= hi
   ORDER BY updated_at``, 50k rows a batch) in a process of its own (peak MB = that process's
   max RSS, its imports included; they are made before the clock starts):

   - ours:       ``SqlSource(...).extract(Window(lo, hi))``, every batch (the reader it chose
                 is printed when the source says); ours-2 the same with ``parallel_reads: 2``
   - connectorx: ``read_sql(url, query, return_type="arrow_stream", batch_size=50000)``
   - pandas:     ``read_sql(query, connection, chunksize=50000)`` on a SQLAlchemy connection
                 with ``stream_results`` (DataFrames, not Arrow)
   - dlt:        ``sql_table(..., backend="pyarrow", chunk_size=50000)`` with an incremental
                 ``(lo, hi]`` ordered by the cursor, iterated as a plain iterable: no
                 pipeline, no destination, only the extraction into Arrow tables

   Every contender must read exactly ``--rows`` rows of 10 columns; one that fails is shown
   as FAILED with its error, and the others go on. Median of ``--repeats``, the contenders
   interleaved in each repeat. Goal: connectorx seconds / ours seconds >= 0.9.
2. Memory flat in the row count: ours' peak MB reading a window of the first tenth of the rows.
3. End to end, PostgreSQL to PostgreSQL: the whole window as one partition through ``dagster job
   execute`` (a spec with one sql source and one postgres sink; wall clock of the subprocess)
   against the fastest reader of part 1 on PostgreSQL reading the window into Arrow batches,
   each written with pyarrow's CSV writer and ``COPY .. FROM STDIN (FORMAT csv)`` into an
   empty table shaped as the sink makes its own (columns, primary key), a commit a batch
   (wall clock of its subprocess too; its in-process time shown beside it). Each run writes
   a fresh table and must land ``--rows`` rows. The Dagster instance is stored in PostgreSQL,
   as deployed. Goal: job / baseline <= 1.3.

Servers: PostgreSQL $BENCH_PG_URL (else 127.0.0.1:5432, user postgres; database
bench_extract, and bench_extract_dagster for the Dagster instance, made and dropped here),
MariaDB $BENCH_MARIADB_URL (else 127.0.0.1:3306, root; database bench_extract, likewise),
SQLite a temporary file.

    .venv/bin/python bench/extract.py [--rows 1000000] [--repeats 3]
        [--databases postgres,mariadb,sqlite] [--contenders ours,connectorx,pandas,dlt]
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import make_url

from bench.load_1m import SOURCE_DDL

PROJECT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MARIADB_URL = os.environ.get("BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/")
DATABASE = "bench_extract"
DAGSTER_DATABASE = "bench_extract_dagster"
TABLE = "bench_source"
DATABASES = ("postgres", "mariadb", "sqlite")
CONTENDERS = ("ours", "ours-2", "connectorx", "pandas", "dlt")  # ours-2: parallel_reads 2
START = datetime(2024, 1, 1, tzinfo=timezone.utc)
SQLITE_DESCRIPTION = "description " * 5

MARIADB_DDL = f"""
CREATE TABLE {TABLE} (
  id BIGINT NOT NULL PRIMARY KEY, updated_at DATETIME(6), code TEXT, description TEXT,
  site INT, reading DOUBLE, active BOOLEAN, day DATE, amount DECIMAL(12, 2), attrs JSON)
"""
MARIADB_FILL = f"""
INSERT INTO {TABLE}
SELECT seq, TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq SECOND, CONCAT('SEN-', seq),
       REPEAT('description ', 1 + MOD(seq, 5)), MOD(seq, 1000), seq * 0.001, MOD(seq, 2) = 0,
       DATE '2024-01-01' + INTERVAL MOD(seq, 365) DAY, MOD(seq, 100000) / 100.0,
       JSON_OBJECT('g', seq, 'tag', CONCAT('x', MOD(seq, 10)))
FROM seq_1_to_{{rows}}
"""  # MOD, not %: pymysql formats every statement with %
# Timestamps and dates as SQLAlchemy's SQLite dialect writes and compares them (text).
SQLITE_DDL = f"""
CREATE TABLE {TABLE} (
  id BIGINT NOT NULL PRIMARY KEY, updated_at DATETIME, code TEXT, description TEXT,
  site INTEGER, reading FLOAT, active BOOLEAN, day DATE, amount NUMERIC(12, 2), attrs JSON);
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {{rows}})
INSERT INTO {TABLE}
SELECT n, datetime('2024-01-01', '+' || n || ' seconds') || '.000000', 'SEN-' || n,
       substr('{SQLITE_DESCRIPTION}', 1, 12 * (1 + n % 5)), n % 1000, n * 0.001, n % 2 = 0,
       date('2024-01-01', '+' || (n % 365) || ' days'), (n % 100000) / 100.0,
       json_object('g', n, 'tag', 'x' || (n % 10))
FROM g;
CREATE INDEX bench_source_updated_at ON {TABLE} (updated_at);
"""


# --- the contenders (run in a child process) -------------------------------------------------

Batch = Any  # what a reader yields: an Arrow record batch or table, or a pandas DataFrame


@dataclass
class Read:
    """What a child reads: the window ``(START, START + window_rows s]`` of ``database``."""

    database: str
    url: str  # SQLAlchemy URL
    window_rows: int
    chunk_rows: int
    notes: list[str] = field(default_factory=list)  # what the reader said about itself

    @property
    def hi(self) -> datetime:
        return START + timedelta(seconds=self.window_rows)

    def bound(self, value: datetime) -> datetime:
        """``value`` as the cursor column holds it: aware in PostgreSQL, naive UTC elsewhere."""
        return value if self.database == "postgres" else value.replace(tzinfo=None)

    def query(self) -> str:
        def literal(value: datetime) -> str:
            text = value.strftime("%Y-%m-%d %H:%M:%S.%f")
            return f"'{text}+00'" if self.database == "postgres" else f"'{text}'"
        return (f"SELECT * FROM {TABLE} WHERE updated_at > {literal(START)} "
                f"AND updated_at <= {literal(self.hi)} ORDER BY updated_at")


def read_ours(read: Read, parallel_reads: int = 1) -> Iterator[Batch]:
    from etl_assets.sources.sql.source import SqlSource
    from etl_assets.sources.sql.spec import SqlSourceSpec
    from etl_assets.watermark import Window

    spec = SqlSourceSpec(connection={"url": "sqlite://"}, table=TABLE, cursor="updated_at",
                         primary_key=["id"], chunk_rows=read.chunk_rows,
                         parallel_reads=parallel_reads)
    source = SqlSource("bench", spec, read.url)
    window = Window(START, read.hi)
    try:
        yield from source.extract(window)
        said = reader_said(source, window)
        if said:
            read.notes.append(said)
    finally:
        source.dispose()


def reader_said(source: object, window: object) -> str | None:
    """The reader ``source`` says it used for ``window``, if it says (any attribute named
    ``reader_name`` or ``reader``: a value, or a method taking the window or nothing)."""
    for name in ("reader_name", "reader"):
        value = getattr(source, name, None)
        if value is None:
            continue
        if callable(value):
            try:
                try:
                    value = value(window)
                except TypeError:
                    value = value()
            except Exception as exc:
                return f"{name}() failed: {exc!r}"
        return str(getattr(value, "name", value))
    return None


def read_connectorx(read: Read) -> Iterator[Batch]:
    import connectorx as cx

    url = make_url(read.url)
    if read.database == "sqlite":
        cx_url = f"sqlite://{url.database}"
    else:
        scheme = "postgresql" if read.database == "postgres" else "mysql"
        cx_url = url.set(drivername=scheme).render_as_string(hide_password=False)
    read_sql: Any = cx.read_sql  # its overloads lack return_type="arrow_stream"
    yield from read_sql(cx_url, read.query(), return_type="arrow_stream",
                        batch_size=read.chunk_rows)


def read_pandas(read: Read) -> Iterator[Batch]:
    import pandas as pd

    engine = sa.create_engine(read.url)
    try:
        with engine.connect() as conn:
            yield from pd.read_sql(sa.text(read.query()),
                                   conn.execution_options(stream_results=True),
                                   chunksize=read.chunk_rows)
    finally:
        engine.dispose()


def read_dlt(read: Read) -> Iterator[Batch]:
    # imported by name: dlt is in the `bench` extra only, which `make lint` does not install
    dlt = importlib.import_module("dlt")
    sql_database = importlib.import_module("dlt.sources.sql_database")
    incremental = dlt.sources.incremental(
        "updated_at", initial_value=read.bound(START), end_value=read.bound(read.hi),
        range_start="open", range_end="closed", row_order="asc")
    yield from sql_database.sql_table(credentials=read.url, table=TABLE, backend="pyarrow",
                                      chunk_size=read.chunk_rows, incremental=incremental)


def read_ours_parallel(read: Read) -> Iterator[Batch]:
    return read_ours(read, parallel_reads=2)


READERS: dict[str, Callable[[Read], Iterator[Batch]]] = {
    "ours": read_ours, "ours-2": read_ours_parallel, "connectorx": read_connectorx,
    "pandas": read_pandas, "dlt": read_dlt}
IMPORTS = {"ours": ["etl_assets.sources.sql.source"],
           "ours-2": ["etl_assets.sources.sql.source"], "connectorx": ["connectorx"],
           "pandas": ["pandas"], "dlt": ["dlt", "dlt.sources.sql_database"]}


class _Said(logging.Handler):
    """Keeps the INFO (and louder) lines etl_assets' loggers emit."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_read(contender: str, read: Read) -> dict[str, Any]:
    """One contender reading the window, in this process (imports are not timed)."""
    for module in IMPORTS[contender]:
        importlib.import_module(module)
    said = _Said()
    ours_logger = logging.getLogger("etl_assets")
    ours_logger.setLevel(logging.INFO)
    ours_logger.addHandler(said)
    began = time.perf_counter()
    rows = 0
    widths = set()
    for batch in READERS[contender](read):  # Arrow batches or tables, or DataFrames
        rows += len(batch)
        widths.add(len(batch.columns))
    seconds = time.perf_counter() - began
    return {"rows": rows, "columns": sorted(widths), "seconds": seconds, "peak_mb": peak_mb(),
            "said": [*read.notes, *said.lines[:5]]}


def baseline_load(contender: str, read: Read, target: str) -> dict[str, Any]:
    """The baseline of part 3: ``contender``'s batches as CSV, each COPYed into ``target``
    (empty, made by the caller) and committed, in this process."""
    import pandas as pd
    import pyarrow as pa

    from bench.pg_upsert import _csv

    for module in IMPORTS[contender]:
        importlib.import_module(module)
    libpq = make_url(read.url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    began = time.perf_counter()
    rows = 0
    with psycopg.connect(libpq) as conn:
        for item in READERS[contender](read):
            batch = (pa.Table.from_pandas(item, preserve_index=False)
                     if isinstance(item, pd.DataFrame) else item)
            columns = sql.SQL(", ").join(map(sql.Identifier, batch.schema.names))
            with conn.transaction(), conn.cursor() as cur, cur.copy(sql.SQL(
                    "COPY {} ({}) FROM STDIN (FORMAT csv)").format(
                    sql.Identifier(target), columns)) as copy:
                copy.write(_csv(batch))
            rows += len(batch)
    return {"rows": rows, "seconds": time.perf_counter() - began, "peak_mb": peak_mb()}


# --- the parent ------------------------------------------------------------------------------

@dataclass
class Run:
    """A finished subprocess: wall seconds, peak MB of its largest process, its output."""

    wall: float
    peak_mb: float
    returncode: int
    stdout: str
    stderr: str

    def result(self) -> dict[str, Any]:
        return dict(json.loads(self.stdout.strip().splitlines()[-1]))


def run_timed(command: list[str], env: dict[str, str] | None = None) -> Run:
    """``command`` as a subprocess, timed from start to exit; its peak memory from wait4 (the
    largest of it and the children it waited for)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err,
                                   stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - began
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(wall, usage.ru_maxrss / 1024, process.returncode,
                   out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def child_command(mode: str, contender: str, database: str, url: str, window_rows: int,
                  chunk_rows: int, target: str = "") -> list[str]:
    return [sys.executable, __file__, mode, contender, "--database", database, "--url", url,
            "--window-rows", str(window_rows), "--chunk-rows", str(chunk_rows),
            "--target", target]


def last_lines(text: str, count: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-count:])


class Databases:
    """The source table in each database; made by :meth:`make`, dropped by :meth:`drop`."""

    def __init__(self, rows: int, folder: Path) -> None:
        self.rows = rows
        self.sqlite_path = folder / "bench_extract.sqlite"
        self.urls: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        self.made: set[str] = set()

    def make(self, database: str) -> None:
        print(f"{database}: generating {self.rows:,} rows x 10 columns ...", file=sys.stderr,
              flush=True)
        began = time.perf_counter()
        self.made.add(database)
        getattr(self, f"_make_{database}")()
        print(f"{database}: {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)

    def _make_postgres(self) -> None:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(DATABASE)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        libpq = make_url(ADMIN_URL).set(database=DATABASE)
        with psycopg.connect(libpq.render_as_string(hide_password=False),
                             autocommit=True) as conn:
            conn.execute(SOURCE_DDL.format(rows=self.rows, step=1).encode())
            conn.execute(f"VACUUM ANALYZE {TABLE}")
            (version,) = conn.execute("SHOW server_version").fetchone() or ("?",)
        self.versions["postgres"] = f"PostgreSQL {version}".split(" (")[0]
        self.urls["postgres"] = libpq.set(drivername="postgresql+psycopg").render_as_string(
            hide_password=False)

    def _mariadb_admin(self) -> sa.Engine:
        return sa.create_engine(make_url(MARIADB_URL).set(database=None))

    def _make_mariadb(self) -> None:
        admin = self._mariadb_admin()
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {DATABASE}")
                conn.exec_driver_sql(f"CREATE DATABASE {DATABASE}")
                self.versions["mariadb"] = "MariaDB " + str(
                    conn.exec_driver_sql("SELECT VERSION()").scalar()).split("-")[0]
        finally:
            admin.dispose()
        url = make_url(MARIADB_URL).set(database=DATABASE)
        engine = sa.create_engine(url)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(MARIADB_DDL)
                conn.exec_driver_sql(MARIADB_FILL.format(rows=self.rows))
                conn.exec_driver_sql(f"CREATE INDEX {TABLE}_updated_at ON {TABLE} (updated_at)")
                conn.exec_driver_sql(f"ANALYZE TABLE {TABLE}")
        finally:
            engine.dispose()
        self.urls["mariadb"] = url.render_as_string(hide_password=False)

    def _make_sqlite(self) -> None:
        self.sqlite_path.unlink(missing_ok=True)
        with sqlite3.connect(self.sqlite_path) as conn:
            conn.executescript(SQLITE_DDL.format(rows=self.rows))
            conn.execute("ANALYZE")
        conn.close()
        self.versions["sqlite"] = f"SQLite {sqlite3.sqlite_version}"
        self.urls["sqlite"] = f"sqlite:///{self.sqlite_path}"

    def drop(self) -> None:
        if "postgres" in self.made:
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                for name in (DATABASE, DAGSTER_DATABASE):
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(name)))
        if "mariadb" in self.made:
            admin = self._mariadb_admin()
            try:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {DATABASE}")
            finally:
                admin.dispose()


Results = dict[tuple[str, str], list[dict[str, Any]]]


def extraction(databases: Databases, names: list[str], contenders: list[str],
               args: argparse.Namespace) -> tuple[Results, dict[tuple[str, str], str]]:
    """Part 1: every contender on every database, ``--repeats`` times, interleaved."""
    results: Results = {}
    failed: dict[tuple[str, str], str] = {}
    for repeat in range(args.repeats):
        for database in names:
            for contender in contenders:
                if (database, contender) in failed:
                    continue
                run = run_timed(child_command("--read", contender, database,
                                              databases.urls[database], args.rows,
                                              args.chunk_rows))
                if run.returncode:
                    failed[(database, contender)] = last_lines(run.stderr, 1)
                    print(f"  {database} {contender}: FAILED: {last_lines(run.stderr, 12)}",
                          file=sys.stderr, flush=True)
                    continue
                result = run.result()
                if result["rows"] != args.rows or result["columns"] != [10]:
                    raise SystemExit(f"{database} {contender} read {result['rows']:,} rows of "
                                     f"{result['columns']} columns, not {args.rows:,} of 10")
                results.setdefault((database, contender), []).append(result)
                print(f"  repeat {repeat + 1}: {database} {contender}: "
                      f"{result['seconds']:.2f} s, {result['peak_mb']:.0f} MB",
                      file=sys.stderr, flush=True)
    return results, failed


def small_peaks(databases: Databases, names: list[str], results: Results,
                args: argparse.Namespace) -> dict[str, float]:
    """Part 2: ours' peak MB reading a window of the first tenth of the rows (on the
    databases where ours ran in part 1)."""
    small = max(args.rows // 10, 1)
    peaks = {}
    for database in names:
        if (database, "ours") not in results:
            continue
        run = run_timed(child_command("--read", "ours", database, databases.urls[database],
                                      small, args.chunk_rows))
        if run.returncode:
            raise SystemExit(f"{database} ours at {small:,} rows failed:\n{run.stderr[-3000:]}")
        result = run.result()
        if result["rows"] != small:
            raise SystemExit(f"{database} ours read {result['rows']:,} rows, not {small:,}")
        peaks[database] = result["peak_mb"]
    return peaks


def spec_file(folder: Path) -> Path:
    path = folder / "bench_extract.yaml"
    path.write_text(json.dumps({
        "sources": {"bench": {
            "connection": {"env": "BENCH_SOURCE_URL"}, "table": TABLE, "cursor": "updated_at",
            "primary_key": ["id"], "chunk_rows": 50_000}},
        "sinks": {"bench_pg": {
            "source": "bench", "kind": "postgres", "connection": {"env": "BENCH_TARGET_URL"},
            "table": "e2e_target"}},
        "staging": {"root": str(folder / "staging")},
    }))
    return path


def count_rows(url: str, table: str) -> int:
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq) as conn:
        (count,) = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(table))).fetchone() or (0,)
    return int(count)


def postgres_execute(url: str, *statements: sql.Composed | str) -> None:
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def end_to_end(databases: Databases, reader: str, args: argparse.Namespace, folder: Path
               ) -> dict[str, list[Run | dict[str, Any]]]:
    """Part 3: the window as one partition through ``dagster job execute``, and the baseline
    (``reader`` + CSV + COPY), ``--e2e-repeats`` times each, into a fresh table each time."""
    from etl_assets.watermark import Window, partitions_name

    url = databases.urls["postgres"]
    home = folder / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster.yaml", home)
    admin = make_url(ADMIN_URL)
    postgres_execute(ADMIN_URL, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
        sql.Identifier(DAGSTER_DATABASE)), sql.SQL("CREATE DATABASE {}").format(
        sql.Identifier(DAGSTER_DATABASE)))
    env = {**os.environ, "BENCH_SOURCE_URL": url, "BENCH_TARGET_URL": url,
           "DAGSTER_HOME": str(home), "ETL_ASSETS_SPEC": str(spec_file(folder)),
           "ETL_ASSETS_HOME": str(home),
           "DAGSTER_PG_HOST": admin.host or "127.0.0.1", "DAGSTER_PG_PORT": str(admin.port or 5432),
           "DAGSTER_PG_USER": admin.username or "postgres",
           "DAGSTER_PG_PASSWORD": admin.password or "", "DAGSTER_PG_DB": DAGSTER_DATABASE,
           # Dagster 1.13 warns on each `dagster job execute` (see the Makefile)
           "PYTHONWARNINGS": "ignore:Function `job_execute_command` is superseded"}
    key = Window(START, START + timedelta(seconds=args.rows)).key
    subprocess.run([sys.executable, "-c", (
        "from dagster import DagsterInstance\n"
        f"with DagsterInstance.get() as i: i.add_dynamic_partitions("
        f"{partitions_name('bench')!r}, [{key!r}])")], env=env, check=True)
    dagster = str(Path(sys.executable).with_name("dagster"))
    job = [dagster, "job", "execute", "-m", "etl_assets.definitions", "-j", "bench_job",
           "--tags", json.dumps({"dagster/partition": key})]
    runs: dict[str, list[Run | dict[str, Any]]] = {"job": [], "baseline": [],
                                                   "baseline in-process": []}
    for repeat in range(args.e2e_repeats):
        postgres_execute(url, "DROP TABLE IF EXISTS e2e_target")
        run = run_timed(job, env)
        if run.returncode:
            raise SystemExit(f"dagster job execute failed:\n{run.stdout[-2000:]}\n"
                             f"{run.stderr[-3000:]}")
        landed = count_rows(url, "e2e_target")
        if landed != args.rows:
            raise SystemExit(f"dagster job execute: {landed:,} rows landed, not {args.rows:,}")
        runs["job"].append(run)
        print(f"  repeat {repeat + 1}: dagster job execute: {run.wall:.1f} s, "
              f"{run.peak_mb:.0f} MB", file=sys.stderr, flush=True)

        postgres_execute(url, "DROP TABLE IF EXISTS e2e_baseline",
                         f"CREATE TABLE e2e_baseline (LIKE {TABLE})",  # as the sink makes
                         "ALTER TABLE e2e_baseline ADD PRIMARY KEY (id)")  # e2e_target
        run = run_timed(child_command("--baseline", reader, "postgres", url, args.rows,
                                      args.chunk_rows, "e2e_baseline"))
        if run.returncode:
            raise SystemExit(f"baseline failed:\n{run.stderr[-3000:]}")
        landed = count_rows(url, "e2e_baseline")
        if landed != args.rows:
            raise SystemExit(f"baseline: {landed:,} rows landed, not {args.rows:,}")
        runs["baseline"].append(run)
        runs["baseline in-process"].append(run.result())
        print(f"  repeat {repeat + 1}: {reader} + COPY: {run.wall:.1f} s, {run.peak_mb:.0f} MB",
              file=sys.stderr, flush=True)
    return runs


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("connectorx", "pandas", "dlt", "SQLAlchemy", "pyarrow", "psycopg",
                    "PyMySQL"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} (not installed)")
    return ", ".join(found)


def report_extraction(results: Results, failed: dict[tuple[str, str], str],
                      databases: Databases, names: list[str], contenders: list[str],
                      args: argparse.Namespace) -> None:
    print(f"\n== 1. extraction: {args.rows:,} rows x 10 columns, one window, "
          f"{args.chunk_rows:,} rows a batch, median of {args.repeats}")
    print(versions())

    def median(database: str, contender: str, key: str) -> float:
        return statistics.median(r[key] for r in results[(database, contender)])

    for database in names:
        print(f"\n{database} ({databases.versions.get(database, '?')})")
        print(f"{'contender':<14}{'seconds':>9}{'rows/s':>12}{'peak MB':>9}")
        for contender in contenders:
            if (database, contender) in failed:
                print(f"{contender:<14}  FAILED: {failed[(database, contender)][:300]}")
                continue
            seconds = median(database, contender, "seconds")
            print(f"{contender:<14}{seconds:>9.2f}{args.rows / seconds:>12,.0f}"
                  f"{median(database, contender, 'peak_mb'):>9.0f}")
        if (database, "ours") in results:
            said = sorted({line for r in results[(database, "ours")] for line in r["said"]})
            print(f"ours' reader: {'; '.join(said) if said else '(the source does not say)'}")
            if (database, "connectorx") in results:
                ratio = (median(database, "connectorx", "seconds")
                         / median(database, "ours", "seconds"))
                print(f"connectorx seconds / ours seconds = {ratio:.2f} (goal >= 0.9): "
                      f"{'met' if ratio >= 0.9 else 'NOT met'}")


def report_memory(results: Results, peaks: dict[str, float], names: list[str],
                  args: argparse.Namespace) -> None:
    small = max(args.rows // 10, 1)
    print(f"\n== 2. ours' peak memory at {small:,} and {args.rows:,} rows (flat in the row "
          f"count)")
    print(f"{'database':<12}{f'{small:,} rows':>16}{f'{args.rows:,} rows':>16}")
    for database in names:
        if database not in peaks:
            print(f"{database:<12}  (ours did not run)")
            continue
        full = statistics.median(r["peak_mb"] for r in results[(database, "ours")])
        print(f"{database:<12}{peaks[database]:>13.0f} MB{full:>13.0f} MB")


def report_end_to_end(runs: dict[str, list[Run | dict[str, Any]]], reader: str,
                      args: argparse.Namespace) -> None:
    def wall(name: str) -> float:
        return statistics.median(r.wall if isinstance(r, Run) else r["seconds"]
                                 for r in runs[name])

    def peak(name: str) -> float:
        return max(r.peak_mb if isinstance(r, Run) else r["peak_mb"] for r in runs[name])

    print(f"\n== 3. end to end, PostgreSQL to PostgreSQL: {args.rows:,} rows as one partition, "
          f"median of {args.e2e_repeats}")
    print(f"{'contender':<46}{'seconds':>9}{'rows/s':>12}{'peak MB':>9}")
    rows = [("dagster job execute (subprocess wall)", "job"),
            (f"{reader} + CSV + COPY (subprocess wall)", "baseline"),
            (f"{reader} + CSV + COPY (in process)", "baseline in-process")]
    for label, name in rows:
        seconds = wall(name)
        print(f"{label:<46}{seconds:>9.2f}{args.rows / seconds:>12,.0f}{peak(name):>9.0f}")
    ratio = wall("job") / wall("baseline")
    print(f"job / baseline (both subprocess wall) = {ratio:.2f} (goal <= 1.3): "
          f"{'met' if ratio <= 1.3 else 'NOT met'}; job / baseline in process = "
          f"{wall('job') / wall('baseline in-process'):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each contender (the "
                                                               "median is shown)")
    parser.add_argument("--e2e-repeats", type=int, help="runs of part 3 (default: --repeats)")
    parser.add_argument("--databases", default=",".join(DATABASES))
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--read", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--window-rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read or args.baseline:
        read = Read(args.database, args.url, args.window_rows, args.chunk_rows)
        result = (one_read(args.read, read) if args.read
                  else baseline_load(args.baseline, read, args.target))
        print(json.dumps(result))
        return
    if args.e2e_repeats is None:
        args.e2e_repeats = args.repeats

    names = [n for n in args.databases.split(",") if n]
    contenders = [c for c in args.contenders.split(",") if c]
    unknown = sorted(set(names) - set(DATABASES)) + sorted(set(contenders) - set(CONTENDERS))
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        databases = Databases(args.rows, folder)
        try:
            for database in names:
                databases.make(database)
            results, failed = extraction(databases, names, contenders, args)
            peaks = small_peaks(databases, names, results, args) if "ours" in contenders else {}
            runs = None
            reader = "connectorx"
            if "postgres" in names:
                ran = [c for c in contenders if ("postgres", c) in results]
                if ran:
                    reader = min(ran, key=lambda c: statistics.median(
                        r["seconds"] for r in results[("postgres", c)]))
                print(f"end to end: dagster job execute vs {reader} + COPY ...",
                      file=sys.stderr, flush=True)
                runs = end_to_end(databases, reader, args, folder)
        finally:
            databases.drop()
    report_extraction(results, failed, databases, names, contenders, args)
    if peaks:
        report_memory(results, peaks, names, args)
    if runs:
        report_end_to_end(runs, reader, args)
    print(f"\n(the whole bench took {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
