"""Benchmark: loading rows into BigQuery (bqemulator on loopback), ours side by side with a
plain google-cloud-bigquery load of the same rows as one parquet file.

Contenders, one run each on the same generated rows (8 columns) into a new table:
- plain client: `load_table_from_file` of the whole table written as parquet
- ours, append: BigQuerySinkIOManager, load jobs of `--chunk-rows`
- ours, merge: the same rows again into the full table (staging table + MERGE per chunk)

Prints seconds, rows/s and ratios. The emulator bounds all of them; the ratios show our
overhead (chunking, type preparation, merge) over a bare load.

    .venv/bin/python bench/bigquery_load.py [--rows 300000] [--chunk-rows 100000]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dagster import AssetKey, build_output_context
from google.cloud import bigquery

from etl_assets.batches import RecordBatchStream
from etl_assets.sinks.base import SinkSetup
from etl_assets.sinks.bigquery.io_manager import BigQuerySinkIOManager
from etl_assets.sinks.bigquery.spec import BigQuerySinkSpec
from etl_assets.watermark import Window
from etl_assets_testing.servers.bigquery import PROJECT, BigQueryEmulator
from etl_assets_testing.servers.loopback import free_port

UTC = timezone.utc
WINDOW = Window(datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))


def generated(rows: int, batch_rows: int = 50_000) -> list[pa.RecordBatch]:
    ids = np.arange(1, rows + 1, dtype=np.int64)
    table = pa.table({
        "id": ids,
        "updated_at": pa.array(1_704_067_200_000_000 + ids * 1_000_000,
                               pa.timestamp("us", tz="UTC")),
        "code": pa.array(np.char.add("SEN-", ids.astype(str)).astype(object)),
        "site": (ids % 1000).astype(np.int32),
        "reading": ids * 0.001,
        "active": ids % 2 == 0,
        "day": pa.array((19723 + ids % 365).astype(np.int32)).cast(pa.date32()),
        "amount": pa.array(ids % 100_000).cast(pa.decimal128(19, 0)).cast(pa.decimal128(12, 2)),
    })
    return table.to_batches(max_chunksize=batch_rows)


def plain_load(client: bigquery.Client, dataset: str, batches: list[pa.RecordBatch]) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_batches(batches), buffer)
    buffer.seek(0)
    client.create_dataset(f"{PROJECT}.{dataset}", exists_ok=True)
    schema = [bigquery.SchemaField(name, kind) for name, kind in (
        ("id", "INT64"), ("updated_at", "TIMESTAMP"), ("code", "STRING"), ("site", "INT64"),
        ("reading", "FLOAT64"), ("active", "BOOL"), ("day", "DATE"), ("amount", "NUMERIC"))]
    client.create_table(bigquery.Table(f"{PROJECT}.{dataset}.plain", schema=schema))
    config = bigquery.LoadJobConfig(source_format="PARQUET")
    client.load_table_from_file(buffer, f"{PROJECT}.{dataset}.plain", job_config=config).result()


def ours(endpoint: str, dataset: str, write: str, batches: list[pa.RecordBatch], chunk_rows: int,
         home: str) -> float:
    """Seconds of the IO manager's work (the Dagster context is made before the clock)."""
    spec = BigQuerySinkSpec(kind="bigquery", source="bench", project=PROJECT, dataset=dataset,
                            table="ours", write=write, api_endpoint=endpoint,
                            chunk_rows=chunk_rows)
    manager = BigQuerySinkIOManager(SinkSetup.of("bench", spec, source_primary_key=["id"],
                                                 source_cursor="updated_at",
                                                 dead_letter_root=home))
    context = build_output_context(asset_key=AssetKey("bench"), partition_key=WINDOW.key,
                                   run_id=str(uuid.uuid4()))
    began = time.perf_counter()
    manager.handle_output(context, RecordBatchStream(batches[0].schema, iter(batches)))
    seconds = time.perf_counter() - began
    failed = context.get_logged_metadata()["rows_failed"].value
    if failed:
        sys.exit(f"ours ({write}): {failed} rows failed")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    args = parser.parse_args()
    batches = generated(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        emulator = BigQueryEmulator(free_port(), Path(tmp))
        emulator.start()
        try:
            client = emulator.client()
            timings = {}
            for name, run in (
                    ("plain client, one load", lambda: plain_load(client, "bench", batches)),
                    ("ours, append", lambda: ours(emulator.endpoint, "bench", "append", batches,
                                                  args.chunk_rows, tmp)),
                    ("ours, merge into full", lambda: ours(emulator.endpoint, "bench", "merge",
                                                           batches, args.chunk_rows, tmp))):
                print(f"{name} ...", file=sys.stderr)
                began = time.perf_counter()
                seconds = run()
                timings[name] = seconds if seconds is not None else time.perf_counter() - began
            for table in ("plain", "ours"):
                (count,) = next(iter(client.query(
                    f"SELECT count(*) FROM `{PROJECT}.bench.{table}`").result()))
                assert count == args.rows, f"{table}: {count} rows, expected {args.rows}"
        finally:
            emulator.stop()
    print(f"\n{args.rows:,} rows x 8 columns, ours in chunks of {args.chunk_rows:,}")
    print(f"{'contender':<26}{'seconds':>9}{'rows/s':>11}{'vs plain':>10}")
    plain = timings["plain client, one load"]
    for name, seconds in timings.items():
        print(f"{name:<26}{seconds:>9.2f}{args.rows / seconds:>11,.0f}{plain / seconds:>9.2f}x")


if __name__ == "__main__":
    main()
