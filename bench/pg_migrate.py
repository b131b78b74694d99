"""Benchmark: migrating a live PostgreSQL table (a column int -> bigint) while a reader runs.

Contenders, on the same table (``--rows`` rows: bigint key, int, text; an index on the int
column and a view on the table), each in a fresh process (its peak memory its own):

- ours: ``etl_assets.sinks.postgres.migrations.migrate`` (build beside, copy, swap);
- pg-bulk-ingest 0.1.3 (``pip install .[bench]``): ``ingest`` with the changed SQLAlchemy
  table and a one-row batch (it migrates while ingesting the first batch).

The view selects columns whose type stays (pg-bulk-ingest 0.1.3 recreates views with CREATE OR
REPLACE VIEW, which fails on a view column whose type changed; ours rebuilds such views).
A reader thread runs ``SELECT count(*)`` on the view in a loop throughout; its longest single
query is what a reader of the live table waits at worst. Prints seconds, rows/s (rows
migrated), the reader's longest wait, peak MB, and the ratio ours / peer (> 1: ours faster).
PostgreSQL: $BENCH_PG_URL, else 127.0.0.1:5432 (user postgres); a fresh database per run.

    .venv/bin/python bench/pg_migrate.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CONTENDERS = ("ours", "pg-bulk-ingest")


def _url(database: str) -> str:
    return make_url(ADMIN_URL).set(database=database).render_as_string(hide_password=False)


def _setup(url: str, schema: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE TABLE {}.t (id bigint PRIMARY KEY, v integer, s text)").format(
            sql.Identifier(schema)))
        conn.execute(sql.SQL("INSERT INTO {}.t SELECT g, g, md5(g::text) "
                             "FROM generate_series(1, %s) g").format(sql.Identifier(schema)),
                     (rows,))
        conn.execute(sql.SQL("CREATE INDEX t_v_idx ON {}.t (v)").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE VIEW {}.t_view AS SELECT id, s FROM {}.t").format(
            sql.Identifier(schema), sql.Identifier(schema)))
        conn.execute("VACUUM ANALYZE")


def _migrate_ours(url: str, schema: str) -> None:
    from etl_assets.sinks.postgres.migrations import migrate
    from etl_assets.sinks.postgres.table import ColumnDef, TableDef

    desired = TableDef(schema, "t", (ColumnDef("id", "bigint", False), ColumnDef("v", "bigint"),
                                     ColumnDef("s", "text")), ("id",))
    with psycopg.connect(url) as conn:
        migrate(conn, desired, log=logging.getLogger("bench"))


def _migrate_pg_bulk_ingest(url: str, schema: str, rows: int) -> None:
    import sqlalchemy as sa
    from pg_bulk_ingest import Delete, HighWatermark, Upsert, ingest

    metadata = sa.MetaData()
    table = sa.Table("t", metadata, sa.Column("id", sa.BigInteger, primary_key=True),
                     sa.Column("v", sa.BigInteger, index=True), sa.Column("s", sa.Text),
                     schema=schema)
    engine = sa.create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    with engine.connect() as conn:
        ingest(conn, metadata, lambda _: [(None, None, [(table, (rows + 1, 1, "x"))])],
               high_watermark=HighWatermark.LATEST, upsert=Upsert.IF_PRIMARY_KEY,
               delete=Delete.OFF)
    engine.dispose()


def _contender(name: str, url: str, schema: str, rows: int) -> dict[str, float]:
    """Run one migration with a reader alongside; returns its measures."""
    waits: list[float] = []
    stop = threading.Event()

    def reader() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                started = time.monotonic()
                conn.execute(sql.SQL("SELECT count(*) FROM {}.t_view").format(
                    sql.Identifier(schema))).fetchone()
                waits.append(time.monotonic() - started)

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    try:
        if name == "ours":
            _migrate_ours(url, schema)
        else:
            _migrate_pg_bulk_ingest(url, schema, rows)
        seconds = time.monotonic() - started
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    with psycopg.connect(url) as conn:
        kind = conn.execute(sql.SQL("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                                    "WHERE attrelid = {}::regclass AND attname = 'v'").format(
            sql.Literal(f"{schema}.t"))).fetchone()
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}.t_view").format(
            sql.Identifier(schema))).fetchone()
    assert kind == ("bigint",) and count is not None and count[0] >= rows, (name, kind, count)
    with open("/proc/self/status") as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    return {"seconds": seconds, "max_reader_wait": max(waits), "reader_queries": len(waits),
            "peak_mb": peak_kb / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--run", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        url = _url(args.database)
        schema = "bench_" + args.run.replace("-", "_")
        _setup(url, schema, args.rows)
        print(json.dumps(_contender(args.run, url, schema, args.rows)))
        return
    database = f"etl_bench_migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    results = {}
    try:
        for name in CONTENDERS:
            out = subprocess.run([sys.executable, __file__, "--run", name, "--database", database,
                                  "--rows", str(args.rows)], check=True, stdout=subprocess.PIPE,
                                 text=True).stdout
            results[name] = json.loads(out.strip().splitlines()[-1])
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                sql.Identifier(database)))
    print(f"migrate int -> bigint of a {args.rows:,}-row table (index + view) with a reader "
          f"running count(*) on the view")
    print(f"{'contender':<16}{'seconds':>9}{'rows/s':>11}{'reader max wait s':>19}"
          f"{'reader queries':>16}{'peak MB':>9}")
    for name, r in results.items():
        print(f"{name:<16}{r['seconds']:>9.2f}{args.rows / r['seconds']:>11,.0f}"
              f"{r['max_reader_wait']:>19.3f}{r['reader_queries']:>16}{r['peak_mb']:>9.0f}")
    ours, peer = results["ours"], results["pg-bulk-ingest"]
    print(f"speed ratio ours / pg-bulk-ingest: {peer['seconds'] / ours['seconds']:.2f}; "
          f"reader max wait ours / pg-bulk-ingest: "
          f"{ours['max_reader_wait'] / peer['max_reader_wait']:.2f}")


if __name__ == "__main__":
    main()
