"""Benchmark: the file sink (ours) beside plain pyarrow / pandas writing the same rows, one run.

Rows: generated, 10 columns (ints, text, floats, bools, dates, UTC timestamps, decimals), in
batches of 50,000 as the staging IO manager hands them over. Cases, each timed once:

- shard parquet: ``FileSink`` (temp file + rename) vs ``pyarrow.parquet.write_table``
- shard csv:     ``FileSink`` vs ``pyarrow.csv.write_csv``
- drop_duplicates parquet (spill + last row per key) vs the in-memory pyarrow way (group_by
  the key for each key's last row, take, write_table)
- update parquet: merge ``--update-rows`` (half new keys) into a ``--rows`` dataset, vs the
  in-memory pyarrow way (read_table, drop replaced keys with is_in, concat, write_table)
- json lines: ``FileSink`` (whole-batch serialisation) vs pandas ``to_json(lines=True)`` vs
  the row-at-a-time ``iter_json_lines`` (on ``--rows / 5`` rows: it is slow)

Prints seconds, rows/s and ours / peer time ratios (below 1: ours is faster).

    .venv/bin/python bench/file_sink.py [--rows 1000000] [--update-rows 100000]
"""

from __future__ import annotations

import argparse
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

from etl_assets.io_managers.file_formats import file_format
from etl_assets.io_managers.file_sink import FileSink
from etl_assets.io_managers.file_target import FileTarget
from etl_assets.json_documents import iter_json_lines

BATCH_ROWS = 50_000


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
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def line(case: str, tool: str, rows: int, seconds: float, base: float | None = None) -> None:
    ratio = f"{seconds / base:5.2f}x" if base else "     "
    print(f"{case:<26} {tool:<34} {seconds:7.2f} s {rows / seconds:>12,.0f} rows/s  {ratio}")


def sink(folder: Path, fmt: str, mode: str = "shard", **kwargs: object) -> FileSink:
    return FileSink(FileTarget(str(folder)), file_format(fmt), mode,  # type: ignore[arg-type]
                    primary_key=["id"], where="bench", **kwargs)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--update-rows", type=int, default=100_000)
    args = parser.parse_args()
    table = generated(args.rows)
    batches = table.to_batches(BATCH_ROWS)
    n = args.rows
    print(f"{n:,} rows x {table.num_columns} columns, batches of {BATCH_ROWS:,}; "
          f"ratio = ours / the first peer of each case")
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

        # update: a dataset of n rows, then update_rows rows of which half are new keys
        update = generated(args.update_rows, first_id=n - args.update_rows // 2)
        merged = sink(out / "update", "parquet", "update")
        merged.write(table.schema, batches, partition="a", run_id="r1")
        pq.write_table(table, out / "plain_update.parquet")

        def plain_update() -> None:
            existing = pq.read_table(out / "plain_update.parquet")
            kept = existing.filter(pc.invert(pc.is_in(existing["id"], value_set=update["id"])))
            pq.write_table(pa.concat_tables([kept, update]), out / "plain_update.parquet")

        plain = timed(plain_update)
        line("update parquet", "pyarrow in memory (read+concat)", args.update_rows, plain)
        ours = timed(lambda: merged.write(update.schema, update.to_batches(BATCH_ROWS),
                                          partition="b", run_id="r2"))
        line("update parquet", "ours (streamed merge)", args.update_rows, ours, plain)
        assert pq.read_metadata(out / "update" / "data.parquet").num_rows == \
            n + args.update_rows // 2

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
