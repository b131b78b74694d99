"""Benchmark: upserting 1M rows x 10 columns into MariaDB/MySQL, ours side by side with peers.

Contenders, each in its own process (peak memory = that process's VmHWM), on the same
generated Arrow batches as bench/pg_upsert.py and the same declared table (BIGINT PK,
DATETIME(6), VARCHAR(32), TEXT, INT, DOUBLE, BOOLEAN, DATE, DECIMAL(12,2), JSON), made by the
bench before each contender, one transaction per batch:

- ours:        etl_assets' MysqlUpsertWriter (the declared table passed; watermark kept;
               conflict newest: a row replaces the stored one only when its cursor is not older;
               ``local_infile_refused: fail``, so its INSERT fallback is never what is timed)
- ours-last-write: the same with conflict last_write (no newest-wins guard): the guard's cost
- hand-written: pymysql; each batch made TSV by pyarrow compute (strings escaped, nulls as
               \\N, timestamps as UTC 'YYYY-MM-DD HH:MM:SS.ffffff', no per-row Python), written
               to a temp file, ``LOAD DATA LOCAL INFILE`` into a ``CREATE TEMPORARY TABLE ..
               LIKE`` the target (a batch with warnings fails: with LOCAL, bad values are only
               warnings), ``INSERT INTO target SELECT * FROM tmp ON DUPLICATE KEY UPDATE
               c = VALUES(c), ...``, commit, ``TRUNCATE`` tmp
- pandas-to_sql: ``RecordBatch.to_pandas()`` then ``DataFrame.to_sql(..., method="multi",
               chunksize=1000)`` on a SQLAlchemy + pymysql connection (the to_pandas is
               counted: it is what a user of it has to do). to_sql only appends (api2db, whose
               SQL store is ``to_sql(if_exists="append")``, has no update), so: into the empty
               table, straight into the target; into the full table, the usual pandas upsert
               recipe: to_sql into a staging table made ``LIKE`` the target before the first
               batch, then ``INSERT INTO target SELECT * FROM staging ON DUPLICATE KEY UPDATE``
               (both in the batch's transaction), commit, ``TRUNCATE`` staging; the staging
               table is dropped at the end (its DDL is timed too)
- pandas-to_sql-default: the same with to_sql's default method (None: an executemany of each
               1000-row chunk, which pymysql rewrites into multi-row INSERTs of up to 1 MB),
               api2db's own call; about 4x faster than method="multi" here, which has SQLAlchemy
               compile one statement of 10,000 bound parameters a chunk

Phases: into an empty table; again with the same rows into the full table; again with every
row changed (``reading``). After each phase every row of the target is checked in SQL against
the generator (all ten columns, a count and SUM(reading)): a contender that drops or mangles
rows fails the bench. Prints seconds, rows/s and peak MB per contender and phase, then ratios
(goals: ours >= 0.8x hand-written, >= 5x pandas-to_sql); and ours' peak at a fifth of the rows
(memory flat in the row count).

Server: $BENCH_MARIADB_URL (else mysql+pymysql://root@127.0.0.1:3306/), ``local_infile`` on;
a database ``bench_mysql_<hex>`` is made and dropped here.

    .venv/bin/python bench/mysql_upsert.py [--rows 1000000] [--batch-rows 50000] [--repeat 1]
        [--contenders ours,ours-last-write,hand-written,pandas-to_sql,pandas-to_sql-default]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pymysql
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import make_url

from bench.pg_upsert import generated_batches, report
from bench.process_memory import peak_mb

if TYPE_CHECKING:
    from etl_assets.settings import Conflict

ADMIN_URL = os.environ.get("BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/")
CONTENDERS = ("ours", "ours-last-write", "hand-written", "pandas-to_sql",
              "pandas-to_sql-default")
PHASES = ("empty table", "full table, same rows", "full table, all rows changed")
GOALS = {"hand-written": 0.8, "pandas-to_sql": 5.0}  # ours' speed relative to the peer
TABLE = "bench_target"
TO_SQL_CHUNK = 1000  # rows a to_sql chunk: an INSERT with method="multi"


class Runner(Protocol):
    """A contender: writes ``batches`` into the target; ``phase`` 0 is the empty table."""

    def __call__(self, url: str, batches: Iterator[pa.RecordBatch], phase: int) -> None: ...


def declared_table() -> sa.Table:
    """The target every contender writes (SQLAlchemy, MySQL types)."""
    return sa.Table(
        TABLE, sa.MetaData(),
        sa.Column("id", mysql.BIGINT, primary_key=True, autoincrement=False),
        sa.Column("updated_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.Column("code", mysql.VARCHAR(32)),
        sa.Column("description", mysql.TEXT),
        sa.Column("site", mysql.INTEGER),
        sa.Column("reading", mysql.DOUBLE),
        sa.Column("active", mysql.BOOLEAN),
        sa.Column("day", mysql.DATE),
        sa.Column("amount", mysql.DECIMAL(12, 2)),
        sa.Column("attrs", mysql.JSON))


COLUMNS = [c.name for c in declared_table().columns]
ON_DUPLICATE = ", ".join(f"`{c}` = VALUES(`{c}`)" for c in COLUMNS if c != "id")


def connect(url: str, **kwargs: Any) -> pymysql.Connection[Any]:  # noqa: ANN401
    """A pymysql connection to a SQLAlchemy-style URL (``kwargs`` passed on)."""
    parsed = make_url(url)
    return pymysql.connect(host=parsed.host or "127.0.0.1", port=parsed.port or 3306,
                           user=parsed.username or "root", password=parsed.password or "",
                           database=parsed.database, charset="utf8mb4", **kwargs)


def create_target(url: str) -> None:
    """A fresh, empty target table (dropped first, with any staging table)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {TABLE}, bench_stage")
    declared_table().metadata.create_all(engine)
    engine.dispose()


# -- contenders ----------------------------------------------------------------------------

def run_ours(url: str, batches: Iterator[pa.RecordBatch], phase: int,
             conflict: Conflict = "newest") -> None:
    """MysqlUpsertWriter, as the MySQL sink drives it (a window's watermark, newest wins)."""
    from etl_assets.batches import with_last
    from etl_assets.sinks.comment_watermark import WatermarkTarget
    from etl_assets.sinks.mysql.writer import MysqlUpsertWriter
    from etl_assets.watermark import Window

    first = next(batches)
    window = Window.from_key("20240101T000000Z..20250101T000000Z")
    with MysqlUpsertWriter(url, TABLE, ["id"], "etl_stage_bench",
                           watermark=WatermarkTarget("updated_at", window, window.key),
                           conflict=conflict, cursor_column="updated_at",
                           declared_table=declared_table(),
                           local_infile_refused="fail") as writer:  # never the INSERT fallback
        writer.prepare(first.schema)
        for batch, final in with_last(itertools.chain([first], batches)):
            writer.write(batch, final=final)
        writer.finish()


def run_ours_last_write(url: str, batches: Iterator[pa.RecordBatch], phase: int) -> None:
    """Ours without the newest-wins guard."""
    run_ours(url, batches, phase, conflict="last_write")


def _escaped(text: pa.Array) -> pa.Array:
    """Strings escaped for LOAD DATA's defaults (ESCAPED BY '\\\\', tab fields, newline lines)."""
    for char, escape in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n")):
        text = pc.replace_substring(text, char, escape)
    return text


def _as_text(column: pa.Array) -> pa.Array:
    """One column as the text LOAD DATA reads into its MySQL type."""
    kind = column.type
    if pa.types.is_timestamp(kind):  # zoned: the UTC wall clock; %S carries the microseconds
        return pc.strftime(column.cast(pa.timestamp(kind.unit)), format="%Y-%m-%d %H:%M:%S")
    if pa.types.is_boolean(kind):
        return pc.cast(pc.cast(column, pa.int8()), pa.string())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _escaped(column)
    return pc.cast(column, pa.string())


def tsv(batch: pa.RecordBatch) -> pa.Buffer:
    """``batch`` as LOAD DATA's default text (tab fields, \\N nulls, newline-ended lines),
    the joined string array's data buffer itself."""
    lines = pc.binary_join_element_wise(
        *[_as_text(column) for column in batch.columns], "\t",
        null_handling="replace", null_replacement="\\N")
    lines = pc.binary_join_element_wise(lines, "", "\n")  # each row + "\n"
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1,
                            offset=lines.offset * 4)
    data: pa.Buffer = lines.buffers()[2]
    return data.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def run_hand_written(url: str, batches: Iterator[pa.RecordBatch], phase: int) -> None:
    """TSV file -> LOAD DATA LOCAL into a temporary table -> INSERT .. ON DUPLICATE KEY."""
    columns = ", ".join(f"`{c}`" for c in COLUMNS)
    upsert = (f"INSERT INTO {TABLE} ({columns}) SELECT {columns} FROM bench_tmp "
              f"ON DUPLICATE KEY UPDATE {ON_DUPLICATE}")
    conn = connect(url, local_infile=True)
    try:
        with tempfile.TemporaryDirectory() as tmp, conn.cursor() as cur:
            path = Path(tmp, "batch.tsv")
            load = (f"LOAD DATA LOCAL INFILE {conn.escape(str(path))} INTO TABLE bench_tmp "
                    f"CHARACTER SET utf8mb4 ({columns})")
            cur.execute(f"CREATE TEMPORARY TABLE bench_tmp LIKE {TABLE}")
            for batch in batches:
                with path.open("wb") as file:
                    file.write(tsv(batch))
                loaded = cur.execute(load)
                if cur.warning_count or loaded != batch.num_rows:
                    raise RuntimeError(f"LOAD DATA: {loaded} of {batch.num_rows} rows, "
                                       f"{conn.show_warnings()[:5]}")
                cur.execute(upsert)
                conn.commit()
                cur.execute("TRUNCATE bench_tmp")
    finally:
        conn.close()


def run_pandas_to_sql(url: str, batches: Iterator[pa.RecordBatch], phase: int,
                      method: Literal["multi"] | None = "multi") -> None:
    """to_sql into the empty target; into the full one through a staging table + upsert."""
    engine = sa.create_engine(url)
    staged = phase > 0  # the target holds rows: to_sql can only append, so stage and upsert
    columns = ", ".join(f"`{c}`" for c in COLUMNS)
    with engine.connect() as conn:
        if staged:
            conn.exec_driver_sql(f"CREATE TABLE bench_stage LIKE {TABLE}")
            conn.commit()
        for batch in batches:
            frame = batch.to_pandas()
            with conn.begin():
                frame.to_sql("bench_stage" if staged else TABLE, conn, if_exists="append",
                             index=False, method=method, chunksize=TO_SQL_CHUNK)
                if staged:
                    conn.exec_driver_sql(
                        f"INSERT INTO {TABLE} ({columns}) SELECT {columns} FROM bench_stage "
                        f"ON DUPLICATE KEY UPDATE {ON_DUPLICATE}")
            if staged:
                conn.exec_driver_sql("TRUNCATE bench_stage")
                conn.commit()
        if staged:
            conn.exec_driver_sql("DROP TABLE bench_stage")
            conn.commit()
    engine.dispose()


def run_pandas_to_sql_default(url: str, batches: Iterator[pa.RecordBatch], phase: int) -> None:
    """The same with to_sql's default method (executemany)."""
    run_pandas_to_sql(url, batches, phase, method=None)


RUNNERS: dict[str, Runner] = {
    "ours": run_ours, "ours-last-write": run_ours_last_write,
    "hand-written": run_hand_written, "pandas-to_sql": run_pandas_to_sql,
    "pandas-to_sql-default": run_pandas_to_sql_default}
WARM_IMPORTS = {"ours": ["etl_assets.sinks.mysql.writer"],
                "ours-last-write": ["etl_assets.sinks.mysql.writer"],
                "pandas-to_sql": ["pandas", "sqlalchemy.dialects.mysql.pymysql"],
                "pandas-to_sql-default": ["pandas", "sqlalchemy.dialects.mysql.pymysql"]}


# -- harness -------------------------------------------------------------------------------

def one_run(contender: str, url: str, rows: int, batch_rows: int, phase: int,
            generation: int) -> dict[str, float]:
    """One contender, one phase, in this process (imports are not timed)."""
    import importlib

    for module in WARM_IMPORTS.get(contender, []):
        importlib.import_module(module)
    began = time.perf_counter()
    RUNNERS[contender](url, generated_batches(rows, batch_rows, generation), phase)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "peak_mb": peak_mb()}


def _subprocess(contender: str, url: str, rows: int, batch_rows: int, phase: int,
                generation: int) -> dict[str, float]:
    """One contender, one phase, in a process of its own (this file with --run)."""
    out = subprocess.run(
        [sys.executable, __file__, "--run", contender, "--url", url, "--rows", str(rows),
         "--batch-rows", str(batch_rows), "--phase", str(phase), "--generation",
         str(generation)], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{contender} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# Each row as generated_batches makes it (row g: updated at 2024-01-01 + g s, UTC).
_ROW_AS_GENERATED = """
  updated_at = TIMESTAMP '2024-01-01 00:00:00' + INTERVAL id SECOND
  AND code = CONCAT('SEN-', id) AND description = REPEAT('description ', 1 + MOD(id, 5))
  AND site = MOD(id, 1000) AND ABS(reading - (id * 0.001 + %s)) < 1e-6
  AND active = (MOD(id, 2) = 0) AND day = DATE '2024-01-01' + INTERVAL MOD(id, 365) DAY
  AND amount = MOD(id, 100000) / 100
  AND JSON_VALUE(attrs, '$.g') = id AND JSON_VALUE(attrs, '$.tag') = CONCAT('x', MOD(id, 10))
"""  # MOD, not %: pymysql formats the statement with %


def _check_landed(url: str, label: str, rows: int, generation: int) -> None:
    """Exit unless the target holds exactly the generated rows of ``generation``."""
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*), COALESCE(SUM({_ROW_AS_GENERATED}), 0), "
                        f"COALESCE(SUM(reading), 0) FROM {TABLE}", (generation,))
            count, matching, total = cur.fetchone() or (0, 0, 0)
    finally:
        conn.close()
    expected = 0.001 * rows * (rows + 1) / 2 + generation * rows
    if count != rows or matching != rows or abs(total - expected) > 1e-6 * max(expected, 1):
        sys.exit(f"{label}: {count:,} rows, {int(matching):,} as generated (generation "
                 f"{generation}), SUM(reading) {total:.3f}; expected {rows:,} rows and "
                 f"{expected:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender and phase "
                                                              "(the median is shown)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--phase", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--generation", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(one_run(args.run, args.url, args.rows, args.batch_rows, args.phase,
                                 args.generation)))
        return

    contenders = args.contenders.split(",")
    unknown = set(contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders {sorted(unknown)}; known: {', '.join(CONTENDERS)}")
    database = f"bench_mysql_{uuid.uuid4().hex[:8]}"
    admin = connect(ADMIN_URL, autocommit=True)
    with admin.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.local_infile")
        if not (cur.fetchone() or (0,))[0]:
            sys.exit("the server refuses LOAD DATA LOCAL INFILE: SET GLOBAL local_infile = 1 "
                     "(the MySQL sink's tests turn it off for a moment: not while they run)")
        cur.execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")
    url = make_url(ADMIN_URL).set(database=database).render_as_string(hide_password=False)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    small = max(args.rows // 5, args.batch_rows)
    small_peak: float | None = None
    try:
        for _ in range(args.repeat):
            for contender in contenders:
                create_target(url)
                for phase_index, (generation, phase) in enumerate(
                        zip((0, 0, 1), PHASES, strict=True)):
                    print(f"{contender}: {phase} ...", file=sys.stderr)
                    result = _subprocess(contender, url, args.rows, args.batch_rows,
                                         phase_index, generation)
                    _check_landed(url, f"{contender}, {phase}", args.rows, generation)
                    results.setdefault((contender, phase), []).append(result)
        if "ours" in contenders:
            create_target(url)
            small_peak = _subprocess("ours", url, small, args.batch_rows, 0, 0)["peak_mb"]
            _check_landed(url, f"ours, {small:,} rows", small, 0)
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
        admin.close()
    report(args, contenders, results, small, small_peak, GOALS)


if __name__ == "__main__":
    main()
