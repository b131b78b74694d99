"""datasette (the dev extra) on a loopback port: its JSON write API (``/-/insert`` with a
bearer token) over one SQLite file."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from etl_assets_testing.servers.loopback import call, free_port, wait_for_answer


@dataclass
class Datasette:
    url: str
    token: str
    database: str = "targets"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def create_table(self, name: str, columns: list[dict[str, str]], pk: str = "id") -> str:
        """A new table: its URL."""
        call("POST", f"{self.url}/{self.database}/-/create",
             {"table": name, "columns": columns, "pk": pk}, self.auth)
        return f"{self.url}/{self.database}/{name}"

    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` into ``table`` (100 a request: datasette's most)."""
        for start in range(0, len(rows), 100):
            call("POST", f"{self.url}/{self.database}/{table}/-/insert",
                 {"rows": rows[start:start + 100]}, self.auth)

    def rows(self, table: str) -> list[dict[str, Any]]:
        return call("GET", f"{self.url}/{self.database}/{table}.json?_shape=array&_size=max",
                    headers=self.auth)

    def count(self, table: str) -> int:
        """Rows in ``table`` (by SQL: the table page's count stops at 10,000)."""
        query = urllib.parse.urlencode({"sql": f"select count(*) as n from [{table}]",
                                        "_shape": "array"})
        return int(call("GET", f"{self.url}/{self.database}.json?{query}",
                        headers=self.auth)[0]["n"])


def datasette_binary() -> str | None:
    """The datasette command of this Python environment (the dev extra), if installed."""
    return shutil.which("datasette", path=str(Path(sys.executable).parent))


def start_datasette(folder: Path,
                    log: IO[bytes] | int) -> tuple[subprocess.Popen[bytes], str, str]:
    """datasette on a free port serving ``folder``/targets.db (created empty), every
    permission to the root actor: the process, its URL and a bearer token for root."""
    binary = datasette_binary()
    if binary is None:
        raise FileNotFoundError("datasette is not installed (the dev extra)")
    sqlite3.connect(folder / "targets.db").close()
    secret = "test-secret-" + str(random.randrange(10**9))
    token = subprocess.run([binary, "create-token", "root", "--secret", secret],
                           capture_output=True, text=True, check=True).stdout.strip()
    port = free_port()
    process = subprocess.Popen([binary, "serve", str(folder / "targets.db"), "--port", str(port),
                                "--root"], env={**os.environ, "DATASETTE_SECRET": secret},
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for_answer(f"{url}/-/versions.json", process, "datasette")
    return process, url, token
