"""What a file sink's dataset holds, for asset metadata and the asset checks: its columns, its
row count, and a window's rows.

The dataset is ``data.<ext>`` (update, replace) or every ``<partition>.<ext>`` shard (shard;
``composed.<ext>`` left out). Parquet says its columns, types and rows in each file's footer
(exact and cheap). CSV and JSON lines have no footer: CSV's columns are its header, with the
types Arrow infers from the first ``SAMPLE_BYTES``; JSON lines' are the fields of the lines in
the first and last ``SAMPLE_BYTES`` (an update appends the newest rows, which may bring new
fields), with the types Arrow infers; their rows are counted by reading the files when they
total at most ``EXACT_COUNT_MAX_BYTES``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from etl_assets.json_documents import documents
from etl_assets.sinks.base import WindowCount
from etl_assets.sinks.files.formats import (
    CSV_PARSE,
    FileFormat,
    FileFormatError,
    csv_schema,
    line_blocks,
)
from etl_assets.sinks.files.spec import FileMode
from etl_assets.sinks.files.target import FileTarget
from etl_assets.sinks.files.writer import DATASET
from etl_assets.watermark import Window

EXACT_COUNT_MAX_BYTES = 100 << 20
"""CSV and JSON lines datasets up to this many bytes have their rows counted (bytes)."""
SAMPLE_BYTES = 1 << 20
"""Bytes of a CSV or JSON lines file read to find its columns (at each end for JSON)."""
_BLOCK_BYTES = 8 << 20
_BATCH_ROWS = 262_144
_COMPOSED = "composed"  # etl-assets compose's output beside the shards: not the dataset


@dataclass(frozen=True)
class DatasetState:
    """The dataset's files and bytes, its columns (None: no file yet) and rows (None: too
    large to count)."""

    files: int
    bytes: int
    schema: pa.Schema | None
    rows: int | None


def dataset_files(target: FileTarget, fmt: FileFormat, mode: FileMode) -> list[str]:
    """The files that make up the dataset now, sorted."""
    if mode != "shard":
        name = DATASET + fmt.suffix
        return [name] if target.exists(name) else []
    return [n for n in target.names(suffix=fmt.suffix) if n != _COMPOSED + fmt.suffix]


def dataset_state(target: FileTarget, fmt: FileFormat, mode: FileMode) -> DatasetState:
    """The dataset's files, bytes, columns (see :func:`dataset_schema`) and rows: parquet
    footers' counts; CSV and JSON lines counted when they total at most
    ``EXACT_COUNT_MAX_BYTES``, else None."""
    names = dataset_files(target, fmt, mode)
    sizes = [target.size(name) for name in names]
    counted = fmt.name == "parquet" or sum(sizes) <= EXACT_COUNT_MAX_BYTES
    schemas: list[pa.Schema] = []
    rows = 0
    for name, size in zip(names, sizes, strict=True):
        with target.open_read(name) as handle:
            if fmt.name == "parquet":
                footer = pq.ParquetFile(handle)
                schemas.append(footer.schema_arrow)
                rows += footer.metadata.num_rows
                continue
            schemas.append(_text_schema(handle, size, fmt))
            if counted:
                handle.seek(0)
                rows += _counted_rows(handle, fmt, schemas[-1])
    return DatasetState(len(names), sum(sizes), merged_schema(schemas) if schemas else None,
                        rows if counted else None)


def dataset_schema(target: FileTarget, fmt: FileFormat, mode: FileMode) -> pa.Schema | None:
    """The dataset's columns merged over its files, in order of first appearance (a column is
    nullable when a file says so or lacks it); None when there is no file yet."""
    schemas = []
    for name in dataset_files(target, fmt, mode):
        with target.open_read(name) as handle:
            schemas.append(pq.read_schema(handle) if fmt.name == "parquet" else
                           _text_schema(handle, target.size(name), fmt))
    return merged_schema(schemas) if schemas else None


def merged_schema(schemas: Sequence[pa.Schema]) -> pa.Schema:
    fields: dict[str, pa.Field] = {}
    for schema in schemas:
        for field in schema:
            known = fields.get(field.name)
            fields[field.name] = field if known is None else \
                known.with_nullable(known.nullable or field.nullable)
    return pa.schema([field if all(field.name in s.names for s in schemas)
                      else field.with_nullable(True) for field in fields.values()])


def _text_schema(handle: IO[bytes], size: int, fmt: FileFormat) -> pa.Schema:
    """A CSV or JSON lines file's columns, types inferred from a sample (every column
    nullable: the format cannot say otherwise)."""
    if fmt.name == "csv":
        try:
            schema = pacsv.open_csv(handle, read_options=pacsv.ReadOptions(
                block_size=SAMPLE_BYTES), parse_options=CSV_PARSE).schema
        except pa.ArrowInvalid as exc:
            raise FileFormatError(f"cannot read the CSV header: {exc}") from None
        return schema
    lines = [line for line in _json_sample(handle, size).split(b"\n") if line.strip()]
    try:
        inferred = pajson.read_json(io.BytesIO(b"\n".join(lines))).schema if lines else \
            pa.schema([])
        # JSON holds a timestamp as ISO text (Arrow would infer it without its zone)
        return pa.schema([f.with_type(pa.string()) if pa.types.is_timestamp(f.type) else f
                          for f in inferred])
    except pa.ArrowInvalid:
        # types that differ between lines: the fields' names, of no type Arrow could give
        names: dict[str, None] = {}
        for line in lines:
            document = json.loads(line)
            names.update(dict.fromkeys(document if isinstance(document, dict) else []))
        return pa.schema([pa.field(name, pa.null()) for name in names])


def _json_sample(handle: IO[bytes], size: int) -> bytes:
    """Whole lines from the start of the file and, when it is larger, from its end."""
    head = handle.read(SAMPLE_BYTES)
    if size <= SAMPLE_BYTES:
        return head
    head = head[:head.rfind(b"\n") + 1]
    handle.seek(max(size - SAMPLE_BYTES, len(head)))
    tail = handle.read()
    return head + tail[tail.find(b"\n") + 1:]


def _counted_rows(handle: IO[bytes], fmt: FileFormat, schema: pa.Schema) -> int:
    if fmt.name == "json":
        return sum(1 for line in handle if line.strip())
    if not schema.names:
        return 0
    first = schema.names[0]  # one column parsed, as text: rows with newlines count once
    reader = pacsv.open_csv(handle, read_options=pacsv.ReadOptions(block_size=_BLOCK_BYTES),
                            parse_options=CSV_PARSE, convert_options=pacsv.ConvertOptions(
                                include_columns=[first], column_types={first: pa.string()}))
    return sum(batch.num_rows for batch in reader)


# -- a window's rows ----------------------------------------------------------------------


def count_window(target: FileTarget, fmt: FileFormat, mode: FileMode, cursor: str,
                 key: Sequence[str], window: Window, keys: pa.Table | None) -> WindowCount:
    """What the dataset holds of ``window`` (see ``WindowCount``): of ``keys``, how many
    distinct ones it holds with a cursor in the window and past ``hi``; without ``keys``, its
    rows with ``lo < cursor <= hi`` (distinct ``key`` values when ``key`` is given: shards
    may hold a key twice). Only the cursor and key columns are read, block
    by block, and matched in Arrow; memory holds the window's keys and ``keys``. The cursor
    is read as the window's bounds are (an aware timestamp in UTC, a naive one, an integer);
    the key as ``keys`` hold it, as the format writes it (JSON lines: as JSON values, e.g.
    decimals and timestamps as text)."""
    key = list(key)
    names = dataset_files(target, fmt, mode)
    if not names:
        return WindowCount(rows=0)
    given = _as_written(keys, key, fmt) if keys is not None and key else None
    types = _read_types(target, fmt, mode, cursor, key, window, given)
    lo, hi = pa.scalar(window.lo, types[cursor]), pa.scalar(window.hi, types[cursor])
    inside: list[pa.Table] = []
    later: list[pa.Table] = []
    rows = 0
    for name in names:
        try:
            for block in _columns(target, name, fmt, types):
                values = block.column(cursor)
                chosen = block.filter(pc.fill_null(
                    pc.and_kleene(pc.greater(values, lo), pc.less_equal(values, hi)), False))
                if key and given is not None:  # only the keys given (see WindowCount)
                    inside.append(chosen.select(key).join(given, keys=key,
                                                          join_type="left semi",
                                                          use_threads=False))
                elif key:
                    inside.append(_distinct(chosen, key))
                else:
                    rows += chosen.num_rows
                if given is not None and given.num_rows:
                    past = block.filter(pc.fill_null(pc.greater(values, hi), False))
                    later.append(past.select(key).join(given, keys=key, join_type="left semi",
                                                       use_threads=False))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise FileFormatError(f"{target.location(name)}: cannot read {cursor} or the key "
                                  f"({', '.join(key)}) to count a window: {exc}") from None
    held = _distinct(pa.concat_tables(inside), key) if key and inside else None
    if held is not None:
        rows = held.num_rows
    past = _distinct(pa.concat_tables(later), key) if later else None
    if past is not None and held is not None:  # a key with a row in the window is not newer
        past = past.join(held, keys=key, join_type="left anti", use_threads=False)
    return WindowCount(rows=rows, newer=past.num_rows if past is not None else 0)


def _as_written(keys: pa.Table, key: list[str], fmt: FileFormat) -> pa.Table:
    """``keys`` (distinct) as the format holds them: CSV's text for nested or binary ones,
    JSON's values (decimals and timestamps as text)."""
    keys = _distinct(keys, key)
    if fmt.name == "csv":
        return _typed(keys, csv_schema(keys.schema))
    if fmt.name == "json" and keys.num_rows:
        return pa.Table.from_pylist(documents(keys)).select(key)
    return keys


def _read_types(target: FileTarget, fmt: FileFormat, mode: FileMode, cursor: str,
                key: list[str], window: Window, given: pa.Table | None
                ) -> dict[str, pa.DataType]:
    """The types the cursor and key columns are read as."""
    bound = window.hi
    types = {cursor: pa.int64() if not isinstance(bound, datetime) else
             pa.timestamp("us", tz="UTC" if bound.tzinfo else None)}
    if given is not None and given.num_rows:
        types.update({k: given.schema.field(k).type for k in key})
    elif key:
        schema = dataset_schema(target, fmt, mode)
        types.update({k: schema.field(k).type if schema is not None and k in schema.names
                      and not pa.types.is_null(schema.field(k).type) else pa.string()
                      for k in key})
    return types


def _columns(target: FileTarget, name: str, fmt: FileFormat,
             types: dict[str, pa.DataType]) -> Iterator[pa.Table]:
    """Columns ``types`` of file ``name``, in blocks, as ``types``; a column the file lacks
    is null."""
    schema = pa.schema(list(types.items()))
    with target.open_read(name) as handle:
        if fmt.name == "parquet":
            footer = pq.ParquetFile(handle)
            present = [c for c in types if c in footer.schema_arrow.names]
            for batch in footer.iter_batches(batch_size=_BATCH_ROWS, columns=present):
                yield _typed(pa.Table.from_batches([batch]), schema)
        elif fmt.name == "csv":
            header = pacsv.open_csv(handle, read_options=pacsv.ReadOptions(block_size=1 << 16),
                                    parse_options=CSV_PARSE).schema.names
            handle.seek(0)
            present = [c for c in types if c in header]
            if not present:
                return
            for batch in pacsv.open_csv(
                    handle, read_options=pacsv.ReadOptions(block_size=_BLOCK_BYTES),
                    parse_options=CSV_PARSE, convert_options=pacsv.ConvertOptions(
                        include_columns=present, column_types={c: types[c] for c in present},
                        strings_can_be_null=True, quoted_strings_can_be_null=False)):
                yield _typed(pa.Table.from_batches([batch]), schema)
        else:
            options = pajson.ParseOptions(explicit_schema=schema,
                                          unexpected_field_behavior="ignore")
            for block in line_blocks(handle, _BLOCK_BYTES):
                yield _typed(pajson.read_json(io.BytesIO(block), parse_options=options), schema)


def _typed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names
               else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _distinct(table: pa.Table, columns: list[str]) -> pa.Table:
    return table.select(columns).group_by(columns, use_threads=False).aggregate([])
