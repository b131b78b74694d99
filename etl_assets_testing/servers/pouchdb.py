"""pouchdb-server (npm, in memory): the CouchDB API (``PUT /db/{id}``, ``_bulk_docs``) on a
loopback port. ``make install`` installs it into node_modules/ (npm ci)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from etl_assets_testing.servers.loopback import call, free_port, wait_for_answer

POUCHDB_SERVER = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "pouchdb-server"


@dataclass
class PouchDB:
    url: str

    def create(self, name: str) -> str:
        """A new database: its URL."""
        call("PUT", f"{self.url}/{name}")
        return f"{self.url}/{name}"

    def documents(self, database: str) -> dict[str, dict[str, Any]]:
        """Every document of ``database`` by id, without ``_id`` and ``_rev``."""
        rows = call("GET", f"{self.url}/{database}/_all_docs?include_docs=true")["rows"]
        return {row["id"]: {k: v for k, v in row["doc"].items() if k not in ("_id", "_rev")}
                for row in rows}

    def count(self, database: str) -> int:
        return int(call("GET", f"{self.url}/{database}")["doc_count"])


def start_pouchdb(folder: Path, log: IO[bytes] | int) -> tuple[subprocess.Popen[bytes], str]:
    """pouchdb-server in memory on a free port, its files in ``folder``: the process, its URL."""
    port = free_port()
    process = subprocess.Popen([str(POUCHDB_SERVER), "--in-memory", "--host", "127.0.0.1",
                                "--port", str(port)], cwd=folder, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for_answer(f"{url}/", process, "pouchdb-server")
    return process, url
