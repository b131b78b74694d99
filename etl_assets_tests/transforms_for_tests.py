"""Transforms named by the tests' specs (``etl_assets_tests.transforms_for_tests:...``)."""

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def shout_codes(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Upper-case ``code`` (prefixing ``X-``), keep only id, code and updated_at."""
    codes = pc.binary_join_element_wise("X-", pc.utf8_upper(batch.column("code")), "")
    return pa.RecordBatch.from_arrays(
        [batch.column("id"), codes, batch.column("updated_at")],
        names=["id", "code", "updated_at"])


def with_pandas(batch: pa.RecordBatch) -> pd.DataFrame:
    """A pandas transform: ``id`` and ``amount`` doubled (as float)."""
    frame = batch.select(["id", "amount"]).to_pandas()
    frame["amount"] = frame["amount"].astype("float64") * 2
    return frame


def without_ratio(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Every column but ``ratio`` (an unbounded numeric, which bqemulator cannot hold)."""
    return batch.drop_columns(["ratio"])


def reading_documents(batch: pa.RecordBatch) -> list[dict]:
    """An HTTP sink's transform: each row as a nested JSON document."""
    return [{"id": row["id"], "code": row["code"],
             "reading": {"amount": None if row["amount"] is None else str(row["amount"]),
                         "at": row["updated_at"].isoformat()}}
            for row in batch.select(["id", "code", "amount", "updated_at"]).to_pylist()]


def slow_rows(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch unchanged, after ``$ETL_TEST_SLOW_S`` seconds: a run to kill midway."""
    import os
    import time

    time.sleep(float(os.environ.get("ETL_TEST_SLOW_S", "0")))
    return batch
