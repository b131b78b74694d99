"""Real HTTP targets for the HTTP sink tests, each on a free loopback port:

- pouchdb-server (npm, in memory): the CouchDB API, ``PUT /db/{id}`` and ``_bulk_docs``;
- datasette (pip): its JSON write API (``/-/insert`` with a bearer token);
- a fault server of our own (aiohttp) that stores documents by id but answers some requests
  with 503, 429 + Retry-After, slow answers or dropped connections, and can refuse single
  documents inside a 200 ``_bulk`` answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sqlite3
import ssl
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from aiohttp import web

from etl_assets_tests.io_managers.local_servers import free_port, wait_for_answer

ROOT = Path(__file__).resolve().parents[2]
POUCHDB_SERVER = ROOT / "node_modules" / ".bin" / "pouchdb-server"


def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


@dataclass
class PouchDB:
    url: str

    def create(self, name: str) -> str:
        call("PUT", f"{self.url}/{name}")
        return f"{self.url}/{name}"

    def documents(self, database: str) -> dict[str, dict[str, Any]]:
        """Every document of ``database`` by id, without ``_id`` and ``_rev``."""
        rows = call("GET", f"{self.url}/{database}/_all_docs?include_docs=true")["rows"]
        return {row["id"]: {k: v for k, v in row["doc"].items() if k not in ("_id", "_rev")}
                for row in rows}

    def count(self, database: str) -> int:
        return int(call("GET", f"{self.url}/{database}")["doc_count"])


def start_pouchdb(folder: Path, log: IO[bytes] | int) -> tuple[subprocess.Popen, str]:
    """pouchdb-server in memory on a free port, its files in ``folder``: the process, its URL."""
    port = free_port()
    process = subprocess.Popen([str(POUCHDB_SERVER), "--in-memory", "--host", "127.0.0.1",
                                "--port", str(port)], cwd=folder, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for_answer(f"{url}/", process, "pouchdb-server")
    return process, url


@pytest.fixture(scope="session")
def pouchdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PouchDB]:
    if not POUCHDB_SERVER.exists():
        pytest.skip("pouchdb-server is not installed (make install runs npm ci)")
    folder = tmp_path_factory.mktemp("pouchdb")
    with open(folder / "pouchdb.log", "wb") as log:
        process, url = start_pouchdb(folder, log)
        try:
            yield PouchDB(url)
        finally:
            process.terminate()
            process.wait(timeout=10)


@dataclass
class Datasette:
    url: str
    token: str
    database: str = "targets"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def create_table(self, name: str, columns: list[dict[str, str]], pk: str = "id") -> str:
        call("POST", f"{self.url}/{self.database}/-/create",
             {"table": name, "columns": columns, "pk": pk}, self.auth)
        return f"{self.url}/{self.database}/{name}"

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


def start_datasette(folder: Path, log: IO[bytes] | int) -> tuple[subprocess.Popen, str, str]:
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


@pytest.fixture(scope="session")
def datasette(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Datasette]:
    if datasette_binary() is None:
        pytest.skip("datasette is not installed (dev extra)")
    folder = tmp_path_factory.mktemp("datasette")
    with open(folder / "datasette.log", "wb") as log:
        process, url, token = start_datasette(folder, log)
        try:
            yield Datasette(url, token)
        finally:
            process.terminate()
            process.wait(timeout=10)


@dataclass
class Faults:
    """What the fault server does to requests (rates are fractions of requests)."""

    unavailable: float = 0.0          # 503
    rate_limited: float = 0.0         # 429 with Retry-After
    retry_after: str = "0"
    dropped: float = 0.0              # connection closed without an answer
    slow: float = 0.0                 # answered after slow_s
    slow_s: float = 0.3
    refused_ids: set[str] = field(default_factory=set)     # 400 for these documents
    item_rate_limited: float = 0.0    # a bulk item answered 429 inside a 200 answer
    max_body_bytes: int | None = None  # 413 for a larger bulk request body


class FaultServer:
    """Stores documents by id (``PUT /docs/{id}``, ``POST /docs`` with ``_id``, ``POST
    /_bulk`` NDJSON) and misbehaves as ``faults`` says; counts the requests it saw.
    ``PUT /refused/{id}`` answers 401 echoing the Authorization header."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.faults = Faults()
        self.documents: dict[str, Any] = {}
        self.requests = 0
        self.headers_seen: list[dict[str, str]] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._random = random.Random(7)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _fault(self, request: web.Request) -> web.StreamResponse | None:
        self.requests += 1
        self.headers_seen.append(dict(request.headers))
        roll = self._random.random()
        faults = self.faults
        if roll < faults.dropped:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        roll -= faults.dropped
        if roll < faults.unavailable:
            return web.Response(status=503, text="try later")
        roll -= faults.unavailable
        if roll < faults.rate_limited:
            return web.Response(status=429, headers={"Retry-After": faults.retry_after})
        roll -= faults.rate_limited
        if roll < faults.slow:
            await asyncio.sleep(faults.slow_s)
        return None

    async def _put(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault(request)
        if fault is not None:
            return fault
        document_id = request.match_info["id"]
        if document_id in self.faults.refused_ids:
            return web.json_response({"error": f"document {document_id} is not welcome"},
                                     status=400)
        self.documents[document_id] = await request.json()
        return web.json_response({"ok": True}, status=201)

    async def _post(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault(request)
        if fault is not None:
            return fault
        document = await request.json()
        self.documents[str(document["_id"])] = document
        return web.json_response({"ok": True}, status=201)

    async def _bulk(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault(request)
        if fault is not None:
            return fault
        body = await request.read()
        if self.faults.max_body_bytes is not None and len(body) > self.faults.max_body_bytes:
            return web.Response(status=413, text="request entity too large")
        lines = body.decode().strip().split("\n")
        items = []
        for action_line, document_line in zip(lines[::2], lines[1::2], strict=True):
            document_id = str(json.loads(action_line)["index"]["_id"])
            if document_id in self.faults.refused_ids:
                items.append({"index": {"_id": document_id, "status": 400,
                                        "error": {"type": "mapper_parsing_exception"}}})
            elif self._random.random() < self.faults.item_rate_limited:
                items.append({"index": {"_id": document_id, "status": 429,
                                        "error": {"type": "es_rejected_execution_exception"}}})
            else:
                self.documents[document_id] = json.loads(document_line)
                items.append({"index": {"_id": document_id, "status": 201}})
        return web.json_response({"errors": any(i["index"]["status"] >= 300 for i in items),
                                  "items": items})

    async def _refuse_echoing(self, request: web.Request) -> web.StreamResponse:
        """401 whose answer echoes the request's Authorization header, as some servers do."""
        return web.json_response({"error": "not authorized", "authorization":
                                  request.headers.get("Authorization")}, status=401)

    async def _count(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"documents": len(self.documents), "requests": self.requests})

    async def _clear(self, request: web.Request) -> web.StreamResponse:
        self.documents.clear()
        self.requests = 0
        return web.json_response({"ok": True})

    async def _configure(self, request: web.Request) -> web.StreamResponse:
        self.faults = Faults(**await request.json())
        return web.json_response({"ok": True})

    def start(self) -> None:
        app = web.Application(client_max_size=64 * 2**20)
        app.add_routes([web.put("/docs/{id}", self._put), web.post("/docs", self._post),
                        web.put("/refused/{id}", self._refuse_echoing),
                        web.post("/_bulk", self._bulk), web.get("/_count", self._count),
                        web.delete("/docs", self._clear), web.put("/_faults", self._configure)])

        async def serve() -> None:
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port,
                              ssl_context=self.ssl_context).start()

        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


def start_fault_server_process() -> tuple[subprocess.Popen, str]:
    """The fault server in a process of its own (what it stores does not count in this
    process's memory, nor its CPU in this one's): the process and its URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "etl_assets_tests.io_managers.http_servers",
                                str(port)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_for_answer(f"{url}/_count", process, "the fault server")
    return process, url


def serve_forever(port: int) -> None:
    """The fault server in this process (for bench/, which runs it beside the client's)."""
    server = FaultServer()
    server.port = port
    server.start()
    threading.Event().wait()


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer()
    server.start()
    yield server
    server.stop()


if __name__ == "__main__":
    serve_forever(int(sys.argv[1]))
