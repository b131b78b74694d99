"""Compose a file sink's shards into one file: ``etl-assets compose`` and :func:`compose`.

The shards (every ``*.<ext>`` file directly in the sink's folder except the dataset and
composed files) are read in partition order (oldest window first) and written to
one file, atomically, beside them. Parquet and CSV shards whose columns differ are aligned
(missing columns null); JSON lines are copied line for line. With ``key``, only the last row
per key is kept (later shards win). The shards stay unless ``remove_shards``.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from etl_assets.sinks.files.formats import (
    FileFormat,
    aligned,
    closed_at_end,
    csv_header,
    file_format,
    merged_schema,
    read_csv,
)
from etl_assets.sinks.files.spilled_rows import SpilledRows
from etl_assets.sinks.files.target import FileTarget
from etl_assets.sinks.files.writer import DATASET

COMPOSED = "composed"


@dataclass(frozen=True)
class Composed:
    """What :func:`compose` wrote: ``rows`` from ``shards`` files into ``location``."""

    location: str
    shards: list[str]
    rows: int
    bytes: int


def shard_names(target: FileTarget, fmt: FileFormat) -> list[str]:
    """The shard files of a sink folder, in partition order (numbers compared as numbers, so
    ``200..300`` comes before ``1000..2000``)."""
    skip = {DATASET + fmt.suffix, COMPOSED + fmt.suffix}
    return sorted((n for n in target.names(suffix=fmt.suffix) if n not in skip), key=_natural)


def _natural(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part)
            for part in re.split(r"(\d+)", name) if part]


def compose(path: str, format: str = "parquet", *, output: str | None = None,
            key: Sequence[str] = (), remove_shards: bool = False,
            storage_options: dict[str, Any] | None = None) -> Composed:
    """Merge the shards under ``path`` (local or fsspec URL) into ``output`` (default
    ``composed.<ext>``) beside them."""
    target = FileTarget(path, storage_options)
    fmt = file_format(format)
    name = output or COMPOSED + fmt.suffix
    shards = [s for s in shard_names(target, fmt) if s != name]
    if not shards:
        raise FileNotFoundError(f"no {fmt.suffix} shards under {target.display}")
    if fmt.name == "json":
        rows = _compose_json_lines(target, shards, name, list(key))
    else:
        rows = _compose_tables(target, fmt, shards, name, list(key))
    if remove_shards:
        for shard in shards:
            target.remove(shard)
    return Composed(target.location(name), shards, rows, target.size(name))


def _read_shard(target: FileTarget, fmt: FileFormat, name: str) -> Iterator[pa.RecordBatch]:
    """A shard's rows; CSV columns as text, so values are copied as they were written."""
    with target.open_read(name) as source:
        if fmt.name == "parquet":
            yield from pq.ParquetFile(source).iter_batches(batch_size=65_536)
            return
        yield from read_csv(source, dict.fromkeys(csv_header(source), pa.string()))


def _shard_schema(target: FileTarget, fmt: FileFormat, name: str) -> pa.Schema:
    with target.open_read(name) as source:
        if fmt.name == "parquet":
            return pq.read_schema(source)
        return pa.schema([pa.field(column, pa.string()) for column in csv_header(source)])


def _compose_tables(target: FileTarget, fmt: FileFormat, shards: list[str], name: str,
                    key: list[str]) -> int:
    schema = _shard_schema(target, fmt, shards[0])
    for shard in shards[1:]:
        schema = merged_schema(schema, _shard_schema(target, fmt, shard))

    def all_rows() -> Iterator[pa.RecordBatch]:
        for shard in shards:
            yield from _read_shard(target, fmt, shard)

    rows = 0
    with target.writing(name) as out, closed_at_end(fmt.writer(out, schema)) as writer:
        if not key:
            for batch in all_rows():
                writer.write(batch)
                rows += batch.num_rows
            return rows
        with SpilledRows(schema, key, f"compose {target.display}") as spill:
            for batch in all_rows():
                spill.add(aligned(batch, schema))
            for batch in spill.batches(last_per_key=True):
                writer.write(batch)
                rows += batch.num_rows
    return rows


def _compose_json_lines(target: FileTarget, shards: list[str], name: str,
                        key: list[str]) -> int:
    last: dict[tuple[Any, ...], tuple[int, int]] = {}
    if key:  # first pass: where each key's last line is
        for s, shard in enumerate(shards):
            with target.open_read(shard) as source:
                for n, line in enumerate(source):
                    if line.strip():
                        doc = json.loads(line)
                        last[tuple(json.dumps(doc.get(k)) for k in key)] = (s, n)
    rows = 0
    with target.writing(name) as out:
        for s, shard in enumerate(shards):
            with target.open_read(shard) as source:
                if not key:
                    shutil.copyfileobj(source, out, 8 << 20)
                    continue
                for n, line in enumerate(source):
                    if line.strip() and last.get(tuple(
                            json.dumps(json.loads(line).get(k)) for k in key)) == (s, n):
                        out.write(line if line.endswith(b"\n") else line + b"\n")
                        rows += 1
    if not key:
        with target.open_read(name) as source:
            rows = sum(1 for line in source if line.strip())
    return rows
