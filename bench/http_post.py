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

Prints seconds, documents/s and ratios, and the documents lost with 5% 503s.

    .venv/bin/python bench/http_post.py [--documents 20000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
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


def ours(url: str, batches: list[pa.RecordBatch], concurrency: int, **config: object) -> float:
    manager = HttpApiIOManager(url=url, primary_key=["id"], concurrency=concurrency,
                               dead_letter_root=tempfile.mkdtemp(), on_error="dead_letter",
                               retries=10, retry_delay_s=0.05, **config)  # type: ignore[arg-type]
    context = build_output_context(asset_key=AssetKey("bench"), partition_key=WINDOW.key,
                                   run_id=str(uuid.uuid4()))
    began = time.perf_counter()
    manager.handle_output(context, RecordBatchStream(batches[0].schema, iter(batches)))
    return time.perf_counter() - began


def timed(run: Callable[[], float | None]) -> float:
    began = time.perf_counter()
    seconds = run()
    return seconds if seconds is not None else time.perf_counter() - began


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
    results: dict[str, dict[str, float]] = {}
    lost = -1
    try:
        wait_for_answer(f"{fast}/_count", servers[0], "the bench's aiohttp server")
        wait_for_answer(f"{pouch}/", servers[1], "pouchdb-server")

        def on_ours(scenario: str, faults: dict, contenders: dict[str, Callable]) -> None:
            call("PUT", f"{fast}/_faults", faults)
            for name, run in contenders.items():
                call("DELETE", f"{fast}/docs")
                print(f"{scenario}: {name} ...", file=sys.stderr)
                results.setdefault(scenario, {})[name] = timed(run)
                stored = call("GET", f"{fast}/_count")["documents"]
                assert stored == n, f"{scenario} {name}: {stored} documents of {n}"

        single = f"{fast}/docs/{{id}}"
        for scenario, faults in (("fast server", {}),
                                 ("2% answers 50 ms slow", {"slow": 0.02, "slow_s": 0.05})):
            on_ours(scenario, faults, {
                "bare aiohttp": lambda: bare_aiohttp(single, batches, c),
                "etlhelper recipe": lambda: etlhelper_recipe(single, batches, c),
                "ours, single": lambda: ours(single, batches, c, method="PUT"),
                "ours, bulk": lambda: ours(f"{fast}/_bulk", batches, c, format="ndjson_bulk"),
            })

        def database() -> str:
            name = f"bench_{uuid.uuid4().hex[:8]}"
            call("PUT", f"{pouch}/{name}")
            return f"{pouch}/{name}"

        for name, run in {
            "bare aiohttp": lambda db: bare_aiohttp(f"{db}/{{id}}", batches, c),
            "etlhelper recipe": lambda db: etlhelper_recipe(f"{db}/{{id}}", batches, c),
            "ours, single": lambda db: ours(f"{db}/{{id}}", batches, c, method="PUT"),
            "ours, bulk": lambda db: ours(f"{db}/_bulk_docs", batches, c,
                                          format="json_array_bulk", wrap="docs", id_key="_id"),
        }.items():
            db = database()
            print(f"pouchdb-server: {name} ...", file=sys.stderr)
            results.setdefault("pouchdb-server", {})[name] = timed(lambda run=run, db=db: run(db))
            stored = call("GET", db)["doc_count"]
            assert stored == n, f"pouchdb {name}: {stored} documents of {n}"

        call("PUT", f"{fast}/_faults", {"unavailable": 0.05})
        call("DELETE", f"{fast}/docs")
        print("5% 503: ours, single ...", file=sys.stderr)
        seconds_503 = ours(single, batches, c, method="PUT")
        lost = n - call("GET", f"{fast}/_count")["documents"]
    finally:
        for server in servers:
            server.terminate()

    print(f"\n{n:,} documents, {c} requests in flight")
    print(f"{'server':<24}{'contender':<18}{'seconds':>9}{'docs/s':>10}")
    for scenario, timings in results.items():
        for name, seconds in timings.items():
            print(f"{scenario:<24}{name:<18}{seconds:>9.2f}{n / seconds:>10,.0f}")
    print("\nratios (>1: ours faster)")
    for scenario, t in results.items():
        print(f"{scenario:<24}single vs bare {t['bare aiohttp'] / t['ours, single']:.2f}x, "
              f"single vs recipe {t['etlhelper recipe'] / t['ours, single']:.2f}x, "
              f"bulk vs single {t['ours, single'] / t['ours, bulk']:.1f}x")
    print(f"\n5% 503s, ours single: {seconds_503:.2f} s, {lost} of {n:,} documents lost")


if __name__ == "__main__":
    main()
