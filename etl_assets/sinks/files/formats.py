"""The file sink's formats: parquet, JSON lines and CSV, each a streaming writer plus the
reader update mode needs to keep an existing file's rows whose keys the new rows replace.

JSON lines are the documents of :mod:`etl_assets.json_documents` (the one Arrow -> JSON
mapping). CSV has a header row; binary and nested columns are written as JSON text (binary as
base64), a null is an empty field and an empty string is ``""``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO, Literal, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from etl_assets.errors import DataError
from etl_assets.json_documents import documents, json_lines, json_values
from etl_assets.sinks.files.run_keys import MergeKeyError, RunKeys
from etl_assets.sinks.files.spilled_rows import ROW

FormatName = Literal["parquet", "json", "csv"]
FORMATS: tuple[FormatName, ...] = ("parquet", "json", "csv")
# Existing rows read per step of an update's merge: each step hashes the run's keys once.
MERGE_BATCH_ROWS = 262_144
# Rows per parquet row group written (memory held: one row group's batches).
ROW_GROUP_ROWS = 262_144


class FileFormatError(DataError, ValueError):
    """Data a format cannot hold, or an existing file it cannot read."""


class RowWriter(Protocol):
    def write(self, batch: pa.RecordBatch) -> None: ...
    def close(self) -> None: ...


class FileFormat(Protocol):
    """A file format: how rows are written, and how update mode keeps an existing file's rows."""

    name: FormatName
    suffix: str

    def writer(self, out: IO[bytes], schema: pa.Schema, existing: IO[bytes] | None = None
               ) -> RowWriter:
        """A writer of ``schema``'s rows to ``out``; with ``existing`` (update mode), its
        schema also holds the existing file's columns."""
        ...

    def copy_rows_kept(self, existing: IO[bytes], keys: RunKeys, writer: RowWriter) -> int:
        """Copy the rows of ``existing`` that stay beside the run's rows (``keys``: those
        whose key the run does not bring, or which hold a newer version) to ``writer``;
        returns rows copied."""
        ...


@contextlib.contextmanager
def closed_at_end(writer: RowWriter) -> Iterator[RowWriter]:
    """``writer``, closed when the block ends (quietly when the block raised)."""
    try:
        yield writer
    except BaseException:
        with contextlib.suppress(Exception):
            writer.close()
        raise
    writer.close()


def file_format(name: str) -> FileFormat:
    """The format called ``name`` (parquet, json or csv)."""
    if name == "parquet":
        return ParquetFormat()
    if name == "json":
        return JsonLinesFormat()
    if name == "csv":
        return CsvFormat()
    raise FileFormatError(f"unknown file format {name!r} (formats: {', '.join(FORMATS)})")


def aligned(batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with ``schema``'s columns in its order: missing ones null, others cast."""
    columns = []
    for field in schema:
        if field.name in batch.schema.names:
            column = batch.column(field.name)
            columns.append(column if column.type == field.type else column.cast(field.type))
        else:
            columns.append(pa.nulls(batch.num_rows, field.type))
    table = pa.Table.from_arrays(columns, schema=schema)
    return table.combine_chunks().to_batches(max_chunksize=max(table.num_rows, 1))[0] \
        if table.num_rows else pa.RecordBatch.from_pylist([], schema)


def merged_schema(incoming: pa.Schema, existing: pa.Schema) -> pa.Schema:
    """The incoming columns (their types win), then columns only the existing file has."""
    extra = [field for field in existing if field.name not in incoming.names]
    return pa.schema(list(incoming) + extra, metadata=incoming.metadata)


def kept_part(batch: pa.RecordBatch, keys: RunKeys) -> pa.RecordBatch:
    """The rows of ``batch`` that stay beside the run's rows (see :class:`RunKeys`)."""
    try:
        kept = keys.kept(batch)
    except MergeKeyError as exc:
        raise FileFormatError(str(exc)) from None
    return batch if kept is None else batch.take(kept)


class ParquetFormat:
    name: FormatName = "parquet"
    suffix = ".parquet"

    def writer(self, out: IO[bytes], schema: pa.Schema, existing: IO[bytes] | None = None
               ) -> RowWriter:
        if existing is not None:
            schema = merged_schema(schema, pq.read_schema(existing))
            existing.seek(0)
        return _ParquetWriter(out, schema)

    def copy_rows_kept(self, existing: IO[bytes], keys: RunKeys, writer: RowWriter) -> int:
        copied = 0
        for batch in pq.ParquetFile(existing).iter_batches(batch_size=MERGE_BATCH_ROWS):
            kept = kept_part(batch, keys)
            writer.write(kept)
            copied += kept.num_rows
        return copied


class _ParquetWriter:
    """Batches gathered into row groups of about ``ROW_GROUP_ROWS`` (fewer, larger groups
    write faster and compress better than one per incoming batch)."""

    def __init__(self, out: IO[bytes], schema: pa.Schema) -> None:
        self.schema = schema
        self._writer = pq.ParquetWriter(out, schema)
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._pending.append(aligned(batch, self.schema))
            self._pending_rows += batch.num_rows
            if self._pending_rows >= ROW_GROUP_ROWS:
                self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = pa.Table.from_batches(self._pending, self.schema)
            self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
            self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()


class JsonLinesFormat:
    """One compact JSON document a line. Update mode keeps existing lines byte for byte."""

    name: FormatName = "json"
    suffix = ".jsonl"

    def writer(self, out: IO[bytes], schema: pa.Schema, existing: IO[bytes] | None = None
               ) -> RowWriter:
        return _JsonLinesWriter(out)

    def copy_rows_kept(self, existing: IO[bytes], keys: RunKeys, writer: RowWriter) -> int:
        """Lines are read in blocks; only their key (and cursor) fields are parsed (by Arrow's
        JSON reader; keys compared as the file holds them, as JSON values), and kept lines are
        copied as they are."""
        assert isinstance(writer, _JsonLinesWriter)
        json_keys = _as_json_keys(keys)
        options = pajson.ParseOptions(explicit_schema=json_keys.schema(),
                                      unexpected_field_behavior="ignore")
        copied = 0
        for block in line_blocks(existing):
            lines = [line for line in block.split(b"\n") if line.strip()]
            try:
                found = pajson.read_json(pa.BufferReader(block), parse_options=options)
            except pa.ArrowInvalid as exc:
                raise FileFormatError(f"a line is not JSON with the key "
                                      f"{', '.join(json_keys.columns)}: {exc}") from None
            if found.num_rows != len(lines):
                raise FileFormatError(f"{len(lines)} lines but {found.num_rows} documents")
            try:
                kept = json_keys.kept(found)
            except MergeKeyError as exc:
                raise FileFormatError(str(exc)) from None
            chosen = lines if kept is None else [lines[i] for i in kept.to_numpy()]
            writer.write_lines([line + b"\n" for line in chosen])
            copied += len(chosen)
        return copied


def _as_json_keys(keys: RunKeys) -> RunKeys:
    """``keys`` with the key columns as JSON lines hold them (:mod:`json_documents`'
    values: decimals as text, timestamps as ISO text...); the cursor keeps its type, which
    Arrow's JSON reader parses from that text."""
    as_json = pa.Table.from_pylist(documents(keys.table.select(keys.key)))
    columns = {name: as_json.column(name) for name in keys.key}
    if keys.newest_by is not None:
        columns[keys.newest_by] = keys.table.column(keys.newest_by)
    columns[ROW] = keys.table.column(ROW)
    return keys.with_table(pa.table(columns))


def line_blocks(source: IO[bytes], size: int = 8 << 20) -> Iterator[bytes]:
    """``source`` in blocks of whole lines (about ``size`` bytes each)."""
    rest = b""
    while True:
        chunk = source.read(size)
        if not chunk:
            if rest.strip():
                yield rest
            return
        chunk = rest + chunk
        cut = chunk.rfind(b"\n")
        if cut < 0:
            rest = chunk
            continue
        rest = chunk[cut + 1:]
        yield chunk[:cut + 1]


class _JsonLinesWriter:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def write(self, batch: pa.RecordBatch) -> None:
        self.out.write(json_lines(batch))

    def write_lines(self, lines: list[bytes]) -> None:
        self.out.write(b"".join(lines))

    def close(self) -> None:
        self.out.flush()


CSV_PARSE = pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False)


def _csv_field(field: pa.Field) -> pa.Field:
    kind = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
    return field.with_type(kind if _csv_native(kind) else pa.string())


def csv_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` as CSV holds it: dictionaries decoded, binary and nested columns as JSON
    text."""
    return pa.schema([_csv_field(field) for field in schema], metadata=schema.metadata)


def _csv_native(kind: pa.DataType) -> bool:
    return not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
                or pa.types.is_fixed_size_binary(kind) or pa.types.is_nested(kind)
                or pa.types.is_dictionary(kind))


def csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with dictionaries decoded, binary and nested columns as JSON text (nulls
    stay null)."""
    if all(_csv_native(field.type) for field in batch.schema):
        return batch
    columns = []
    for i, field in enumerate(batch.schema):
        column = batch.column(i)
        if pa.types.is_dictionary(field.type):
            column = column.cast(field.type.value_type)
            field = field.with_type(field.type.value_type)
        if not _csv_native(field.type):
            text = json_values(column, field).cast(pa.string())
            if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
                text = pc.utf8_slice_codeunits(text, 1, -1)  # base64 text without its quotes
            column = pc.if_else(column.is_null(), None, text)
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=csv_schema(batch.schema))


def csv_header(source: IO[bytes]) -> list[str]:
    """The column names of a CSV file (``source`` is rewound)."""
    names = pacsv.open_csv(source, read_options=pacsv.ReadOptions(block_size=1 << 16),
                           parse_options=CSV_PARSE).schema.names
    source.seek(0)
    return list(names)


def read_csv(source: IO[bytes], types: dict[str, pa.DataType]) -> pacsv.CSVStreamingReader:
    """A CSV file as the file sink writes it, in batches: columns typed by ``types`` (others
    inferred), an empty field null, ``""`` an empty string."""
    return pacsv.open_csv(
        source, read_options=pacsv.ReadOptions(block_size=8 << 20), parse_options=CSV_PARSE,
        convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True,
                                             quoted_strings_can_be_null=False))


class CsvFormat:
    """A header row, then one row a line (RFC 4180 quoting, as written by Arrow)."""

    name: FormatName = "csv"
    suffix = ".csv"

    def writer(self, out: IO[bytes], schema: pa.Schema, existing: IO[bytes] | None = None
               ) -> RowWriter:
        schema = csv_schema(schema)
        if existing is not None:
            extra = [pa.field(name, pa.string()) for name in csv_header(existing)
                     if name not in schema.names]
            schema = pa.schema(list(schema) + extra, metadata=schema.metadata)
        return _CsvWriter(out, schema)

    def copy_rows_kept(self, existing: IO[bytes], keys: RunKeys, writer: RowWriter) -> int:
        assert isinstance(writer, _CsvWriter)
        copied = 0
        for batch in read_csv(existing, {f.name: f.type for f in writer.schema}):
            kept = kept_part(batch, keys)
            writer.write_ready(kept)
            copied += kept.num_rows
        return copied


class _CsvWriter:
    def __init__(self, out: IO[bytes], schema: pa.Schema) -> None:
        self.schema = schema
        self._writer = pacsv.CSVWriter(out, schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self.write_ready(csv_ready(batch))

    def write_ready(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._writer.write_batch(aligned(batch, self.schema))

    def close(self) -> None:
        self._writer.close()
