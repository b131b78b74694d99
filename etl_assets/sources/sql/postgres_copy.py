"""Fast extraction from PostgreSQL: ``COPY (SELECT ..) TO STDOUT (FORMAT csv)`` parsed by
pyarrow's streaming CSV reader against the known Arrow schema.

About 5x faster than fetching rows through the driver (no Python object per value). Used for
table sources whose columns all have a CSV text form pyarrow parses exactly; other sources take
the generic path in :mod:`etl_assets.sources.sql.source`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql
from psycopg.abc import Buffer

from etl_assets.arrow_types import logical_type_of
from etl_assets.table_names import TableName
from etl_assets.watermark import Bound

# Session settings that make COPY's text exact and parseable: UTC offsets, ISO dates, and
# shortest-exact float digits on every server version.
_BLOCK_BYTES = 4 << 20  # CSV bytes parsed at a time
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


def _csv_blocks(copy: Iterable[Buffer], block_bytes: int) -> Iterator[bytes]:
    """The COPY output in blocks of about ``block_bytes``, cut between rows.

    PostgreSQL sends one CopyData message per row, so joining whole messages never splits a
    row (not even one with a newline inside a quoted value). The blocks are made here, in the
    calling thread: handing pyarrow a Python file instead makes its IO threads allocate the
    row buffers, which fragments glibc's per-thread arenas (up to +100 MB RSS on 300 MB).
    """
    parts: list[Buffer] = []
    size = 0
    for message in copy:
        parts.append(message)
        size += len(message)
        if size >= block_bytes:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


def copy_batches(conninfo: str, table: TableName, schema: pa.Schema, cursor: str,
                 lo: Bound, hi: Bound, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """Rows of ``table`` with ``lo < cursor <= hi`` ordered by ``cursor``, as batches of
    ``chunk_rows`` rows (the last one shorter)."""
    target = table.sql()
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
            read_options = pacsv.ReadOptions(column_names=schema.names)
            parse_options = pacsv.ParseOptions(newlines_in_values=True)
            convert_options = pacsv.ConvertOptions(
                column_types=csv_types, null_values=[""], strings_can_be_null=True,
                quoted_strings_can_be_null=False, true_values=["t"], false_values=["f"])

            def parsed() -> Iterator[pa.RecordBatch]:
                for block in _csv_blocks(copy, _BLOCK_BYTES):
                    table = pacsv.read_csv(pa.py_buffer(block), read_options=read_options,
                                           parse_options=parse_options,
                                           convert_options=convert_options)
                    for batch in table.to_batches():
                        yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)

            yield from _rebatch(parsed(), schema, chunk_rows)


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


