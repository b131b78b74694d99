"""A record batch as the text MySQL reads: the body of a ``LOAD DATA`` file (tab-separated,
backslash-escaped, ``\\N`` for NULL, one line a row) or the tuples of a multi-row
``INSERT``. Built column by column with Arrow compute kernels, no per-row Python (but for
nested values, written as JSON).

Values keep their exact text: integers and decimals as digits (decimals in Arrow's notation,
which MySQL reads exactly), floats in their shortest round-trip form, timestamps as UTC wall
time with microseconds, durations as ``[-]HHHMMSS.ffffff`` (what TIME reads), booleans as
1/0, bytes as hex (unhexed by the statement).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.errors import DataError

_HEX = np.array([f"{i:02x}".encode() for i in range(256)]).view(np.uint16)
INSERT_BYTES = 4 * 1024 * 1024
"""Largest multi-row INSERT statement (bytes; a server takes 16-64 MB by default)."""


@dataclass(frozen=True)
class ColumnText:
    """One column as text; ``hexed``: bytes given as hex, ``escaped``: the text may hold
    characters LOAD DATA or a quoted literal must escape."""

    text: pa.Array
    hexed: bool = False
    escaped: bool = True


def column_text(column: pa.Array, field: pa.Field) -> ColumnText:
    """``column`` as large_string text MySQL reads back as the same value."""
    arrow = field.type
    if pa.types.is_dictionary(arrow):
        return column_text(column.cast(arrow.value_type), pa.field(field.name, arrow.value_type))
    if pa.types.is_null(arrow):
        return ColumnText(pa.nulls(len(column), pa.large_string()), escaped=False)
    if pa.types.is_boolean(arrow):
        return _plain(pc.cast(column, pa.int8()))
    if pa.types.is_float16(arrow):
        return _plain(pc.cast(column, pa.float32()))
    if pa.types.is_integer(arrow) or pa.types.is_floating(arrow) or pa.types.is_decimal(arrow) \
            or pa.types.is_date(arrow):
        return _plain(column)
    if pa.types.is_timestamp(arrow):
        wall = _micros(column, pa.timestamp("us"), field,
                       pa.timestamp(arrow.unit) if arrow.tz else None)
        return _plain(wall)
    if pa.types.is_time(arrow):
        return _plain(_micros(column, pa.time64("us"), field))
    if pa.types.is_duration(arrow):
        return ColumnText(_time_text(_micros(column, pa.duration("us"), field)), escaped=False)
    if pa.types.is_binary(arrow) or pa.types.is_large_binary(arrow) \
            or pa.types.is_fixed_size_binary(arrow):
        return ColumnText(_hex(column.cast(pa.large_binary())), hexed=True, escaped=False)
    if pa.types.is_list(arrow) or pa.types.is_large_list(arrow) or pa.types.is_struct(arrow) \
            or pa.types.is_map(arrow):
        return ColumnText(pa.array([None if v is None else json.dumps(v, default=str)
                                    for v in column.to_pylist()], pa.large_string()))
    return ColumnText(column.cast(pa.large_string()))


def _plain(column: pa.Array) -> ColumnText:
    return ColumnText(pc.cast(column, pa.large_string()), escaped=False)


def _micros(column: pa.Array, unit: pa.DataType, field: pa.Field,
            naive: pa.DataType | None = None) -> pa.Array:
    """``column`` in microseconds (an aware timestamp first made naive UTC); a finer value
    MySQL would round is refused, naming the column."""
    if naive is not None:
        column = column.cast(naive)
    try:
        return column.cast(unit)
    except pa.ArrowInvalid:
        raise DataError(f"column {field.name}: a value finer than a microsecond, which "
                        f"MySQL cannot hold (round it in the sink's transform)") from None


def _time_text(micros: pa.Array) -> pa.Array:
    """Durations as TIME's numeric text ``[-]HHHMMSS.ffffff`` (hours may pass 99)."""
    us = pc.cast(micros, pa.int64())
    size = pc.abs(us)
    seconds = pc.divide(size, 1_000_000)  # integer division
    fraction = pc.subtract(size, pc.multiply(seconds, 1_000_000))
    hours = pc.divide(seconds, 3600)
    minutes = pc.subtract(pc.divide(seconds, 60), pc.multiply(hours, 60))
    rest = pc.subtract(seconds, pc.multiply(pc.divide(seconds, 60), 60))
    hhmmss = pc.add(pc.add(pc.multiply(hours, 10_000), pc.multiply(minutes, 100)), rest)
    sign = pc.if_else(pc.less(us, 0), "-", "")
    digits = pc.utf8_lpad(pc.cast(fraction, pa.string()), width=6, padding="0")
    text = pc.binary_join_element_wise(sign, pc.cast(hhmmss, pa.string()), ".", digits, "")
    return pc.cast(text, pa.large_string())


def _hex(column: pa.Array) -> pa.Array:
    """Bytes as lower-case hex text (two characters a byte), nulls kept."""
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int64,
                            count=len(column) + 1, offset=column.offset * 8)
    data = column.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    hexed = _HEX[raw[offsets[0]:offsets[-1]]]
    return pa.LargeStringArray.from_buffers(
        len(column), pa.py_buffer((offsets - offsets[0]) * 2), pa.py_buffer(hexed.tobytes()),
        column.buffers()[0], column.null_count)


def _lit(text: str) -> pa.Scalar:
    return pa.scalar(text, pa.large_string())


def _body(lines: pa.Array) -> pa.Buffer:
    """The concatenated values of a large_string array without nulls (no copy)."""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64, count=len(lines) + 1,
                            offset=lines.offset * 8)
    data = lines.buffers()[2]
    if data is None:
        return pa.py_buffer(b"")
    return data.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def texts(batch: pa.RecordBatch) -> list[ColumnText]:
    """Every column of ``batch`` as text."""
    return [column_text(batch.column(i), batch.schema.field(i))
            for i in range(batch.num_columns)]


def load_file_body(columns: list[ColumnText]) -> pa.Buffer:
    """What ``LOAD DATA .. FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\'`` reads: tab-separated
    escaped values, ``\\N`` for NULL, a newline after each row."""
    fields = [pc.replace_substring_regex(c.text, r"([\\\t\n])", r"\\\1") if c.escaped
              else c.text for c in columns]
    lines = pc.binary_join_element_wise(*fields, _lit("\t"), null_handling="replace",
                                        null_replacement="\\N")
    return _body(pc.binary_join_element_wise(lines, _lit("\n"), _lit("")))


def insert_tuples(columns: list[ColumnText]) -> Iterator[tuple[int, bytes]]:
    """The ``(v1, v2, ..),(..)`` lists of multi-row INSERTs, each under ``INSERT_BYTES``,
    with how many rows each holds."""
    fields = []
    for c in columns:
        if c.hexed:
            fields.append(pc.binary_join_element_wise(_lit("X'"), c.text, _lit("'"), _lit("")))
        else:
            text = c.text
            if c.escaped:
                text = pc.replace_substring_regex(text, r"([\\'])", r"\\\1")
            fields.append(pc.binary_join_element_wise(_lit("'"), text, _lit("'"), _lit("")))
    rows = pc.binary_join_element_wise(*fields, _lit(","), null_handling="replace",
                                       null_replacement="NULL")
    rows = pc.binary_join_element_wise(_lit("("), rows, _lit("),"), _lit(""))
    sizes = np.diff(np.frombuffer(rows.buffers()[1], dtype=np.int64, count=len(rows) + 1,
                                  offset=rows.offset * 8))
    start = 0
    while start < len(rows):
        ends = np.cumsum(sizes[start:])
        stop = start + max(1, int(np.searchsorted(ends, INSERT_BYTES)))
        yield stop - start, _body(rows.slice(start, stop - start)).to_pybytes()[:-1]  # last ','
        start = stop


def load_data_statement(path: str, into: str, names: list[str],
                        columns: list[ColumnText]) -> str:
    """The ``LOAD DATA LOCAL INFILE`` of a file ``load_file_body`` wrote: ``names`` are the
    columns' quoted names; hex columns are unhexed into their column."""
    targets, sets = [], []
    for i, (name, column) in enumerate(zip(names, columns, strict=True)):
        if column.hexed:
            targets.append(f"@v{i}")
            sets.append(f"{name} = UNHEX(@v{i})")
        else:
            targets.append(name)
    path = path.replace("\\", "\\\\").replace("'", "\\'")
    return (f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {into} CHARACTER SET utf8mb4 "
            f"FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
            f"({', '.join(targets)})" + (f" SET {', '.join(sets)}" if sets else ""))


LOAD_FILE_PREFIX = "etl_assets_mysql_"


def new_load_file() -> str:
    """A new empty file for LOAD DATA text, named for this process; the files of processes
    that are gone (a killed run's) are removed first, so a crash leaves nothing behind for
    long. The caller removes its file when done."""
    folder = tempfile.gettempdir()
    for path in glob.glob(os.path.join(folder, f"{LOAD_FILE_PREFIX}*.tsv")):
        pid = os.path.basename(path)[len(LOAD_FILE_PREFIX):].split("_", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(path)
    handle, path = tempfile.mkstemp(prefix=f"{LOAD_FILE_PREFIX}{os.getpid()}_", suffix=".tsv")
    os.close(handle)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
