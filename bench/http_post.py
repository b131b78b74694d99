"""Benchmark: posting 20k small documents, ours side by side with a bare aiohttp client and
the etlhelper DB->API recipe, on the same servers in one run.

Servers, each in its own process: our aiohttp server (fast; then with 2% of answers 50 ms
slow; then with 5% 503s) and pouchdb-server (CouchDB API, in memory). Contenders start from
the same Arrow batches (1,000 rows each):

- bare aiohttp: one session, `--concurrency` requests in flight, a PUT a document
- etlhelper recipe: as its docs show it: per chunk of 5,000 rows a new ClientSession and
  `asyncio.gather` over the chunk (a barrier per chunk), aiohttp's default connection limit
- ours, single: HttpApiIOManager, PUT a document, same concurrency
- ours, bulk: HttpApiIOManager, NDJSON `_bulk` (our server) or `_bulk_docs` (pouchdb),
  1,000 documents a request (the default)
- bare aiohttp, bulk: the same bulk requests from a bare client (json.dumps a document,
  status checked, no per-document results)
- bulk ceiling: that client posting bodies built before the clock starts: as fast
  as the server takes bulk requests, whatever the client

Runs under a second are repeated five times (the median is shown). Prints seconds,
documents/s, the server process's CPU use (100%: the server, not the client,
bounds the rate) and ratios, and the documents lost with 5% 503s.

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
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dagster import AssetKey, build_output_context  # noqa: E402

from etl_assets.batches import RecordBatchStream  # noqa: E402
from etl_assets.io_managers.http_api import HttpApiIOManager  # noqa: E402
from etl_assets.json_documents import documents  # noqa: E402
from etl_assets.watermark import Window  # noqa: E402
from etl_assets_tests.io_managers.http_servers import call  # noqa: E402
from etl_assets_tests.io_managers.local_servers import free_port, wait_for_answer  # noqa: E402

UTC = timezone.utc
WINDOW = Window(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))
RECIPE_CHUNK = 5_000


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


def bare_aiohttp(url: str, batches: list[pa.RecordBatch], concurrency: int) -> None:
    async def main() -> None:
        limit = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def put(document: dict) -> None:
                async with limit, session.put(url.replace("{id}", str(document["id"])),
                                              data=json.dumps(document),
                                              headers={"Content-Type": "application/json"}
                                              ) as response:
                    await response.read()
                    response.raise_for_status()

            await asyncio.gather(*(put(d) for b in batches for d in documents(b)))

    asyncio.run(main())


def bulk_body(batch: pa.RecordBatch, couchdb: bool) -> bytes:
    """NDJSON `_bulk` or CouchDB `{"docs": [...]}` for a batch, built by json.dumps."""
    if couchdb:
        return json.dumps({"docs": [{"_id": str(d["id"]), **d}
                                    for d in documents(batch)]}).encode()
    return "".join(f'{{"index":{{"_id":"{d["id"]}"}}}}\n{json.dumps(d)}\n'
                   for d in documents(batch)).encode()


def bare_aiohttp_bulk(url: str, bodies: Iterable[bytes], concurrency: int,
                      couchdb: bool) -> None:
    """A bulk request a body, the status checked (no per-document results)."""
    async def main() -> None:
        limit = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency)
        content_type = "application/json" if couchdb else "application/x-ndjson"
        async with aiohttp.ClientSession(connector=connector) as session:
            async def post(body: bytes) -> None:
                async with limit, session.post(url, data=body,
                                               headers={"Content-Type": content_type}
                                               ) as response:
                    await response.read()
                    response.raise_for_status()

            await asyncio.gather(*(post(b) for b in bodies))

    asyncio.run(main())


def etlhelper_recipe(url: str, batches: list[pa.RecordBatch], _concurrency: int) -> None:
    """The recipe's shape: rows in chunks; per chunk a new session and a gather."""
    async def post_one(document: dict, session: aiohttp.ClientSession) -> None:
        response = await session.put(url.replace("{id}", str(document["id"])),
                                     data=json.dumps(document),
                                     headers={"Content-Type": "application/json"})
        if response.status >= 400:
            response.raise_for_status()
        response.release()

    async def post_chunk(chunk: list[dict]) -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(post_one(d, session) for d in chunk))

    rows = [d for b in batches for d in documents(b)]
    for start in range(0, len(rows), RECIPE_CHUNK):
        asyncio.run(post_chunk(rows[start:start + RECIPE_CHUNK]))


def ours(url: str, batches: list[pa.RecordBatch], concurrency: int,
         **config: object) -> Callable[[], None]:
    """The sink's write, ready to run (the manager and its Dagster context built untimed)."""
    manager = HttpApiIOManager(url=url, primary_key=["id"], concurrency=concurrency,
                               dead_letter_root=tempfile.mkdtemp(), on_error="dead_letter",
                               retries=10, retry_delay_s=0.05, **config)  # type: ignore[arg-type]
    context = build_output_context(asset_key=AssetKey("bench"), partition_key=WINDOW.key,
                                   run_id=str(uuid.uuid4()))
    return lambda: manager.handle_output(context, RecordBatchStream(batches[0].schema,
                                                                      iter(batches)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SHORT_S, SHORT_REPEATS = 1.0, 5
Ready = Callable[[str], Callable[[], None]]
"""Sets a contender up for a target (a base URL), untimed; what it returns is timed."""


def contenders(batches: list[pa.RecordBatch], concurrency: int, single: str, bulk: str,
               couchdb: bool) -> dict[str, Ready]:
    """Every contender; ``single`` and ``bulk``: the paths (under the base URL) to PUT a
    document (``{id}``) and to post bulk requests to."""
    c = concurrency
    bulk_format = {"format": "json_array_bulk", "wrap": "docs", "id_key": "_id"} if couchdb \
        else {"format": "ndjson_bulk"}
    return {
        "bare aiohttp": lambda u: lambda: bare_aiohttp(u + single, batches, c),
        "etlhelper recipe": lambda u: lambda: etlhelper_recipe(u + single, batches, c),
        "ours, single": lambda u: ours(u + single, batches, c, method="PUT"),
        "ours, bulk": lambda u: ours(u + bulk, batches, c, **bulk_format),
        "bare aiohttp, bulk": lambda u: lambda: bare_aiohttp_bulk(
            u + bulk, (bulk_body(b, couchdb) for b in batches), c, couchdb),
        "bulk ceiling": lambda u: functools.partial(
            bare_aiohttp_bulk, u + bulk, [bulk_body(b, couchdb) for b in batches], c, couchdb),
    }


def timed(run: Callable[[], None], server: subprocess.Popen) -> tuple[float, float]:
    """Seconds the contender took and the server's CPU use meanwhile (1.0: one core busy)."""
    cpu, began = cpu_seconds(server.pid), time.perf_counter()
    run()
    seconds = time.perf_counter() - began
    return seconds, (cpu_seconds(server.pid) - cpu) / seconds


def measured(label: str, prepare: Callable[[], str], ready: Ready, stored: Callable[[str], int],
             expected: int, server: subprocess.Popen) -> tuple[float, float]:
    """A run on a fresh target from ``prepare``; a run under ``SHORT_S`` is repeated up to
    ``SHORT_REPEATS`` times and the median taken (one 50 ms hiccup is a third of such a run).
    Every run must leave ``expected`` documents in the target."""
    runs = []
    while len(runs) < (SHORT_REPEATS if not runs or runs[0][0] < SHORT_S else 1):
        target = prepare()
        print(f"{label} ...", file=sys.stderr)
        runs.append(timed(ready(target), server))
        count = stored(target)
        assert count == expected, f"{label}: {count} documents of {expected}"
    return sorted(runs)[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    batches, n, c = generated(args.documents), args.documents, args.concurrency
    ours_port, pouch_port = free_port(), free_port()
    folder = Path(tempfile.mkdtemp())
    servers = [
        subprocess.Popen([sys.executable, "-m", "etl_assets_tests.io_managers.http_servers",
                          str(ours_port)], cwd=ROOT),
        subprocess.Popen([str(ROOT / "node_modules/.bin/pouchdb-server"), "--in-memory",
                          "--host", "127.0.0.1", "--port", str(pouch_port)], cwd=folder,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    fast, pouch = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{pouch_port}"
    results: dict[str, dict[str, tuple[float, float]]] = {}
    lost = -1
    try:
        wait_for_answer(f"{fast}/_count", servers[0], "the bench's aiohttp server")
        wait_for_answer(f"{pouch}/", servers[1], "pouchdb-server")

        def emptied() -> str:
            call("DELETE", f"{fast}/docs")
            return fast

        def ours_count(_: str) -> int:
            return call("GET", f"{fast}/_count")["documents"]

        for scenario, faults in (("fast server", {}),
                                 ("2% answers 50 ms slow", {"slow": 0.02, "slow_s": 0.05})):
            call("PUT", f"{fast}/_faults", faults)
            for name, ready in contenders(batches, c, "/docs/{id}", "/_bulk", False).items():
                results.setdefault(scenario, {})[name] = measured(
                    f"{scenario}: {name}", emptied, ready, ours_count, n, servers[0])

        def database() -> str:
            name = f"bench_{uuid.uuid4().hex[:8]}"
            call("PUT", f"{pouch}/{name}")
            return f"{pouch}/{name}"

        for name, ready in contenders(batches, c, "/{id}", "/_bulk_docs", True).items():
            results.setdefault("pouchdb-server", {})[name] = measured(
                f"pouchdb-server: {name}", database, ready,
                lambda db: call("GET", db)["doc_count"], n, servers[1])

        call("PUT", f"{fast}/_faults", {"unavailable": 0.05})
        call("DELETE", f"{fast}/docs")
        print("5% 503: ours, single ...", file=sys.stderr)
        seconds_503 = timed(ours(f"{fast}/docs/{{id}}", batches, c, method="PUT"), servers[0])[0]
        lost = n - ours_count(fast)
    finally:
        for server in servers:
            server.terminate()

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
