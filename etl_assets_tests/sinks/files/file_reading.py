"""Read a file sink's output back the way its users would: pyarrow, json and csv modules."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pyarrow.parquet as pq


def parquet_rows(data: bytes) -> list[dict[str, Any]]:
    return pq.read_table(io.BytesIO(data)).to_pylist()


def json_rows(data: bytes) -> list[dict[str, Any]]:
    text = data.decode()
    assert text == "" or text.endswith("\n"), "every JSON line ends in a newline"
    return [json.loads(line) for line in text.splitlines()]


def csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode(), newline="")))


def rows_of(fmt: str, data: bytes) -> list[dict[str, Any]]:
    """The rows of a file in ``fmt``; CSV values as text (empty for null)."""
    return {"parquet": parquet_rows, "json": json_rows, "csv": csv_rows}[fmt](data)


def by_id(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(row["id"]): row for row in rows}
