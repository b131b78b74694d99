"""Benchmark: upserting 1M rows x 10 columns into PostgreSQL, ours side by side with peers.

Contenders, each in its own process (peak memory = that process's VmHWM), on the same
generated Arrow batches and the same declared table (bigint PK, timestamptz, varchar, text,
int, double, bool, date, numeric, jsonb), one transaction per batch:

- ours:        etl_assets' PostgresUpsertWriter (watermark kept in the table comment too;
               conflict newest: a row replaces the stored one only when its cursor is not older)
- ours-last-write: the same with conflict last_write (no newest-wins guard): the guard's cost
- hand-written: pyarrow CSV -> COPY into a temp table -> INSERT .. ON CONFLICT DO UPDATE
- pg-bulk-ingest 0.1.3 (`bench` extra): rows given as Python tuples, as its API takes them
  (the Arrow -> tuple conversion is counted: it is what a user of it has to do)

Phases: into an empty table; again with the same rows into the full table; again with every
row changed. Prints seconds, rows/s and peak MB per contender and phase, then ratios; and
ours' peak at a fifth of the rows (memory flat in the row count).

    .venv/bin/python bench/pg_upsert.py [--rows 1000000] [--batch-rows 50000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import make_url

from bench.process_memory import peak_mb

if TYPE_CHECKING:
    from etl_assets.settings import Conflict

ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CONTENDERS = ("ours", "ours-last-write", "hand-written", "pg-bulk-ingest")
PHASES = ("empty table", "full table, same rows", "full table, all rows changed")
START_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z


def declared_table(schema: str) -> sa.Table:
    """The target every contender writes (SQLAlchemy, database-level types)."""
    return sa.Table(
        "bench_target", sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("code", sa.String(32)),
        sa.Column("description", sa.Text),
        sa.Column("site", sa.Integer),
        sa.Column("reading", sa.Float(53)),
        sa.Column("active", sa.Boolean),
        sa.Column("day", sa.Date),
        sa.Column("amount", sa.Numeric(12, 2)),
        sa.Column("attrs", pg.JSONB),
        schema=schema)


def generated_batches(rows: int, batch_rows: int, generation: int) -> Iterator[pa.RecordBatch]:
    """``rows`` rows in batches; ``generation`` changes every row's ``reading``."""
    from etl_assets.arrow_types import logical_field

    schema = pa.schema([
        pa.field("id", pa.int64(), nullable=False),
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
        pa.field("code", pa.string()), pa.field("description", pa.string()),
        pa.field("site", pa.int32()), pa.field("reading", pa.float64()),
        pa.field("active", pa.bool_()), pa.field("day", pa.date32()),
        pa.field("amount", pa.decimal128(12, 2)), logical_field("attrs", "json")])
    words = np.array(["description " * k for k in range(1, 6)], dtype=object)
    for lo in range(0, rows, batch_rows):
        ids = np.arange(lo + 1, min(lo + batch_rows, rows) + 1, dtype=np.int64)
        codes = pa.array(np.char.add("SEN-", ids.astype(str)).astype(object))
        amounts = pc.multiply(pa.array(ids % 100_000).cast(pa.decimal128(19, 0)),
                              pa.scalar(Decimal("0.01"), pa.decimal128(3, 2)))
        attrs = [f'{{"g": {i}, "tag": "x{i % 10}"}}' for i in ids.tolist()]
        yield pa.RecordBatch.from_arrays([
            pa.array(ids),
            pa.array(START_US + ids * 1_000_000, pa.timestamp("us", tz="UTC")),
            codes, pa.array(words[ids % 5]),
            pa.array((ids % 1000).astype(np.int32)),
            pa.array(ids * 0.001 + generation),
            pa.array(ids % 2 == 0),
            pa.array((19723 + ids % 365).astype(np.int32), pa.int32()).cast(pa.date32()),
            amounts.cast(pa.decimal128(12, 2)),
            pa.array(attrs, pa.string())], schema=schema)


def run_ours(url: str, schema: str, batches: Iterator[pa.RecordBatch],
             conflict: Conflict = "newest") -> None:
    from etl_assets.sinks.postgres.watermark import WatermarkTarget
    from etl_assets.sinks.postgres.writer import PostgresUpsertWriter
    from etl_assets.watermark import Window

    first = next(batches)
    window = Window.from_key("20240101T000000Z..20250101T000000Z")
    with PostgresUpsertWriter(url, f"{schema}.bench_target", ["id"], "etl_stage_bench",
                              declared_table=declared_table(schema),
                              watermark=WatermarkTarget("updated_at", window, window.key),
                              conflict=conflict) as writer:
        writer.prepare(first.schema)
        writer.write(first)
        for batch in batches:
            writer.write(batch)
        writer.finish()


def _csv(batch: pa.RecordBatch) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(batch, sink, pacsv.WriteOptions(include_header=False,
                                                   quoting_style="all_valid"))
    return sink.getvalue()


def run_hand_written(url: str, schema: str, batches: Iterator[pa.RecordBatch]) -> None:
    table = declared_table(schema)
    engine = sa.create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    table.metadata.create_all(engine)
    engine.dispose()
    columns = [c.name for c in table.columns]
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    target = sql.Identifier(schema, "bench_target")
    upsert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM bench_tmp ON CONFLICT (id) "
                     "DO UPDATE SET {}").format(
        target, cols, cols, sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in columns if c != "id"))
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("CREATE TEMP TABLE bench_tmp ON COMMIT DELETE ROWS AS "
                             "SELECT * FROM {} WITH NO DATA").format(target))
        conn.commit()
        for batch in batches:
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(sql.SQL("COPY bench_tmp ({}) FROM STDIN (FORMAT csv)").format(
                        cols)) as copy:
                    copy.write(_csv(batch))
                cur.execute(upsert)


def run_pg_bulk_ingest(url: str, schema: str, batches: Iterator[pa.RecordBatch]) -> None:
    from pg_bulk_ingest import Delete, HighWatermark, Upsert, ingest

    table = declared_table(schema)

    def rows_of(batch: pa.RecordBatch) -> Iterator[tuple[sa.Table, tuple]]:
        columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        attrs = batch.schema.get_field_index("attrs")
        columns[attrs] = [json.loads(v) for v in columns[attrs]]
        for row in zip(*columns, strict=True):
            yield table, row

    def batches_of(_high_watermark: object) -> Iterator[tuple[None, None, Iterator]]:
        for batch in batches:
            yield None, None, rows_of(batch)

    engine = sa.create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    with engine.connect() as conn:
        ingest(conn, table.metadata, batches_of, high_watermark=HighWatermark.LATEST,
               upsert=Upsert.IF_PRIMARY_KEY, delete=Delete.OFF)
    engine.dispose()


def run_ours_last_write(url: str, schema: str, batches: Iterator[pa.RecordBatch]) -> None:
    run_ours(url, schema, batches, conflict="last_write")


RUNNERS = {"ours": run_ours, "ours-last-write": run_ours_last_write,
           "hand-written": run_hand_written, "pg-bulk-ingest": run_pg_bulk_ingest}


def one_run(contender: str, url: str, schema: str, rows: int, batch_rows: int,
            generation: int) -> dict[str, float]:
    """One contender, one phase, in this process (imports are not timed)."""
    import importlib

    for module in {"ours": ["etl_assets.sinks.postgres.writer"],
                   "ours-last-write": ["etl_assets.sinks.postgres.writer"],
                   "pg-bulk-ingest": ["pg_bulk_ingest"]}.get(contender, []):
        importlib.import_module(module)
    began = time.perf_counter()
    RUNNERS[contender](url, schema, generated_batches(rows, batch_rows, generation))
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "peak_mb": peak_mb()}


def _subprocess(contender: str, url: str, schema: str, rows: int, batch_rows: int,
                generation: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--run", contender, "--url", url, "--schema", schema,
         "--rows", str(rows), "--batch-rows", str(batch_rows), "--generation",
         str(generation)], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{contender} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check_landed(url: str, schema: str, rows: int, generation: int) -> None:
    with psycopg.connect(url) as conn:
        count, changed = conn.execute(sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE abs(reading - (id * 0.001 + %s)) < 1e-6) "
            "FROM {}").format(sql.Identifier(schema, "bench_target")),
            (generation,)).fetchone() or (0, 0)
    if count != rows or changed != rows:
        sys.exit(f"{schema}: {count} rows, {changed} with generation {generation}; "
                 f"expected {rows}")


def report(args: argparse.Namespace, contenders: list[str],
           results: dict[tuple[str, str], list[dict[str, float]]],
           small: int, small_peak: float | None, goals: dict[str, float]) -> None:
    """The table of medians, the ratios (with ``goals``: ours' speed relative to a peer)
    and ours' memory at a fifth of the rows; shared by the upsert benches."""

    def median(contender: str, phase: str, key: str) -> float:
        return statistics.median(r[key] for r in results[(contender, phase)])

    print(f"\n{args.rows:,} rows x 10 columns, {args.batch_rows:,} rows a batch, "
          f"median of {args.repeat}")
    print(f"{'phase':<32}{'contender':<23}{'seconds':>9}{'rows/s':>11}{'peak MB':>9}")
    for phase in PHASES:
        for contender in contenders:
            seconds = median(contender, phase, "seconds")
            print(f"{phase:<32}{contender:<23}{seconds:>9.2f}{args.rows / seconds:>11,.0f}"
                  f"{median(contender, phase, 'peak_mb'):>9.0f}")
    reference = "ours" if "ours" in contenders else contenders[0]
    peers = [c for c in contenders if c != reference]
    if peers:
        print(f"\nspeed of {reference} relative to each peer (>1: {reference} faster)")
        for phase in PHASES:
            mine = median(reference, phase, "seconds")
            ratios = []
            for peer in peers:
                ratio = median(peer, phase, "seconds") / mine
                goal = goals.get(peer) if reference == "ours" else None
                ratios.append(f"{peer} {ratio:.2f}x" + (
                    "" if goal is None else f" (goal >= {goal}x: "
                                            f"{'met' if ratio >= goal else 'MISSED'})"))
            print(f"{phase:<32}{', '.join(ratios)}")
    if "ours" in contenders and "ours-last-write" in contenders:
        print("\ncost of the newest-wins guard (ours / ours-last-write seconds; 1.05 = 5%)")
        for phase in PHASES:
            cost = median("ours", phase, "seconds") / median("ours-last-write", phase,
                                                             "seconds")
            print(f"{phase:<32}{cost:.3f}")
    if small_peak is not None:
        print(f"\nours' peak memory: {small_peak:.0f} MB at {small:,} rows, "
              f"{median('ours', PHASES[0], 'peak_mb'):.0f} MB at {args.rows:,} rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender and phase "
                                                              "(the median is shown)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    parser.add_argument("--generation", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(one_run(args.run, args.url, args.schema, args.rows, args.batch_rows,
                                 args.generation)))
        return

    contenders = args.contenders.split(",")
    database = f"etl_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = make_url(ADMIN_URL).set(database=database).render_as_string(hide_password=False)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        for repeat in range(args.repeat):
            for contender in contenders:
                schema = f"b_{contender.replace('-', '_')}_{repeat}"
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
                for generation, phase in zip((0, 0, 1), PHASES, strict=True):
                    print(f"{contender}: {phase} ...", file=sys.stderr)
                    result = _subprocess(contender, url, schema, args.rows, args.batch_rows,
                                         generation)
                    _check_landed(url, schema, args.rows, generation)
                    results.setdefault((contender, phase), []).append(result)
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        small = max(args.rows // 5, args.batch_rows)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA b_small")
        small_peak = _subprocess("ours", url, "b_small", small, args.batch_rows, 0)["peak_mb"]
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database)))

    report(args, contenders, results, small, small_peak, {})


if __name__ == "__main__":
    main()
