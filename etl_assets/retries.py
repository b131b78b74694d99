"""The one retry policy of every source and sink: exponential backoff with full jitter, a cap,
and a server's ``Retry-After`` honoured; and which errors are worth another attempt.

Transient: refused, reset or timed-out connections, a database shutting down or restarting
(PostgreSQL ``57P01``..``57P03``, MySQL "server has gone away"), serialization failures and
deadlocks, too many connections, HTTP 5xx and 429, and our :class:`TransientError`. Everything
else (a bad value, a missing table, a refused password, any other error of ours) fails at once:
another attempt would fail the same way.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from etl_assets.errors import EtlAssetsError, TransientError
from etl_assets.logs import Log
from etl_assets.secrets import mask_text

T = TypeVar("T")
R = TypeVar("R")

# PostgreSQL SQLSTATEs worth another attempt (class 08 = connection exceptions, see below).
PG_TRANSIENT_SQLSTATES = frozenset({
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "53300",  # too_many_connections
    "55P03",  # lock_not_available (a lock_timeout)
    "57P01",  # admin_shutdown: the server is stopping or restarting, or pg_terminate_backend
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now: the server is starting
})
# MySQL/MariaDB error codes worth another attempt.
MYSQL_TRANSIENT_CODES = frozenset({
    1040,  # too many connections
    1053,  # server shutdown in progress
    1205,  # lock wait timeout
    1213,  # deadlock
    1927,  # connection killed
    2003,  # can't connect
    2006,  # server has gone away
    2013,  # lost connection during query
})
# A connection the server answered but refused: another attempt gets the same answer.
_REFUSED_LOGIN = re.compile(r"authentication failed|no password supplied|does not exist|"
                            r"no pg_hba.conf entry|permission denied|access denied",
                            re.IGNORECASE)
# What a PostgreSQL server answers a connection when it cannot take one now.
_PG_FATAL_TRANSIENT = re.compile(r"starting up|shutting down|in recovery mode|too many clients|"
                                 r"connection slots are reserved|terminating connection",
                                 re.IGNORECASE)
RETRYABLE_HTTP_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# What a client that gives errors as text only (connectorx) says of a lost or refused
# connection.
_LOST_CONNECTION = re.compile(r"connection refused|connection reset|broken pipe|timed out|"
                              r"server closed the connection|lost connection|gone away|"
                              r"unexpected eof|error communicating|can't connect|"
                              r"too many connections|shutdown in progress", re.IGNORECASE)


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts after the first; the n-th (from 0) waits a random time in
    ``[0, min(max_delay_s, delay_s * 2**n)]`` (full jitter), or longer when the server asked
    for it with Retry-After (capped at ``4 * max_delay_s``). Times in seconds."""

    retries: int = 3
    delay_s: float = 1.0
    max_delay_s: float = 30.0

    def wait_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 0)."""
        backoff = random.uniform(0, min(self.max_delay_s, self.delay_s * 2 ** attempt))
        return max(backoff, min(retry_after_s or 0.0, self.max_delay_s * 4))

    def call(self, attempt: Callable[[], T], *, what: str, log: Log | None = None,
             transient: Callable[[BaseException], bool] | None = None,
             before_retry: Callable[[BaseException], None] | None = None) -> T:
        """``attempt()``, called again after a transient error (``transient``, default
        :func:`is_transient`) while retries are left; each retry is logged as a warning
        naming ``what`` and the cause, and ``before_retry`` (e.g. reconnect) runs before it,
        as part of the attempt (its own transient errors are retried too). The last error is
        raised as it is."""
        is_worth_retrying = transient or is_transient
        number = 0
        last: BaseException | None = None
        while True:
            try:
                if last is not None and before_retry is not None:
                    before_retry(last)
                return attempt()
            except Exception as exc:
                if number >= self.retries or not is_worth_retrying(exc):
                    raise
                wait = self.wait_s(number, retry_after_of(exc))
                if log is not None:
                    log.warning(f"{what} failed ({describe(exc)}); attempt {number + 2} of "
                                f"{self.retries + 1} in {wait:.1f} s")
                time.sleep(wait)
                number += 1
                last = exc


    async def call_async(self, attempt: Callable[[], Awaitable[R]], *,
                         should_retry: Callable[[R], bool],
                         retry_after_s: Callable[[R], float | None] = lambda _: None,
                         on_retry: Callable[[R, float], None] | None = None) -> R:
        """``await attempt()``, awaited again while ``should_retry(result)`` and retries are
        left: the async form of :meth:`call` for protocols whose failures come back as
        results (an HTTP answer with status 503 or 429 and its Retry-After,
        ``retry_after_s``). ``on_retry(result, wait_s)`` runs before each wait; the last
        result is returned."""
        number = 0
        while True:
            result = await attempt()
            if number >= self.retries or not should_retry(result):
                return result
            wait = self.wait_s(number, retry_after_s(result))
            if on_retry is not None:
                on_retry(result, wait)
            await asyncio.sleep(wait)
            number += 1


def retry_after_of(error: BaseException) -> float | None:
    """Seconds the server asked to wait, when the error carries them (``retry_after_s``)."""
    value = getattr(error, "retry_after_s", None)
    return float(value) if isinstance(value, int | float) else None


def describe(error: BaseException) -> str:
    """``Type: message`` on one line, at most 300 characters, secrets masked."""
    text = mask_text(" ".join(str(error).split()) or repr(error))
    return f"{type(error).__name__}: {text[:300]}"


def is_transient(error: BaseException) -> bool:
    """Whether another attempt may succeed (see the module docstring); follows ``__cause__``
    and SQLAlchemy's wrapped driver error. An error of ours has been classified where it was
    raised: only :class:`TransientError` is transient, its cause is not looked at."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, EtlAssetsError):
            return isinstance(current, TransientError)
        if _transient_itself(current):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


def _transient_itself(error: BaseException) -> bool:
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    module = type(error).__module__.split(".")[0]
    if module == "psycopg":
        return _pg_transient(error)
    if module == "adbc_driver_manager":  # ADBC's drivers (the fast PostgreSQL reader)
        state = getattr(error, "sqlstate", None)
        if isinstance(state, str) and state:
            return _pg_state_transient(state)
        return type(error).__name__ == "OperationalError" and _connection_failed(str(error))
    if module == "pymysql":
        code = error.args[0] if error.args and isinstance(error.args[0], int) else None
        return code in MYSQL_TRANSIENT_CODES
    if module == "sqlalchemy":
        return bool(getattr(error, "connection_invalidated", False))
    if module in ("requests", "urllib3"):
        return type(error).__name__ in ("ConnectionError", "Timeout", "ConnectTimeout",
                                        "ReadTimeout", "ProtocolError", "ChunkedEncodingError")
    if module == "google":
        code = getattr(error, "code", None)
        if isinstance(code, int):
            return code >= 500 or code == 429 or "rateLimitExceeded" in str(error)
        return type(error).__name__ in ("TransportError", "RetryError")
    if module == "aiohttp":
        return type(error).__name__.startswith(("ClientConnect", "ServerDisconnected",
                                                "ServerTimeout", "ClientOSError"))
    status = getattr(error, "status", None)
    return isinstance(status, int) and status in RETRYABLE_HTTP_STATUS


def _pg_transient(error: BaseException) -> bool:
    import psycopg

    if not isinstance(error, psycopg.Error):
        return False
    state = error.sqlstate
    if state is not None:
        return _pg_state_transient(state)
    if not isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    return _connection_failed(str(error))


def _pg_state_transient(state: str) -> bool:
    """Whether a PostgreSQL SQLSTATE (from psycopg or ADBC) is worth another attempt."""
    return state in PG_TRANSIENT_SQLSTATES or state.startswith("08")


def _connection_failed(text: str) -> bool:
    """Whether a PostgreSQL client's connection error (its text) may pass on another try."""
    if "FATAL:" in text:  # the server answered the connection: only some answers pass
        return bool(_PG_FATAL_TRANSIENT.search(text))
    return not _REFUSED_LOGIN.search(text)  # no answer: the connection failed or broke


def lost_connection(text: str) -> bool:
    """Whether an error's ``text`` tells of a lost, refused or timed-out connection (for
    clients whose errors carry no code, such as connectorx)."""
    if _REFUSED_LOGIN.search(text):  # the server answered: another attempt gets the same
        return False
    return bool(_LOST_CONNECTION.search(text) or _PG_FATAL_TRANSIENT.search(text))
