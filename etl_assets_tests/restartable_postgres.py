"""A private PostgreSQL server the tests may stop and restart (the shared one on 5432 serves
every other test): the machine's own PostgreSQL binaries, a cluster in a temp folder, on a
free port, run as the ``postgres`` system user when the tests run as root."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from etl_assets_tests.conftest import _unavailable
from etl_assets_tests.io_managers.local_servers import free_port


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class RestartablePostgres:
    """``url``: a superuser URL (trust) to database ``postgres``; ``restart()`` stops the
    server (fast: sessions are terminated, as in a real restart) and starts it again."""

    def __init__(self, binaries: Path, folder: Path) -> None:
        self.binaries = binaries
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.binaries / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--no-sync")
        self.start()

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w",
                  "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                        f"-c fsync=off", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        # not `pg_ctl restart`: it would give the new server our output pipe, not the log
        self.stop()
        self.start()


@pytest.fixture
def restartable_pg() -> Iterator[RestartablePostgres]:
    binaries = _binaries()
    if binaries is None:
        _unavailable("PostgreSQL server binaries (/usr/lib/postgresql/*/bin)",
                     FileNotFoundError("pg_ctl"))
    folder = Path(tempfile.mkdtemp(prefix="etl_assets_pg_"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = RestartablePostgres(binaries, folder)  # type: ignore[arg-type]
    try:
        server.init()
        psycopg.connect(server.url, connect_timeout=10).close()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
