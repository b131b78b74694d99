"""A fault server of our own (aiohttp) on a loopback port: it stores documents by id but
answers some requests with 503, 429 + Retry-After, slow answers or dropped connections, and
can refuse single documents inside a 200 ``_bulk`` answer. It also serves a list of items as
a paged JSON API (``GET /items``) for the HTTP source, under the same faults.

Run as a module it is that server in a process of its own: ``python -m
etl_assets_testing.servers.fault_http PORT``.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from etl_assets_testing.servers.loopback import free_port, wait_for_answer

ROOT = Path(__file__).resolve().parents[2]


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
    ``PUT /refused/{id}`` and ``GET /refused`` answer 401 echoing the Authorization header;
    ``GET /status/{code}`` answers ``code`` (after the faults, counted).

    ``GET /items`` serves ``items`` (in ``seq`` order) as ``{"data": {"items": [...]},
    "total": n}``: ``seq_gt`` / ``seq_lte`` filter by ``seq``, ``order=desc`` reverses;
    ``offset`` + ``limit`` page by offset, else ``page`` (from 1) + ``per_page`` (default:
    everything) by number, with a ``Link: <...>; rel="next"`` header while pages remain. No
    page holds more than ``max_page_size`` items (None: no cap). ``queries`` keeps the path
    and query of each GET it answered. ``PUT /_items`` replaces the items (a JSON list: for a
    server in a process of its own)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.faults = Faults()
        self.documents: dict[str, Any] = {}
        self.requests = 0
        self.headers_seen: list[dict[str, str]] = []
        self.items: list[dict[str, Any]] = []
        self.max_page_size: int | None = None
        self.queries: list[str] = []
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
        items: list[dict[str, Any]] = []
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

    async def _items(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault(request)
        if fault is not None:
            return fault
        self.queries.append(request.path_qs)
        query = request.query
        items = sorted(self.items, key=lambda item: item["seq"])
        if "seq_gt" in query:
            items = [i for i in items if i["seq"] > int(query["seq_gt"])]
        if "seq_lte" in query:
            items = [i for i in items if i["seq"] <= int(query["seq_lte"])]
        if query.get("order") == "desc":
            items.reverse()
        headers = {}
        if "offset" in query:
            start = int(query["offset"])
            size = int(query.get("limit", len(items)))
        else:
            page = int(query.get("page", "1"))
            size = int(query.get("per_page", max(len(items), 1)))
            start = (page - 1) * size
            if start + size < len(items):
                following = request.url.update_query(page=str(page + 1))
                headers["Link"] = f'<{following}>; rel="next", <{request.url}>; rel="self"'
        if self.max_page_size is not None:
            size = min(size, self.max_page_size)
        return web.json_response({"data": {"items": items[start:start + size]},
                                  "total": len(items)}, headers=headers)

    async def _status(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault(request)
        if fault is not None:
            return fault
        code = int(request.match_info["code"])
        return web.json_response({"error": f"status {code} as asked"}, status=code)

    async def _count(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"documents": len(self.documents), "requests": self.requests})

    async def _clear(self, request: web.Request) -> web.StreamResponse:
        self.documents.clear()
        self.requests = 0
        return web.json_response({"ok": True})

    async def _set_items(self, request: web.Request) -> web.StreamResponse:
        self.items = await request.json()
        return web.json_response({"ok": True})

    async def _configure(self, request: web.Request) -> web.StreamResponse:
        self.faults = Faults(**await request.json())
        return web.json_response({"ok": True})

    def start(self) -> None:
        app = web.Application(client_max_size=64 * 2**20)
        app.add_routes([web.put("/docs/{id}", self._put), web.post("/docs", self._post),
                        web.put("/refused/{id}", self._refuse_echoing),
                        web.get("/refused", self._refuse_echoing), web.get("/items", self._items),
                        web.get("/status/{code}", self._status),
                        web.post("/_bulk", self._bulk), web.get("/_count", self._count),
                        web.delete("/docs", self._clear), web.put("/_faults", self._configure),
                        web.put("/_items", self._set_items)])

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


def start_fault_server_process() -> tuple[subprocess.Popen[bytes], str]:
    """The fault server in a process of its own (what it stores does not count in this
    process's memory, nor its CPU in this one's): the process and its URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "etl_assets_testing.servers.fault_http",
                                str(port)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_for_answer(f"{url}/_count", process, "the fault server")
    return process, url


def serve_forever(port: int) -> None:
    """The fault server in this process, until it is killed."""
    server = FaultServer()
    server.port = port
    server.start()
    threading.Event().wait()


if __name__ == "__main__":
    serve_forever(int(sys.argv[1]))
