"""Fast extraction from PostgreSQL: ``COPY (SELECT ..) TO STDOUT (FORMAT csv)`` parsed by
pyarrow's streaming CSV reader against the known Arrow schema.

About 5x faster than fetching rows through the driver (no Python object per value). Used for
table sources whose columns all have a CSV text form pyarrow parses exactly; other sources take
the generic path in :mod:`etl_assets.sources.sql`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from etl_assets.arrow_types import logical_type_of
from etl_assets.watermark import Bound

# Session settings that make COPY's text exact and parseable: UTC offsets, ISO dates, and
# shortest-exact float digits on every server version.
_SESSION = ("SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, YMD'", "SET extra_float_digits = 3")


def copy_supported(schema: pa.Schema) -> bool:
    """Whether every column of ``schema`` round-trips exactly through COPY CSV + pyarrow."""
    def ok(field: pa.Field) -> bool:
        if logical_type_of(field) in ("json", "uuid", "numeric"):
            return True
        arrow = field.type
        return (pa.types.is_integer(arrow) or pa.types.is_floating(arrow)
                or pa.types.is_boolean(arrow) or pa.types.is_string(arrow)
                or pa.types.is_timestamp(arrow) or pa.types.is_date32(arrow)
                or pa.types.is_time64(arrow) or pa.types.is_decimal(arrow))
    return all(ok(field) for field in schema)


class _CopyStream(io.RawIOBase):
    """The bytes of a running ``COPY .. TO STDOUT`` as a readable file."""

    def __init__(self, copy: Any) -> None:
        self._chunks = iter(copy)
        self._pending = memoryview(b"")

    def at_end(self) -> bool:
        """True when the COPY sent no data at all (reads ahead one chunk)."""
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return True
            self._pending = memoryview(bytes(chunk))
        return False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(bytes(chunk))
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def copy_batches(conninfo: str, table: tuple[str | None, str], schema: pa.Schema, cursor: str,
                 lo: Bound, hi: Bound, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """Rows of ``table`` with ``lo < cursor <= hi`` ordered by ``cursor``, as batches of
    ``chunk_rows`` rows (the last one shorter)."""
    schema_name, table_name = table
    target = sql.Identifier(schema_name, table_name) if schema_name else sql.Identifier(table_name)
    query = sql.SQL("COPY (SELECT {} FROM {} WHERE {} > {} AND {} <= {} ORDER BY {}) "
                    "TO STDOUT (FORMAT csv)").format(
        sql.SQL(", ").join(sql.Identifier(name) for name in schema.names), target,
        sql.Identifier(cursor), sql.Literal(lo), sql.Identifier(cursor), sql.Literal(hi),
        sql.Identifier(cursor))
    csv_types = pa.schema([pa.field(f.name, f.type) for f in schema])
    with psycopg.connect(conninfo, application_name="etl_assets") as conn:
        for statement in _SESSION:
            conn.execute(statement)
        with conn.cursor() as cur, cur.copy(query) as copy:
            stream = _CopyStream(copy)
            if stream.at_end():  # pyarrow refuses an empty CSV
                return
            reader = pacsv.open_csv(
                io.BufferedReader(stream, buffer_size=1 << 20),
                read_options=pacsv.ReadOptions(column_names=schema.names, block_size=1 << 22),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types=csv_types, null_values=[""], strings_can_be_null=True,
                    quoted_strings_can_be_null=False, true_values=["t"], false_values=["f"]),
            )
            typed = (pa.RecordBatch.from_arrays(b.columns, schema=schema) for b in reader)
            yield from _rebatch(typed, schema, chunk_rows)


def _rebatch(batches: Iterator[pa.RecordBatch], schema: pa.Schema,
             rows: int) -> Iterator[pa.RecordBatch]:
    """Batches of exactly ``rows`` rows (the last one shorter) from batches of any size."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        while held >= rows:
            table = pa.Table.from_batches(pending, schema)
            yield table.slice(0, rows).combine_chunks().to_batches()[0]
            rest = table.slice(rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending, schema).combine_chunks().to_batches()[0]


def split_table_name(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return (schema or None), table


