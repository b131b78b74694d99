"""The PostgreSQL sink retries a batch after a transient error, in a new transaction on a new
connection, and the target lands exact: a session ended by the server, a server restart in the
middle of a load (a private server, restarted for real), a server that stays down."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from etl_assets.retries import RetryPolicy
from etl_assets.sinks.postgres.writer import PostgresSinkError, PostgresUpsertWriter
from etl_assets_testing.servers.postgres import RestartablePostgres
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.log_lines import LogLines

SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string()),
                    pa.field("n", pa.float64())])
RETRY = RetryPolicy(retries=12, delay_s=0.2, max_delay_s=2.0)


def batch(first: int, rows: int, tag: str = "v1") -> pa.RecordBatch:
    ids = range(first, first + rows)
    return pa.RecordBatch.from_pydict({"id": list(ids), "name": [f"{tag}-{i}" for i in ids],
                                       "n": [i / 3 for i in ids]}, SCHEMA)


def expected_digest(batches: list[pa.RecordBatch]) -> tuple[int, str]:
    rows = sorted((r["id"], r["name"]) for b in batches for r in b.to_pylist())
    text = ",".join(f"{i}:{name}" for i, name in rows)
    return len(rows), hashlib.md5(text.encode()).hexdigest()


def target_digest(url: str, table: str) -> tuple[int, str]:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*), md5(coalesce(string_agg(id || ':' || name, ',' "
                           f"ORDER BY id), '')) FROM {table}").fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def load(url: str, table: str, batches: list[pa.RecordBatch], log: LogLines,
         between: Any = None, **options: Any) -> None:
    with PostgresUpsertWriter(url, table, ["id"], "etl_stage_retry", log=log, retry=RETRY,
                              **options) as writer:
        writer.prepare(SCHEMA)
        for number, b in enumerate(batches):
            if between is not None:
                between(number, writer)
            writer.write(b, final=number == len(batches) - 1)
        writer.finish()


def test_a_session_the_server_ends_is_retried_on_a_new_connection(pg: PgSchema) -> None:
    batches = [batch(i * 1000, 1000) for i in range(6)]
    log = LogLines()

    def end_session(number: int, writer: PostgresUpsertWriter) -> None:
        if number in (2, 4):  # as a restart or an administrator would: 57P01
            assert writer.conn is not None
            pid = writer.conn.info.backend_pid
            pg.execute("SELECT pg_terminate_backend(%s)", (pid,))

    load(pg.url, pg.table("target"), batches, log, end_session)
    assert target_digest(pg.url, pg.table("target")) == expected_digest(batches)
    assert len(log.warnings) == 2
    assert log.warnings[0].startswith(f"{pg.table('target')}: writing a batch of 1,000 rows "
                                      f"failed (")
    assert "attempt 2 of 13" in log.warnings[0]


@pytest.mark.slow
@pytest.mark.parametrize("delete", ["off", "all"])
def test_a_server_restart_in_the_middle_of_a_load_is_retried_and_lands_exact(
        restartable_pg: RestartablePostgres, delete: str) -> None:
    url = restartable_pg.url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA rel_out")
    table = "rel_out.readings"
    if delete == "all":  # rows the run replaces
        load(url, table, [batch(10_000_000, 500, "stale")], LogLines())
    batches = [batch(i * 5000, 5000) for i in range(40)]
    log = LogLines()
    restarts: list[threading.Thread] = []

    def restart_meanwhile(number: int, writer: PostgresUpsertWriter) -> None:
        if number in (1, 20):  # during the first batch (delete all: into the new table) and later
            restarts.append(threading.Thread(target=restartable_pg.restart))
            restarts[-1].start()

    load(url, table, batches, log, restart_meanwhile, delete=delete)
    for thread in restarts:
        thread.join()
    assert target_digest(url, table) == expected_digest(batches)
    assert any("rel_out.readings: " in w and "attempt 2 of 13" in w for w in log.warnings)
    assert all("::" not in w for w in log.warnings)
    with psycopg.connect(url) as conn:
        leftovers = conn.execute("SELECT relname FROM pg_class WHERE relname LIKE "
                                 "'%etl_new%' AND relkind = 'r'").fetchall()
    assert leftovers == []


@pytest.mark.slow
def test_a_server_that_stays_down_fails_with_one_line_naming_the_table(
        restartable_pg: RestartablePostgres) -> None:
    url = restartable_pg.url
    log = LogLines()

    def stop(number: int, writer: PostgresUpsertWriter) -> None:
        if number == 1:
            restartable_pg.stop()

    with pytest.raises(PostgresSinkError) as failed, \
            PostgresUpsertWriter(url, "public.target", ["id"], "etl_stage_retry", log=log,
                                 retry=RetryPolicy(retries=2, delay_s=0.05)) as writer:
        writer.prepare(SCHEMA)
        for number in range(3):
            stop(number, writer)
            writer.write(batch(number * 10, 10))
    message = str(failed.value)
    assert message.startswith("public.target: writing a batch of 10 rows failed after 3 "
                              "attempt(s): OperationalError: ")
    assert "\n" not in message
    assert len(log.warnings) == 2
    restartable_pg.start()
    assert target_digest(url, "public.target")[0] == 10  # the first batch, committed
