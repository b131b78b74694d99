"""A transient error while extracting a window (the source's backend terminated mid-read, a
refused connection) is retried from the window's beginning by the source's retry policy."""

import re
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from dagster import DagsterInstance

from etl_assets.batches import RecordBatchStream
from etl_assets.errors import TransientError
from etl_assets.factory import build_definitions
from etl_assets.retries import RetryPolicy
from etl_assets.sensors import plan_next_windows
from etl_assets.sources.extraction import Extraction
from etl_assets.sources.sql.source import SqlSource
from etl_assets.sources.sql.spec import SqlSourceSpec
from etl_assets.spec import parse_spec
from etl_assets.staging.io_manager import read_staged, write_staged
from etl_assets.watermark import Window
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.log_lines import LogLines

ROWS = 100_000
WINDOW = Window(0, ROWS)


def create_events(pg: PgSchema) -> str:
    """``ROWS`` rows of about 200 bytes (enough that COPY outruns the socket buffers)."""
    table = pg.table("events")
    pg.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, note text, amount numeric(12, 3))")
    pg.execute(f"INSERT INTO {table} SELECT g, repeat(md5(g::text), 6), g * 1.125 "
               f"FROM generate_series(1, {ROWS}) g")
    return table


def source_rows(pg: PgSchema, table: str) -> list[tuple]:
    return pg.execute(f"SELECT id, note, amount FROM {table} ORDER BY id")


def staged_rows(path: Path) -> list[tuple]:
    staged = pa.Table.from_batches(list(read_staged(path)))
    return list(zip(*(staged.column(c).to_pylist() for c in ("id", "note", "amount")),
                    strict=True))


def terminate_copy(pg: PgSchema, table: str) -> int:
    """Terminate the backends running a COPY of ``table``; wait until they are gone."""
    query = ("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
             "AND pid <> pg_backend_pid() AND query LIKE 'COPY (SELECT%%' AND query LIKE %s")
    with pg.connect() as conn:
        pids = [pid for (pid,) in conn.execute(query, (f"%{table.split('.')[-1]}%",))]
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
                           (pids,)).fetchone()[0]:
            time.sleep(0.01)
    return len(pids)


@pytest.mark.slow
def test_a_copy_terminated_mid_read_is_extracted_again_into_a_fresh_version(
        pg: PgSchema, tmp_path: Path) -> None:
    table = create_events(pg)
    spec = SqlSourceSpec(connection={"url": "sqlite://"}, table=table, cursor="id",
                      chunk_rows=5_000)
    source = SqlSource("events", spec, pg.url)
    terminated: list[int] = []

    def start() -> RecordBatchStream:
        stream = source.extract(WINDOW)

        def batches():
            for number, batch in enumerate(stream):
                yield batch
                if number == 1 and not terminated:  # two batches staged, then the server
                    terminated.append(terminate_copy(pg, table))  # ends the COPY's backend
        return RecordBatchStream(stream.schema, batches())

    log = LogLines()
    path = tmp_path / "events" / WINDOW.key
    extraction = Extraction(f"source 'events' window {WINDOW.key}", start,
                            RetryPolicy(3, 0.05, 0.1), log)
    manifest = extraction.retrying(
        lambda stream: write_staged(path, stream, run_id="run", shard_rows=30_000, log=log))
    assert terminated == [1]
    assert manifest.rows == ROWS
    assert staged_rows(path) == source_rows(pg, table)
    versions = [p.name for p in (path.parent / ".versions" / path.name).iterdir()
                if not p.name.startswith(".")]
    assert versions == [f"{manifest.version}-run"]  # the partial first attempt is gone
    retries = [line for line in log.lines if "again" in line]
    assert len(retries) == 1
    # the fast reader's lost connection, named with the source and the window
    assert re.match(rf"source 'events' window {WINDOW.key}: ReaderConnectionError: reader "
                    rf"adbc-postgresql: OSError: .*server closed the connection", retries[0])
    assert "attempt 2 of 4" in retries[0]


@pytest.mark.slow
def test_the_source_asset_retries_a_terminated_copy_and_stages_every_row(
        pg: PgSchema, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch,
        etl_home: Path) -> None:
    table = create_events(pg)
    monkeypatch.setenv("TEST_SOURCE_URL", pg.url)
    defs = build_definitions(parse_spec({"sources": {"events": {
        "connection": {"env": "TEST_SOURCE_URL"}, "table": table, "cursor": "id",
        "chunk_rows": 5_000, "retry_delay_s": 0.05}}}))
    instance.add_dynamic_partitions("events_windows", [WINDOW.key])
    terminated: list[int] = []
    stop = threading.Event()

    def terminator() -> None:  # the first COPY of the window is ended by the server
        while not stop.is_set() and not terminated:
            if count := terminate_copy(pg, table):
                terminated.append(count)
            time.sleep(0.005)

    thread = threading.Thread(target=terminator)
    thread.start()
    try:
        result = defs.resolve_job_def("events_job").execute_in_process(
            instance=instance, partition_key=WINDOW.key)
    finally:
        stop.set()
        thread.join()
    assert result.success
    assert terminated == [1]
    path = etl_home / "staging" / "events" / WINDOW.key
    assert staged_rows(path) == source_rows(pg, table)
    warnings = [e.user_message for e in instance.all_logs(result.run_id)
                if "extracting the window again" in (e.user_message or "")]
    assert len(warnings) == 1 and "source 'events' window 0..100000" in warnings[0]
    assert any("reading with reader adbc-postgresql" in (e.user_message or "")
               for e in instance.all_logs(result.run_id))


def test_a_source_that_stays_unreachable_fails_naming_the_source_window_and_cause() -> None:
    spec = SqlSourceSpec(connection={"url": "sqlite://"}, table="public.events", cursor="id",
                      retries=2, retry_delay_s=0)
    source = SqlSource("events", spec, "postgresql://postgres@127.0.0.1:1/nowhere")
    log = LogLines()
    with pytest.raises(TransientError) as failed:
        Extraction(f"source 'events' window {WINDOW.key}", lambda: source.extract(WINDOW),
                   spec.retry_policy(), log)
    message = str(failed.value)
    assert message.startswith("source 'events' window 0..100000: OperationalError: ")
    assert "127.0.0.1" in message and message.endswith("(gave up after 3 attempts)")
    assert len(log.lines) == 2 and all("attempt" in line for line in log.lines)


def test_the_cursor_range_query_is_retried_then_fails_naming_the_source() -> None:
    spec = SqlSourceSpec(connection={"url": "sqlite://"}, table="public.events", cursor="id",
                      cursor_type="integer", retries=1, retry_delay_s=0)
    source = SqlSource("events", spec, "postgresql://postgres@127.0.0.1:1/nowhere")
    log = LogLines()
    with pytest.raises(TransientError, match=r"^source 'events': reading the cursor range: "
                                             r"OperationalError: .*\(gave up after 2 attempts\)$"):
        plan_next_windows(source, None, log=log)
    assert len(log.lines) == 1 and "attempt 2 of 2" in log.lines[0]


def test_a_non_transient_error_is_not_retried(pg: PgSchema) -> None:
    spec = SqlSourceSpec(connection={"url": "sqlite://"}, table=pg.table("missing"), cursor="id",
                      retry_delay_s=0)
    source = SqlSource("events", spec, pg.url)
    log = LogLines()
    with pytest.raises(Exception, match=r"table .*missing does not exist"):
        Extraction("source 'events' window 0..1", lambda: source.extract(Window(0, 1)),
                   spec.retry_policy(), log)
    assert log.lines == []
