"""Benchmark: reading 200k records from a paged JSON API into parquet, ours (``kind: http``)
side by side with dlt's rest_api source and a plain requests loop (issue 16).

The API: datasette serving one SQLite table of ``--records`` rows (id, updated_at as ISO text,
code, name, site, reading, active, day, amount, and attrs, a nested object: JSON text that a
small datasette plugin serves as JSON, as ``_json=`` would if datasette 1.0a41's table view
honoured it). Each contender reads one window covering every row through the table's JSON API,
``/src/records.json?_shape=objects&_size=max&updated_at__gt=LO&updated_at__lte=HI`` (1,000 rows
a page, datasette's maximum), following the answer's ``next`` token as ``_next``, and writes
parquet:

- ours:  etl_assets' ``kind: http`` source, opened by the registry (``open_source``) from the
         spec in ``OURS_SPEC`` and its window extracted (records kept to the window, updated_at
         declared ``timestamp[us, tz=UTC]``, attrs kept as JSON text), each batch written by a
         ``pyarrow.parquet.ParquetWriter``
- dlt:   dlt's ``rest_api_source`` (``bench`` extra) with the JSON-response cursor paginator
         (``next`` -> ``_next``), no incremental, ``pipeline.run(..., loader_file_format=
         "parquet")`` into the filesystem destination (a local folder): dlt's extract,
         normalize (attrs flattened into columns, timestamps detected) and load
- plain: a ``requests.Session`` loop following ``next``, each page made an Arrow table
         (``Table.from_pylist``: attrs a struct), updated_at cast to a timestamp, written by a
         ``ParquetWriter``

Each run is a process of its own (peak MB = its VmHWM, imports included; they are made before
the clock starts), contenders interleaved, median of ``--repeats``. Every run must write
exactly ``--records`` distinct ids (read back from its parquet, untimed); a contender that
fails is shown as FAILED and the others go on. Prints seconds, records/s, the contender's CPU
seconds, the server's CPU use meanwhile (100%: one core busy serving; the pages come one after
another, so a contender waits on the server about that long) and peak MB, then ratios (goal:
ours >= 1.5x dlt), then each contender's peak MB reading a window of the first ``--small``
records (memory flat in the record count).

The machine's cores are shared: timings are noisy, the CPU seconds less so.

    .venv/bin/python bench/http_source.py [--records 200000] [--small 50000] [--repeats 3]
        [--contenders ours,dlt,plain]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.process_memory import peak_mb  # noqa: E402
from etl_assets_testing.servers.datasette import datasette_binary  # noqa: E402
from etl_assets_testing.servers.loopback import call, free_port, wait_for_answer  # noqa: E402

CONTENDERS = ("ours", "dlt", "plain")
START = datetime(2024, 1, 1, tzinfo=timezone.utc)
DAY = timedelta(days=1)
DATABASE, TABLE = "src", "records"
TIMESTAMP = pa.timestamp("us", tz="UTC")

# The `kind: http` source as the issue gives it; {lo} and {hi}: the window's bounds.
OURS_SPEC: dict[str, Any] = {
    "kind": "http",
    "url": "<datasette table .json url>",
    "params": {"_shape": "objects", "_size": "max",
               "updated_at__gt": "{lo:%Y-%m-%dT%H:%M:%S.%f+00:00}",
               "updated_at__lte": "{hi:%Y-%m-%dT%H:%M:%S.%f+00:00}"},
    "records": "rows",
    "pagination": {"kind": "next_token", "path": "next", "param": "_next"},
    "cursor": "updated_at",
    "cursor_type": "timestamp",
    "primary_key": ["id"],
    "columns": {"updated_at": "timestamp[us, tz=UTC]"},
}

# Row n is updated at START + (n - 0.5) days / per_day, per_day = --small: a window of whole
# days holds whole multiples of --small rows, and no row sits on a bound. The server compares
# updated_at with a bound as text: bounds are written as the rows are (ours through a format
# in its params; `{lo}` with its `Z` would leave out a row less than a second after lo, as
# "...00.864000+00:00" < "...00Z").
SOURCE_SQL = f"""
CREATE TABLE {TABLE} (
  id INTEGER PRIMARY KEY, updated_at TEXT NOT NULL, code TEXT, name TEXT, site INTEGER,
  reading REAL, active INTEGER, day TEXT, amount REAL, attrs TEXT);
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {{records}})
INSERT INTO {TABLE}
SELECT n,
       strftime('%Y-%m-%dT%H:%M:%f', '2024-01-01',
                '+' || ((n - 0.5) * 86400.0 / {{per_day}}) || ' seconds') || '000+00:00',
       'SEN-' || n, 'sensor ' || (n % 977), n % 1000, n * 0.001, n % 2,
       date('2024-01-01', '+' || (n % 365) || ' days'), (n % 100000) / 100.0,
       json_object('g', n, 'tag', 'x' || (n % 10),
                   'loc', json_object('lat', (n % 90) * 1.0, 'lon', (n % 180) * 1.0))
FROM g;
"""

# A datasette column type whose values the JSON API serves parsed (datasette 1.0a41's `_json=`
# is ignored by the table view), given to the attrs column by the config below.
JSON_PLUGIN = '''
import json

from datasette import hookimpl
from datasette.column_types import ColumnType, SQLiteType


class JsonObject(ColumnType):
    name = "json_object"
    description = "JSON text, served as JSON"
    sqlite_types = (SQLiteType.TEXT,)

    async def transform_value(self, value, datasette):
        return json.loads(value) if isinstance(value, str) else value


@hookimpl
def register_column_types(datasette):
    return [JsonObject]
'''
DATASETTE_CONFIG = {"databases": {DATABASE: {"tables": {TABLE: {
    "column_types": {"attrs": "json_object"}}}}}}


def make_source(folder: Path, records: int, per_day: int) -> Path:
    path = folder / f"{DATABASE}.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SOURCE_SQL.format(records=records, per_day=per_day))
    conn.close()
    return path


def start_server(folder: Path, database: Path) -> tuple[subprocess.Popen[bytes], str]:
    """datasette serving ``database`` read-only on a free port: the process and the table's
    JSON URL."""
    binary = datasette_binary()
    if binary is None:
        sys.exit("datasette is not installed (the dev extra)")
    plugins = folder / "plugins"
    plugins.mkdir()
    (plugins / "json_object.py").write_text(JSON_PLUGIN)
    config = folder / "datasette.json"
    config.write_text(json.dumps(DATASETTE_CONFIG))
    port = free_port()
    process = subprocess.Popen(
        [binary, "serve", "-i", str(database), "--port", str(port), "--plugins-dir",
         str(plugins), "-c", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for_answer(f"{url}/-/versions.json", process, "datasette")
    return process, f"{url}/{DATABASE}/{TABLE}.json"


# --- the contenders (run in a child process) -------------------------------------------------

@dataclass
class Read:
    """What a child reads: ``url``'s records in the window (lo, hi], written under ``out``."""

    url: str
    lo: datetime
    hi: datetime
    out: Path

    def params(self) -> dict[str, str]:
        """The query the peers send (ours makes its own from ``OURS_SPEC``)."""
        return {"_shape": "objects", "_size": "max",
                "updated_at__gt": self.lo.isoformat(), "updated_at__lte": self.hi.isoformat()}


def run_ours(read: Read) -> None:
    from etl_assets.sources.registry import SOURCE_KINDS, open_source
    from etl_assets.watermark import Window

    if "http" not in SOURCE_KINDS:
        raise SystemExit("etl_assets has no `kind: http` source in this checkout (issue 16)")
    spec = SOURCE_KINDS["http"].spec.model_validate({**OURS_SPEC, "url": read.url})
    source = open_source("bench", spec)
    try:
        stream = source.extract(Window(read.lo, read.hi))
        with pq.ParquetWriter(read.out / f"{TABLE}.parquet", stream.schema) as writer:
            for batch in stream:
                writer.write_batch(batch)
    finally:
        source.dispose()


def run_dlt(read: Read) -> None:
    # imported by name: dlt is in the `bench` extra only, which `make lint` does not install
    dlt = importlib.import_module("dlt")
    rest_api = importlib.import_module("dlt.sources.rest_api")
    base, _, path = read.url.rpartition(f"/{DATABASE}/")
    source = rest_api.rest_api_source({
        "client": {"base_url": base,
                   "paginator": {"type": "cursor", "cursor_path": "next",
                                 "cursor_param": "_next"}},
        "resources": [{"name": TABLE, "primary_key": "id", "write_disposition": "append",
                       "endpoint": {"path": f"{DATABASE}/{path}", "params": read.params(),
                                    "data_selector": "rows"}}],
    })
    pipeline = dlt.pipeline(pipeline_name="bench_http_source",
                            pipelines_dir=str(read.out.parent / "dlt_pipelines"),
                            destination=dlt.destinations.filesystem(bucket_url=str(read.out)),
                            dataset_name="bench")
    pipeline.run(source, loader_file_format="parquet")


def run_plain(read: Read) -> None:
    requests: Any = importlib.import_module("requests")  # no stubs in the lint environment
    params = read.params()
    writer: pq.ParquetWriter | None = None
    try:
        with requests.Session() as session:
            while True:
                response = session.get(read.url, params=params, timeout=60)
                response.raise_for_status()
                page = response.json()
                table = pa.Table.from_pylist(page["rows"])
                at = table.schema.get_field_index("updated_at")
                table = table.set_column(at, "updated_at", pc.cast(table.column(at), TIMESTAMP))
                if writer is None:
                    writer = pq.ParquetWriter(read.out / f"{TABLE}.parquet", table.schema)
                writer.write_table(table.cast(writer.schema))
                if not page.get("next"):
                    break
                params["_next"] = page["next"]
    finally:
        if writer is not None:
            writer.close()


RUNNERS: dict[str, Callable[[Read], None]] = {"ours": run_ours, "dlt": run_dlt,
                                              "plain": run_plain}
IMPORTS = {"ours": ["etl_assets.sources.registry", "etl_assets.watermark"],
           "dlt": ["dlt", "dlt.sources.rest_api", "dlt.destinations"],
           "plain": ["requests"]}


def cpu_seconds_used() -> float:
    """User + system CPU seconds of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def one_run(contender: str, read: Read) -> dict[str, float]:
    """One contender reading the window, in this process (imports are not timed)."""
    for module in IMPORTS[contender]:
        importlib.import_module(module)
    if contender == "ours":  # the module that opens a `kind: http` source, and what it imports
        from etl_assets.sources.registry import SOURCE_KINDS

        if "http" in SOURCE_KINDS:
            importlib.import_module(SOURCE_KINDS["http"].opener.partition(":")[0])
    cpu, began = cpu_seconds_used(), time.perf_counter()
    RUNNERS[contender](read)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "cpu_s": cpu_seconds_used() - cpu, "peak_mb": peak_mb()}


# --- the parent ------------------------------------------------------------------------------

def server_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the server has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Written:
    """What a run left in parquet."""

    records: int
    distinct_ids: int
    schema: pa.Schema


def written(out: Path) -> Written:
    """The records of the parquet files under ``out`` (dlt's own tables left out)."""
    files = [f for f in sorted(out.rglob("*.parquet"))
             if not any(part.startswith("_dlt") for part in f.relative_to(out).parts)]
    if not files:
        return Written(0, 0, pa.schema([]))
    ids = pa.concat_arrays([pq.read_table(f, columns=["id"]).column("id").combine_chunks()
                            for f in files])
    return Written(len(ids), pc.count_distinct(ids).as_py(), pq.read_schema(files[0]))


def run_child(contender: str, url: str, window: tuple[datetime, datetime], work: Path,
              server: subprocess.Popen[bytes], expected: int
              ) -> tuple[dict[str, float], Written]:
    """``contender`` in a process of its own, then its output checked: its timings (and the
    server's CPU use while it ran) and what it wrote. RuntimeError when it fails."""
    out = Path(tempfile.mkdtemp(prefix=f"{contender}_", dir=work))
    env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false"}  # dlt: no calls home
    server_cpu = server_cpu_seconds(server.pid)
    child = subprocess.run(
        [sys.executable, __file__, "--run", contender, "--url", url, "--lo",
         window[0].isoformat(), "--hi", window[1].isoformat(), "--out", str(out)],
        capture_output=True, text=True, env=env)
    server_cpu = server_cpu_seconds(server.pid) - server_cpu
    if child.returncode:
        raise RuntimeError(child.stderr.strip().splitlines()[-1] if child.stderr.strip()
                           else f"exit {child.returncode}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result["server_cpu"] = server_cpu / result["seconds"]
    wrote = written(out)
    shutil.rmtree(out)
    shutil.rmtree(out.parent / "dlt_pipelines", ignore_errors=True)
    if wrote.records != expected or wrote.distinct_ids != expected:
        raise RuntimeError(f"wrote {wrote.records:,} records ({wrote.distinct_ids:,} ids), "
                           f"expected {expected:,}")
    return result, wrote


def described(schema: pa.Schema) -> str:
    """A written schema in one line: its column count and how updated_at and attrs landed."""
    notes = [f"{len(schema)} columns"]
    for name in ("updated_at", "attrs"):
        if name in schema.names:
            notes.append(f"{name} {schema.field(name).type}")
    flattened = [n for n in schema.names if n.startswith("attrs__")]
    if flattened:
        notes.append(f"attrs flattened into {', '.join(flattened)}")
    return "; ".join(notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--small", type=int, default=50_000,
                        help="records in the window of the memory check (and in a day)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per contender (the median is shown)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--lo", help=argparse.SUPPRESS)
    parser.add_argument("--hi", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        read = Read(args.url, datetime.fromisoformat(args.lo), datetime.fromisoformat(args.hi),
                    Path(args.out))
        print(json.dumps(one_run(args.run, read)))
        return

    contenders = args.contenders.split(",")
    unknown = set(contenders) - set(CONTENDERS)
    if unknown or not 0 < args.small <= args.records:
        parser.error(f"contenders are {', '.join(CONTENDERS)}; 0 < --small <= --records")
    days = -(-args.records // args.small)
    full, small = (START, START + days * DAY), (START, START + DAY)
    work = Path(tempfile.mkdtemp(prefix="bench_http_source_"))
    print(f"making {args.records:,} records ...", file=sys.stderr)
    server, url = start_server(work, make_source(work, args.records, args.small))
    results: dict[str, list[dict[str, float]]] = {c: [] for c in contenders}
    small_peak: dict[str, float] = {}
    failed: dict[str, str] = {}
    schemas: dict[str, pa.Schema] = {}
    try:
        call("GET", f"{url}?_size=max")  # a first page: the file read, datasette warm
        for repeat in range(args.repeats):
            for contender in contenders:
                if contender in failed:
                    continue
                print(f"{contender}: {args.records:,} records, run {repeat + 1} ...",
                      file=sys.stderr)
                try:
                    result, wrote = run_child(contender, url, full, work, server, args.records)
                except RuntimeError as exc:
                    failed[contender] = str(exc)
                    print(f"{contender} FAILED: {exc}", file=sys.stderr)
                    continue
                results[contender].append(result)
                schemas[contender] = wrote.schema
        for contender in contenders:
            if contender in failed:
                continue
            print(f"{contender}: {args.small:,} records ...", file=sys.stderr)
            try:
                small_peak[contender] = run_child(contender, url, small, work, server,
                                                  args.small)[0]["peak_mb"]
            except RuntimeError as exc:
                small_peak[contender] = float("nan")
                print(f"{contender} FAILED at {args.small:,} records: {exc}", file=sys.stderr)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)

    def median(contender: str, key: str) -> float:
        return statistics.median(r[key] for r in results[contender])

    n = args.records
    print(f"\n{n:,} records (10 fields, attrs nested) from datasette's JSON API, 1,000 a page, "
          f"into parquet; median of {args.repeats}")
    print(f"{'contender':<10}{'seconds':>9}{'records/s':>11}{'CPU s':>8}{'server CPU':>12}"
          f"{'peak MB':>9}{f'MB at {args.small // 1000}k':>11}")
    measured = [c for c in contenders if results[c] and c not in failed]
    for contender in contenders:
        if contender not in measured:
            print(f"{contender:<10}FAILED: {failed.get(contender, 'no run')}")
            continue
        seconds = median(contender, "seconds")
        print(f"{contender:<10}{seconds:>9.2f}{n / seconds:>11,.0f}"
              f"{median(contender, 'cpu_s'):>8.1f}{median(contender, 'server_cpu'):>12.0%}"
              f"{median(contender, 'peak_mb'):>9.0f}{small_peak[contender]:>11.0f}")
    print("\nwhat each wrote")
    for contender in measured:
        print(f"{contender:<10}{described(schemas[contender])}")
    if len(measured) > 1:
        reference = next(c for c in ("ours", "plain", *measured) if c in measured)
        ratios = [f"{peer} {median(peer, 'seconds') / median(reference, 'seconds'):.2f}x"
                  for peer in measured if peer != reference]
        print(f"\nspeed of {reference} relative to each peer (>1: {reference} faster; goal: "
              f"ours >= 1.5x dlt): {', '.join(ratios)}")
    if measured:
        print(f"\npeak memory at {args.small:,} -> {n:,} records (flat: the same): " + ", ".join(
            f"{c} {small_peak[c]:.0f} -> {median(c, 'peak_mb'):.0f} MB" for c in measured))


if __name__ == "__main__":
    main()
