"""Benchmark: the file sink (ours) beside plain pyarrow / pandas writing the same rows.

Rows: generated, 10 columns (ints, text, floats, bools, dates, UTC timestamps, decimals), in
batches of 50,000 as the staging IO manager hands them over. Cases:

- shard parquet: ``FileSink`` (temp file + rename) vs ``pyarrow.parquet.write_table``
- shard csv:     ``FileSink`` vs ``pyarrow.csv.write_csv``
- drop_duplicates parquet (spill + last row per key) vs the in-memory pyarrow way (group_by
  the key for each key's last row, take, write_table)
- update parquet: merge ``--update-rows`` (half new keys) into a ``--rows`` dataset, vs the
  in-memory pyarrow way (read_table, drop replaced keys with is_in, concat, write_table); each
  in a fresh process, with its peak memory (max RSS)
- json lines: ``FileSink`` (whole-batch serialisation) vs pandas ``to_json(lines=True)`` vs
  the row-at-a-time ``iter_json_lines`` (on ``--rows / 5`` rows: it is slow)

Each timing is the median of ``--repeat`` runs (peak memory: the highest). Prints seconds,
rows/s and ours / peer time ratios (below 1: ours is faster).

    .venv/bin/python bench/file_sink.py [--rows 1000000] [--update-rows 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from etl_assets.json_documents import iter_json_lines
from etl_assets.sinks.files.formats import file_format
from etl_assets.sinks.files.spec import FileMode
from etl_assets.sinks.files.target import FileTarget
from etl_assets.sinks.files.writer import FileSink

BATCH_ROWS = 50_000
REPEAT = 3  # runs a timing is the median of (--repeat)


def generated(rows: int, first_id: int = 0) -> pa.Table:
    ids = np.arange(first_id, first_id + rows, dtype=np.int64)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()
    return pa.table({
        "id": ids,
        "code": pa.array([f"SEN-{i}" for i in ids]),
        "description": pa.array([f"description {'x' * (i % 17)} {i}" for i in ids]),
        "site": (ids % 1000).astype(np.int32),
        "reading": ids * 0.001,
        "active": ids % 2 == 0,
        "day": pa.array((ids % 365).astype("datetime64[D]")),
        "updated_at": pa.array(((start + ids) * 1_000_000).astype("datetime64[us]")).cast(
            pa.timestamp("us", tz="UTC")),
        "amount": pa.array([Decimal(int(i % 100_000)) / 100 for i in ids], pa.decimal128(12, 2)),
        "score": pa.array(np.where(ids % 11 == 0, np.nan, ids / 7.0)),
    })


def timed(action: Callable[[], object]) -> float:
    """Median seconds of ``REPEAT`` runs of ``action`` (each must leave the same result)."""
    seconds = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def line(case: str, tool: str, rows: int, seconds: float, base: float | None = None,
         peak_mb: float | None = None) -> None:
    ratio = f"{seconds / base:5.2f}x" if base else "      "
    peak = f"  peak {peak_mb:,.0f} MB" if peak_mb is not None else ""
    print(f"{case:<26} {tool:<34} {seconds:7.2f} s {rows / seconds:>12,.0f} rows/s  "
          f"{ratio}{peak}")


def update_in_child(kind: str, folder: Path) -> tuple[float, float]:
    """Run one update merge in a fresh process ``REPEAT`` times (the same rows again: the
    same work): (median seconds, highest peak RSS in MB)."""
    results = []
    for _ in range(REPEAT):
        done = subprocess.run([sys.executable, __file__, "--update-child", kind, str(folder)],
                              check=True, capture_output=True, text=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return (statistics.median(r["seconds"] for r in results),
            max(r["peak_mb"] for r in results))


def update_child(kind: str, folder: Path) -> None:
    update = pq.ParquetFile(folder / "update_rows.parquet")
    started = time.perf_counter()
    if kind == "plain":
        rows = update.read()
        existing = pq.read_table(folder / "plain_update.parquet")
        kept = existing.filter(pc.invert(pc.is_in(existing["id"], value_set=rows["id"])))
        pq.write_table(pa.concat_tables([kept, rows]), folder / "plain_update.parquet")
    else:
        sink(folder / "update", "parquet", "update").write(
            update.schema_arrow, update.iter_batches(BATCH_ROWS), partition="b", run_id="r2")
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: Linux carries the forking parent's peak over
    exec into it; VmHWM belongs to this program's own memory map."""
    for entry in Path("/proc/self/status").read_text().splitlines():
        if entry.startswith("VmHWM:"):
            return int(entry.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sink(folder: Path, fmt: str, mode: FileMode = "shard",
         drop_duplicates: bool = False) -> FileSink:
    return FileSink(FileTarget(str(folder)), file_format(fmt), mode, primary_key=["id"],
                    drop_duplicates=drop_duplicates, where="bench")


def main() -> None:
    global REPEAT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--update-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=REPEAT, help="runs per timing (median)")
    parser.add_argument("--update-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.update_child:
        update_child(args.update_child[0], Path(args.update_child[1]))
        return
    REPEAT = args.repeat
    table = generated(args.rows)
    batches = table.to_batches(BATCH_ROWS)
    n = args.rows
    print(f"{n:,} rows x {table.num_columns} columns, batches of {BATCH_ROWS:,}, median of "
          f"{REPEAT}; ratio = ours / the first peer of each case")
    with tempfile.TemporaryDirectory(prefix="bench_file_sink_") as tmp:
        out = Path(tmp)

        plain = timed(lambda: pq.write_table(table, out / "plain.parquet"))
        line("shard parquet", "pyarrow write_table", n, plain)
        ours = timed(lambda: sink(out / "shard", "parquet").write(
            table.schema, batches, partition="p", run_id="r"))
        line("shard parquet", "ours (FileSink)", n, ours, plain)

        plain = timed(lambda: pacsv.write_csv(table, out / "plain.csv"))
        line("shard csv", "pyarrow write_csv", n, plain)
        ours = timed(lambda: sink(out / "csv", "csv").write(
            table.schema, batches, partition="p", run_id="r"))
        line("shard csv", "ours (FileSink)", n, ours, plain)

        def plain_dedup() -> None:
            numbered = table.append_column("__row", pa.array(np.arange(n)))
            last = numbered.group_by(["id"]).aggregate([("__row", "max")])
            rows = last["__row_max"]
            pq.write_table(table.take(pc.take(rows, pc.sort_indices(rows))), out / "plain2.parquet")

        plain = timed(plain_dedup)
        line("drop_duplicates parquet", "pyarrow in memory (group_by+take)", n, plain)
        ours = timed(lambda: sink(out / "dedup", "parquet", drop_duplicates=True).write(
            table.schema, batches, partition="p", run_id="r"))
        line("drop_duplicates parquet", "ours (spill, last row per key)", n, ours, plain)

        # update: a dataset of n rows, then update_rows rows of which half are new keys; each
        # merge in a fresh process, so its peak memory is its own
        update = generated(args.update_rows, first_id=n - args.update_rows // 2)
        pq.write_table(update, out / "update_rows.parquet")
        sink(out / "update", "parquet", "update").write(table.schema, batches, partition="a",
                                                        run_id="r1")
        pq.write_table(table, out / "plain_update.parquet")
        plain, plain_mb = update_in_child("plain", out)
        line("update parquet", "pyarrow in memory (read+concat)", args.update_rows, plain,
             peak_mb=plain_mb)
        ours, ours_mb = update_in_child("ours", out)
        line("update parquet", "ours (streamed merge)", args.update_rows, ours, plain,
             peak_mb=ours_mb)
        assert pq.read_metadata(out / "update" / "data.parquet").num_rows == \
            pq.read_metadata(out / "plain_update.parquet").num_rows == n + args.update_rows // 2

        frame = table.to_pandas()
        plain = timed(lambda: frame.to_json(out / "plain.jsonl", orient="records", lines=True,
                                            date_format="iso"))
        line("json lines", "pandas to_json(lines=True)", n, plain)
        ours = timed(lambda: sink(out / "json", "json").write(
            table.schema, batches, partition="p", run_id="r"))
        line("json lines", "ours (whole-batch)", n, ours, plain)
        few = table.slice(0, n // 5)

        def row_at_a_time() -> None:
            with open(out / "rows.jsonl", "wb") as handle:
                for batch in few.to_batches(BATCH_ROWS):
                    handle.writelines(iter_json_lines(batch))

        line("json lines", "row at a time (iter_json_lines)", few.num_rows, timed(row_at_a_time))


if __name__ == "__main__":
    main()
