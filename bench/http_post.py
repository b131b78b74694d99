"""Benchmark: posting 20k small documents, ours side by side with a bare aiohttp client and
the etlhelper DB->API recipe, on the same servers in one run.

Servers, each in its own process: our aiohttp server (fast; then with 2% of answers 50 ms
slow; then with 5% 503s), pouchdb-server (CouchDB API, in memory) and datasette (its JSON
insert API on a SQLite file: a commit a request). Contenders start from the same Arrow
batches (1,000 rows each):

- bare aiohttp: one session, `--concurrency` requests in flight, a document a request
- etlhelper recipe: as its docs show it: per chunk of 5,000 rows a new ClientSession and
  `asyncio.gather` over the chunk (a barrier per chunk), aiohttp's default connection limit
- ours, single: HttpApiIOManager, a document a request, same concurrency
- ours, bulk: HttpApiIOManager, NDJSON `_bulk` (our server), `_bulk_docs` (pouchdb) or
  `rows` (datasette), 1,000 documents a request (datasette: 100, its maximum)
- bare aiohttp, bulk: the same bulk requests from a bare client (json.dumps a document,
  status checked, no per-document results)
- bulk ceiling: that client posting bodies built before the clock starts: as fast as the
  server takes bulk requests, whatever the client

Runs under a second are repeated five times (the median is shown). Prints seconds,
documents/s, the server process's CPU use (100%: the server, not the client, bounds the
rate) and ratios, and the documents lost with 5% 503s.

    .venv/bin/python bench/http_post.py [--documents 20000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dagster import AssetKey, build_output_context  # noqa: E402

from etl_assets.batches import RecordBatchStream  # noqa: E402
from etl_assets.json_documents import documents  # noqa: E402
from etl_assets.sinks.base import SinkSetup  # noqa: E402
from etl_assets.sinks.http.io_manager import HttpApiIOManager  # noqa: E402
from etl_assets.sinks.http.spec import HttpSinkSpec  # noqa: E402
from etl_assets.watermark import Window  # noqa: E402
from etl_assets_testing.servers.datasette import Datasette, start_datasette  # noqa: E402
from etl_assets_testing.servers.fault_http import start_fault_server_process  # noqa: E402
from etl_assets_testing.servers.loopback import call  # noqa: E402
from etl_assets_testing.servers.pouchdb import PouchDB, start_pouchdb  # noqa: E402

UTC = timezone.utc
WINDOW = Window(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))
RECIPE_CHUNK = 5_000
SHORT_S, SHORT_REPEATS = 1.0, 5
TOKEN_ENV = "BENCH_HTTP_AUTHORIZATION"


def generated(count: int) -> list[pa.RecordBatch]:
    ids = np.arange(1, count + 1, dtype=np.int64)
    table = pa.table({
        "id": ids,
        "code": pa.array(np.char.add("SEN-", ids.astype(str)).astype(object)),
        "reading": ids * 0.001,
        "updated_at": pa.array(1_704_067_200_000_000 + ids * 1_000_000,
                               pa.timestamp("us", tz="UTC")),
    })
    return table.to_batches(max_chunksize=1_000)


@dataclass(frozen=True)
class Target:
    """How one server takes documents, a document a request and in bulk."""

    single_url: str                      # ``{id}``: the document's id
    bulk_url: str
    bulk_format: str                     # ndjson_bulk | json_array_bulk
    method: str = "PUT"
    single_wrap: str | None = None       # datasette: {"row": document}
    bulk_wrap: str | None = None         # {"docs": [...]}, {"rows": [...]}
    extra: dict[str, Any] = field(default_factory=dict)  # beside the wrapped documents
    id_key: str | None = None            # CouchDB: _id
    bulk_docs: int = 1000
    token: str | None = None             # a bearer token (from env for ours)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def single_body(self, document: dict[str, Any]) -> bytes:
        return json.dumps({self.single_wrap: document, **self.extra} if self.single_wrap
                          else document).encode()

    def bulk_body(self, batch: pa.RecordBatch) -> bytes:
        docs = documents(batch)
        if self.bulk_format == "ndjson_bulk":
            return "".join(f'{{"index":{{"_id":"{d["id"]}"}}}}\n{json.dumps(d)}\n'
                           for d in docs).encode()
        if self.id_key:
            docs = [{self.id_key: str(d["id"]), **d} for d in docs]
        return json.dumps({self.bulk_wrap: docs, **self.extra} if self.bulk_wrap
                          else docs).encode()

    def url_for(self, document: dict[str, Any]) -> str:
        return self.single_url.replace("{id}", str(document["id"]))


def bare_aiohttp(target: Target, batches: list[pa.RecordBatch], concurrency: int) -> None:
    async def main() -> None:
        limit = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency)
        headers = {"Content-Type": "application/json", **target.headers}
        async with aiohttp.ClientSession(connector=connector) as session:
            async def send(document: dict) -> None:
                async with limit, session.request(target.method, target.url_for(document),
                                                  data=target.single_body(document),
                                                  headers=headers) as response:
                    await response.read()
                    response.raise_for_status()

            await asyncio.gather(*(send(d) for b in batches for d in documents(b)))

    asyncio.run(main())


def bare_aiohttp_bulk(target: Target, bodies: Iterable[bytes], concurrency: int) -> None:
    """A bulk request a body, the status checked (no per-document results)."""
    async def main() -> None:
        limit = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency)
        content_type = "application/x-ndjson" if target.bulk_format == "ndjson_bulk" \
            else "application/json"
        headers = {"Content-Type": content_type, **target.headers}
        async with aiohttp.ClientSession(connector=connector) as session:
            async def post(body: bytes) -> None:
                async with limit, session.post(target.bulk_url, data=body,
                                               headers=headers) as response:
                    await response.read()
                    response.raise_for_status()

            await asyncio.gather(*(post(b) for b in bodies))

    asyncio.run(main())


def etlhelper_recipe(target: Target, batches: list[pa.RecordBatch], _concurrency: int) -> None:
    """The recipe's shape: rows in chunks; per chunk a new session and a gather."""
    headers = {"Content-Type": "application/json", **target.headers}

    async def post_one(document: dict, session: aiohttp.ClientSession) -> None:
        response = await session.request(target.method, target.url_for(document),
                                         data=target.single_body(document), headers=headers)
        if response.status >= 400:
            response.raise_for_status()
        response.release()

    async def post_chunk(chunk: list[dict]) -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(post_one(d, session) for d in chunk))

    rows = [d for b in batches for d in documents(b)]
    for start in range(0, len(rows), RECIPE_CHUNK):
        asyncio.run(post_chunk(rows[start:start + RECIPE_CHUNK]))


def ours(target: Target, batches: list[pa.RecordBatch], concurrency: int,
         bulk: bool) -> Callable[[], None]:
    """The sink's write, ready to run (the manager and its Dagster context built untimed)."""
    if target.token:
        os.environ[TOKEN_ENV] = f"Bearer {target.token}"
    shape: dict[str, Any] = dict(url=target.bulk_url, format=target.bulk_format,
                                 wrap=target.bulk_wrap, bulk_docs=target.bulk_docs) if bulk \
        else dict(url=target.single_url, method=target.method, wrap=target.single_wrap)
    spec = HttpSinkSpec(
        kind="http", source="bench", concurrency=concurrency, body_extra=target.extra,
        id_key=target.id_key if bulk else None, on_error="dead_letter", retries=10,
        retry_delay_s=0.05, headers_from_env={"Authorization": TOKEN_ENV} if target.token else {},
        **shape)
    manager = HttpApiIOManager(SinkSetup.of("bench", spec, source_primary_key=["id"],
                                            source_cursor="updated_at",
                                            dead_letter_root=tempfile.mkdtemp()))
    context = build_output_context(asset_key=AssetKey("bench"), partition_key=WINDOW.key,
                                   run_id=str(uuid.uuid4()))
    return lambda: manager.handle_output(context, RecordBatchStream(batches[0].schema,
                                                                      iter(batches)))


Ready = Callable[[Target], Callable[[], None]]
"""Sets a contender up for a fresh target, untimed; what it returns is timed."""


def contenders(batches: list[pa.RecordBatch], c: int) -> dict[str, Ready]:
    return {
        "bare aiohttp": lambda t: lambda: bare_aiohttp(t, batches, c),
        "etlhelper recipe": lambda t: lambda: etlhelper_recipe(t, batches, c),
        "ours, single": lambda t: ours(t, batches, c, bulk=False),
        "ours, bulk": lambda t: ours(t, batches, c, bulk=True),
        "bare aiohttp, bulk": lambda t: lambda: bare_aiohttp_bulk(
            t, _bulk_bodies(t, batches), c),
        "bulk ceiling": lambda t: functools.partial(
            bare_aiohttp_bulk, t, list(_bulk_bodies(t, batches)), c),
    }


def _bulk_bodies(target: Target, batches: list[pa.RecordBatch]) -> Iterable[bytes]:
    """Bulk bodies of ``target.bulk_docs`` documents (built as they are asked for)."""
    table = pa.Table.from_batches(batches)
    for batch in table.to_batches(max_chunksize=target.bulk_docs):
        yield target.bulk_body(batch)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(run: Callable[[], None], server: subprocess.Popen) -> tuple[float, float]:
    """Seconds the contender took and the server's CPU use meanwhile (1.0: one core busy)."""
    cpu, began = cpu_seconds(server.pid), time.perf_counter()
    run()
    seconds = time.perf_counter() - began
    return seconds, (cpu_seconds(server.pid) - cpu) / seconds


@dataclass
class Server:
    """A server process and how to get a fresh, empty target on it and count what it holds."""

    process: subprocess.Popen
    url: str
    fresh: Callable[[], Target]
    stored: Callable[[Target], int]

    def measured(self, label: str, ready: Ready, expected: int) -> tuple[float, float]:
        """A run on a fresh target; a run under ``SHORT_S`` is repeated up to
        ``SHORT_REPEATS`` times and the median taken (one 50 ms hiccup is a third of such a
        run). Every run must leave ``expected`` documents in the target."""
        runs: list[tuple[float, float]] = []
        while len(runs) < (SHORT_REPEATS if not runs or runs[0][0] < SHORT_S else 1):
            target = self.fresh()
            print(f"{label} ...", file=sys.stderr)
            runs.append(timed(ready(target), self.process))
            count = self.stored(target)
            assert count == expected, f"{label}: {count} documents of {expected}"
        return sorted(runs)[len(runs) // 2]


def our_server() -> Server:
    process, url = start_fault_server_process()

    def fresh() -> Target:
        call("DELETE", f"{url}/docs")
        return Target(f"{url}/docs/{{id}}", f"{url}/_bulk", "ndjson_bulk")

    return Server(process, url, fresh, lambda _: call("GET", f"{url}/_count")["documents"])


def pouchdb_server(folder: Path) -> Server:
    process, url = start_pouchdb(folder, subprocess.DEVNULL)
    pouchdb = PouchDB(url)

    def fresh() -> Target:
        database = pouchdb.create(f"bench_{uuid.uuid4().hex[:8]}")
        return Target(f"{database}/{{id}}", f"{database}/_bulk_docs", "json_array_bulk",
                      bulk_wrap="docs", id_key="_id")

    def stored(target: Target) -> int:
        return pouchdb.count(target.bulk_url.removesuffix("/_bulk_docs").rpartition("/")[2])

    return Server(process, url, fresh, stored)


def datasette_server(folder: Path) -> Server:
    process, url, token = start_datasette(folder, subprocess.DEVNULL)
    datasette = Datasette(url, token)
    columns = [{"name": "id", "type": "integer"}, {"name": "code", "type": "text"},
               {"name": "reading", "type": "float"}, {"name": "updated_at", "type": "text"}]

    def fresh() -> Target:
        insert = datasette.create_table(f"bench_{uuid.uuid4().hex[:8]}", columns) + "/-/insert"
        return Target(insert, insert, "json_array_bulk", method="POST", single_wrap="row",
                      bulk_wrap="rows", extra={"replace": True}, bulk_docs=100, token=token)

    def stored(target: Target) -> int:
        return datasette.count(target.bulk_url.removesuffix("/-/insert").rpartition("/")[2])

    return Server(process, url, fresh, stored)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    batches, n, c = generated(args.documents), args.documents, args.concurrency
    folder = Path(tempfile.mkdtemp())
    results: dict[str, dict[str, tuple[float, float]]] = {}
    servers: list[Server] = []
    lost = -1
    try:
        for start in (our_server, lambda: pouchdb_server(folder),
                      lambda: datasette_server(folder)):
            servers.append(start())  # appended one by one: all are stopped if one fails
        ours_at, pouchdb, datasette = servers
        for scenario, server, faults in (
                ("fast server", ours_at, {}),
                ("2% answers 50 ms slow", ours_at, {"slow": 0.02, "slow_s": 0.05}),
                ("pouchdb-server", pouchdb, None),
                ("datasette", datasette, None)):
            if faults is not None:
                call("PUT", f"{ours_at.url}/_faults", faults)
            for name, ready in contenders(batches, c).items():
                results.setdefault(scenario, {})[name] = server.measured(
                    f"{scenario}: {name}", ready, n)

        call("PUT", f"{ours_at.url}/_faults", {"unavailable": 0.05})
        print("5% 503: ours, single ...", file=sys.stderr)
        target = ours_at.fresh()
        seconds_503 = timed(ours(target, batches, c, bulk=False), ours_at.process)[0]
        lost = n - ours_at.stored(target)
    finally:
        for server in servers:
            server.process.terminate()

    print(f"\n{n:,} documents, {c} requests in flight")
    print(f"{'server':<24}{'contender':<23}{'seconds':>9}{'docs/s':>10}{'server CPU':>12}")
    for scenario, timings in results.items():
        for name, (seconds, cpu) in timings.items():
            print(f"{scenario:<24}{name:<23}{seconds:>9.2f}{n / seconds:>10,.0f}{cpu:>12.0%}")
    print("\nratios (>1: ours faster)")
    for scenario, timings in results.items():
        t = {name: seconds for name, (seconds, _) in timings.items()}
        print(f"{scenario}: single vs bare {t['bare aiohttp'] / t['ours, single']:.2f}x, "
              f"single vs recipe {t['etlhelper recipe'] / t['ours, single']:.2f}x; "
              f"bulk vs single {t['ours, single'] / t['ours, bulk']:.1f}x, "
              f"bulk vs bare bulk {t['bare aiohttp, bulk'] / t['ours, bulk']:.2f}x, "
              f"bulk vs the ceiling {t['bulk ceiling'] / t['ours, bulk']:.2f}x "
              f"(the ceiling vs our single {t['ours, single'] / t['bulk ceiling']:.1f}x)")
    print(f"\n5% 503s, ours single: {seconds_503:.2f} s, {lost} of {n:,} documents lost")


if __name__ == "__main__":
    main()
