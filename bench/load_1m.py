"""Benchmark: 1M generated rows source -> staging -> PostgreSQL through etl_assets' own code.

Each stage runs in a fresh process so its peak memory (max RSS) is its own. Prints seconds,
rows/s and peak MB per stage. PostgreSQL: $BENCH_PG_URL, else 127.0.0.1:5432 (user postgres).

    .venv/bin/python bench/load_1m.py [--rows 1000000] [--chunk-rows 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

# {rows} rows, row g updated at 2024-01-01 + g * {step} seconds (bench/backfill.py uses it too)
SOURCE_DDL = """
CREATE TABLE bench_source AS
SELECT g::bigint AS id,
       timestamptz '2024-01-01 00:00+00' + make_interval(secs => g * {step}) AS updated_at,
       'SEN-' || g AS code,
       repeat('description ', 1 + g % 5) AS description,
       (g % 1000)::int AS site,
       g * 0.001::float8 AS reading,
       g % 2 = 0 AS active,
       date '2024-01-01' + (g % 365) AS day,
       (g % 100000) / 100.0::numeric(12, 2) AS amount,
       jsonb_build_object('g', g, 'tag', 'x' || (g % 10)) AS attrs
FROM generate_series(1, {rows}) AS g;
ALTER TABLE bench_source ADD PRIMARY KEY (id);
CREATE INDEX ON bench_source (updated_at);
"""


def stage(kind: str, url: str, staging: str, rows: int, chunk_rows: int) -> dict:
    """One stage, in this process; returns its measurements."""
    from datetime import datetime, timedelta, timezone

    from etl_assets.sinks.postgres.writer import PostgresUpsertWriter
    from etl_assets.sources.sql.source import SqlSource
    from etl_assets.sources.sql.spec import SqlSourceSpec
    from etl_assets.staging.io_manager import read_staged, write_staged
    from etl_assets.watermark import Window

    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    window = Window(start, start + timedelta(seconds=rows))
    began = time.perf_counter()
    if kind == "extract->staging":
        spec = SqlSourceSpec(connection={"url": "sqlite://"}, table="public.bench_source",
                          cursor="updated_at", primary_key=["id"], chunk_rows=chunk_rows)
        manifest = write_staged(Path(staging), SqlSource("bench", spec, url).extract(window),
                                run_id="bench", shard_rows=1_000_000)
        moved = manifest.rows
    else:
        stream = read_staged(Path(staging))
        with PostgresUpsertWriter(url, "public.bench_target", ["id"], "etl_stage_bench") as w:
            w.prepare(stream.schema)
            moved = 0
            for batch in stream:
                w.write(batch)
                moved += batch.num_rows
    seconds = time.perf_counter() - began
    return {"stage": kind, "rows": moved, "seconds": seconds,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--staging", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(stage(args.stage, args.url, args.staging, args.rows, args.chunk_rows)))
        return

    database = f"etl_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = make_url(ADMIN_URL).set(database=database).render_as_string(hide_password=False)
    try:
        print(f"generating {args.rows:,} rows x 10 columns ...", file=sys.stderr)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SOURCE_DDL.format(rows=int(args.rows), step=1))
        results = []
        with tempfile.TemporaryDirectory() as tmp:
            staging = str(Path(tmp) / "bench" / "partition")
            for kind in ("extract->staging", "staging->postgres (empty table)",
                         "staging->postgres (full table, re-run)"):
                out = subprocess.run(
                    [sys.executable, __file__, "--stage", kind, "--url", url, "--staging",
                     staging, "--rows", str(args.rows), "--chunk-rows", str(args.chunk_rows)],
                    capture_output=True, text=True)
                if out.returncode:
                    sys.exit(f"stage {kind} failed:\n{out.stderr[-3000:]}")
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        with psycopg.connect(url) as conn:
            (landed,) = conn.execute("SELECT count(*) FROM bench_target").fetchone() or (0,)
        assert landed == args.rows, f"{landed} rows landed, expected {args.rows}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database)))

    print(f"{'stage':<42}{'rows':>10}{'seconds':>10}{'rows/s':>12}{'peak MB':>10}")
    for r in results:
        print(f"{r['stage']:<42}{r['rows']:>10,}{r['seconds']:>10.2f}"
              f"{r['rows'] / r['seconds']:>12,.0f}{r['peak_mb']:>10.0f}")


if __name__ == "__main__":
    main()
