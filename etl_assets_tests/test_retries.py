"""The one retry policy: backoff bounds, Retry-After, and which real errors are transient."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import psycopg
import pyarrow as pa
import pymysql
import pytest
import sqlalchemy as sa

from etl_assets.connections import UnresolvedConnection, resolve_url
from etl_assets.errors import ConfigurationError, DataError, EtlAssetsError, TransientError
from etl_assets.retries import RetryPolicy, is_transient
from etl_assets.settings import ConnectionSpec
from etl_assets.sinks.bigquery.column_types import UnsupportedBigQueryType, bigquery_type
from etl_assets.sinks.files.formats import FileFormatError, file_format
from etl_assets.sinks.files.writer import FileSinkError
from etl_assets.sinks.postgres.column_types import UnsupportedType, postgres_type
from etl_assets.sources.extraction import Extraction
from etl_assets.table_names import TableName, TableNameError
from etl_assets.transforms import TransformError, import_reference
from etl_assets_testing.servers.loopback import free_port
from etl_assets_tests.conftest import MYSQL, PgSchema
from etl_assets_tests.log_lines import LogLines


def test_backoff_is_full_jitter_under_a_cap_and_retry_after_wins_when_longer() -> None:
    policy = RetryPolicy(retries=10, delay_s=1.0, max_delay_s=8.0)
    waits = [policy.wait_s(attempt) for attempt in range(10) for _ in range(50)]
    assert all(0 <= w <= 8.0 for w in waits)
    assert max(waits) > 4.0 and min(waits) < 0.5  # spread over the whole range
    assert all(policy.wait_s(0) <= 1.0 for _ in range(100))  # the first backoff: delay_s at most
    assert policy.wait_s(0, retry_after_s=20.0) == 20.0
    assert policy.wait_s(0, retry_after_s=1000.0) == 32.0  # capped at 4 x max_delay_s


def test_a_transient_error_is_retried_and_logged_then_the_last_one_raised() -> None:
    policy = RetryPolicy(retries=2, delay_s=0.0)
    calls: list[int] = []
    log = LogLines()

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("peer reset")
        return "done"

    assert policy.call(flaky, what="sink x: writing", log=log) == "done"
    assert len(calls) == 3
    assert log.warnings[0].startswith("sink x: writing failed (ConnectionResetError: peer reset); "
                                   "attempt 2 of 3")

    def down() -> None:
        raise ConnectionRefusedError("refused")

    with pytest.raises(ConnectionRefusedError):
        policy.call(down, what="x")


def test_an_error_about_the_data_is_not_retried() -> None:
    calls: list[int] = []

    def bad() -> None:
        calls.append(1)
        raise ValueError("column x cannot hold 'y'")

    with pytest.raises(ValueError):
        RetryPolicy(retries=5, delay_s=0.0).call(bad, what="x")
    assert calls == [1]


def test_before_retry_runs_between_attempts() -> None:
    events: list[str] = []

    def attempt() -> None:
        events.append("attempt")
        if len(events) < 3:
            raise TimeoutError()

    RetryPolicy(retries=3, delay_s=0.0).call(
        attempt, what="x", before_retry=lambda exc: events.append("reconnect"))
    assert events == ["attempt", "reconnect", "attempt"]


def test_postgres_errors_from_a_real_server_are_classified(pg: PgSchema) -> None:
    # a refused connection (nothing listens on the port) is transient
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/x", connect_timeout=3)
    assert is_transient(refused.value)
    # a wrong database is not
    with pytest.raises(psycopg.OperationalError) as missing:
        psycopg.connect(pg.url.rsplit("/", 1)[0] + "/no_such_db_here", connect_timeout=3)
    assert not is_transient(missing.value)
    # the server ending our session (what a restart does: 57P01 admin_shutdown) is transient
    with psycopg.connect(pg.url, autocommit=True) as victim, pg.connect() as admin:
        pid = victim.info.backend_pid
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError) as ended:
            victim.execute("SELECT 1")
        assert is_transient(ended.value)
    # a deadlock is transient; a syntax error or a bad value is not
    with pytest.raises(psycopg.errors.SyntaxError) as syntax:
        pg.execute("SELEC 1")
    assert not is_transient(syntax.value)
    with pytest.raises(psycopg.errors.NumericValueOutOfRange) as value:
        pg.execute("SELECT 2147483647::int + 1")
    assert not is_transient(value.value)
    assert is_transient(_deadlock(pg))


def _deadlock(pg: PgSchema) -> psycopg.Error:
    pg.execute(f"CREATE TABLE {pg.table('locks')} (id int PRIMARY KEY)")
    pg.execute(f"INSERT INTO {pg.table('locks')} VALUES (1), (2)")
    errors: list[psycopg.Error] = []
    barrier = threading.Barrier(2)

    def lock(first: int, second: int) -> None:
        with psycopg.connect(pg.url) as conn:
            try:
                conn.execute(f"UPDATE {pg.table('locks')} SET id = id WHERE id = %s", (first,))
                barrier.wait()
                conn.execute(f"UPDATE {pg.table('locks')} SET id = id WHERE id = %s", (second,))
                conn.commit()
            except psycopg.Error as exc:
                errors.append(exc)

    threads = [threading.Thread(target=lock, args=pair) for pair in ((1, 2), (2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 1 and isinstance(errors[0], psycopg.errors.DeadlockDetected)
    return errors[0]


def test_mysql_and_sqlalchemy_errors_from_a_real_server_are_classified(mysql_url: str) -> None:
    engine = sa.create_engine(mysql_url)
    with engine.connect() as victim:
        (pid,) = victim.execute(sa.text("SELECT CONNECTION_ID()")).one()
        admin = pymysql.connect(**MYSQL)
        with admin.cursor() as cur:
            cur.execute(f"KILL {pid}")
        admin.close()
        with pytest.raises(sa.exc.OperationalError) as gone:
            victim.execute(sa.text("SELECT 1"))
    assert is_transient(gone.value)  # 2013 lost connection / 2006 gone away, wrapped
    with engine.connect() as conn, pytest.raises(sa.exc.ProgrammingError) as syntax:
        conn.execute(sa.text("SELEC 1"))
    assert not is_transient(syntax.value)
    engine.dispose()


def test_socket_errors_are_transient() -> None:
    with pytest.raises(OSError) as refused:
        socket.create_connection(("127.0.0.1", free_port()), timeout=3)
    assert is_transient(refused.value)
    assert not is_transient(FileNotFoundError("x"))
    assert not is_transient(KeyError("x"))


def _raised(call: Callable[[], object]) -> EtlAssetsError:
    with pytest.raises(EtlAssetsError) as raised:
        call()
    return raised.value


def _refused() -> None:
    socket.create_connection(("127.0.0.1", free_port()), timeout=3)


def test_only_our_transient_branch_is_transient_and_the_others_are_not() -> None:
    # transient: a source that stayed unreachable after every retry
    gave_up = _raised(lambda: Extraction("source 'x' window 0..1", _refused,
                                         RetryPolicy(retries=0, delay_s=0.0)))
    assert isinstance(gave_up, TransientError) and is_transient(gave_up)
    # configuration: fix the spec or the environment
    configuration = [
        _raised(lambda: resolve_url(ConnectionSpec(env="ETL_ASSETS_TEST_UNSET"), "source x")),
        _raised(lambda: TableName.parse('"a.b')),
        _raised(lambda: import_reference("json:no_such_name", "sink x")),
    ]
    assert [type(e) for e in configuration] == [UnresolvedConnection, TableNameError,
                                                TransformError]
    # data (terminal): the value, column or file at fault is named
    data = [
        _raised(lambda: postgres_type(pa.field("x", pa.month_day_nano_interval()))),
        _raised(lambda: bigquery_type(pa.field("x", pa.month_day_nano_interval()))),
        _raised(lambda: file_format("xlsx")),
    ]
    assert [type(e) for e in data] == [UnsupportedType, UnsupportedBigQueryType,
                                       FileFormatError]
    for error in configuration:
        assert isinstance(error, ConfigurationError) and not is_transient(error)
    for error in data:
        assert isinstance(error, DataError) and not is_transient(error)
    # the builtin bases older callers catch are kept
    assert isinstance(configuration[1], ValueError) and isinstance(configuration[2], ImportError)
    assert isinstance(data[0], TypeError) and isinstance(data[2], ValueError)


def test_an_error_of_ours_is_not_transient_even_with_a_transient_cause() -> None:
    def sink_gave_up() -> None:
        try:
            _refused()
        except OSError as exc:
            raise FileSinkError("sink x: writing data.parquet failed") from exc

    error = _raised(sink_gave_up)
    assert is_transient(error.__cause__)
    assert not is_transient(error)
    # ... but a foreign error caused by our TransientError is
    wrapped = RuntimeError("step failed")
    wrapped.__cause__ = TransientError("source x: gave up")
    assert is_transient(wrapped)
