"""What the SQL sinks share about a batch's rows: how an error shows a row (its key values,
else the whole row), the first NULL key, and the name of a run's temporary table."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc


def row_text(batch: pa.RecordBatch, row: int, primary_key: Sequence[str]) -> str:
    """Row ``row`` of ``batch`` for an error: ``k=v`` of its key, or of every column when it
    has no (complete) key."""
    values = batch.slice(row, 1).to_pylist()[0]
    shown = {k: values[k] for k in primary_key} if primary_key and all(
        values.get(k) is not None for k in primary_key) else values
    return ", ".join(f"{k}={v!r}" for k, v in shown.items())


def null_key(batch: pa.RecordBatch, primary_key: Sequence[str]) -> str | None:
    """The error text of the first row whose key has a NULL, or None."""
    for key in primary_key:
        column = batch.column(key)
        if column.null_count:
            row = pc.index(pc.is_null(column), True).as_py()
            return (f"primary key column {key} is NULL in batch row {row}: "
                    f"{row_text(batch, row, primary_key)}")
    return None


def staging_table_name(asset: str, partition: str | None, run_id: str) -> str:
    """A temporary table name unique to one asset, partition and run (max 26 characters)."""
    digest = hashlib.sha1(f"{asset}|{partition}|{run_id}".encode()).hexdigest()[:16]
    return f"etl_stage_{digest}"
