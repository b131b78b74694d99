"""Records from code or an API, as the staged stream of one window: what the source kinds that
are not SQL tables (``python``, ``http``) share.

- ``columns:`` in a spec declares Arrow types by name (``int64``, ``string``, ``float64``,
  ``bool``, ``date32``, ``timestamp[us, tz=UTC]``, ``timestamp[us]``, ``decimal(12,2)``,
  ``binary``, ``json``: text holding JSON); undeclared columns take the first batch's types.
- Each batch (a RecordBatch, Table, DataFrame or list of dicts) is conformed to the window's
  schema: the declared or first batch's columns, in that order, missing ones null; a value
  that does not cast safely, or a column the schema lacks, fails naming the batch and field.
- Rows outside the window (lo < cursor <= hi) are dropped (an API's filters are often
  inclusive): a window holds exactly its rows, whatever the source gives.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.arrow_types import logical_field
from etl_assets.batches import RecordBatchStream, StreamNotes
from etl_assets.errors import DataError
from etl_assets.watermark import Window

Records = pa.RecordBatch | pa.Table | pd.DataFrame | list[dict[str, Any]]
"""What a source function may yield: Arrow, pandas, or rows as dicts."""

_TIMESTAMP = re.compile(r"timestamp\[(s|ms|us|ns)(?:,\s*tz=([^\]]+))?\]")
_DECIMAL = re.compile(r"decimal(?:128|256)?\((\d+),\s*(-?\d+)\)")


class RecordsError(DataError):
    """Records that do not fit the window's schema; the message names the batch and field."""


def column_field(name: str, type_name: str) -> pa.Field:
    """The Arrow field a ``columns:`` entry declares; ValueError naming an unknown type."""
    text = type_name.strip()
    if text == "json":
        return logical_field(name, "json")
    found = _TIMESTAMP.fullmatch(text)
    if found:
        return pa.field(name, pa.timestamp(found.group(1), tz=found.group(2)))
    found = _DECIMAL.fullmatch(text)
    if found:
        precision, scale = int(found.group(1)), int(found.group(2))
        kind = pa.decimal128 if precision <= 38 else pa.decimal256
        return pa.field(name, kind(precision, scale))
    try:
        return pa.field(name, pa.type_for_alias(text))
    except ValueError:
        raise ValueError(f"column {name}: unknown type {type_name!r} (int64, string, float64, "
                         f"bool, date32, timestamp[us, tz=UTC], decimal(12,2), binary, "
                         f"json...)") from None


def declared_schema(columns: dict[str, str] | None) -> pa.Schema | None:
    """The schema ``columns:`` declares (None: none declared)."""
    if not columns:
        return None
    return pa.schema([column_field(n, t) for n, t in columns.items()])


def check_columns(columns: dict[str, str] | None) -> dict[str, str] | None:
    """A spec validator: every declared type is known."""
    declared_schema(columns)
    return columns


def as_table(records: object, what: str) -> pa.Table:
    """``records`` (Arrow, pandas, or a list of dicts) as an Arrow table; nested dicts and
    lists in rows of dicts are kept as JSON text."""
    if isinstance(records, pa.RecordBatch):
        return pa.Table.from_batches([records])
    if isinstance(records, pa.Table):
        return records
    if isinstance(records, pd.DataFrame):
        return pa.Table.from_pandas(records, preserve_index=False)
    if isinstance(records, list):
        if not all(isinstance(r, dict) for r in records):
            raise RecordsError(f"{what}: a list of records must hold dicts (JSON objects)")
        return _table_of_dicts(records, what)
    raise RecordsError(f"{what}: got {type(records).__name__}; yield a pyarrow RecordBatch or "
                       f"Table, a pandas DataFrame or a list of dicts")


def _table_of_dicts(rows: list[dict[str, Any]], what: str) -> pa.Table:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        if any(isinstance(v, dict | list) for v in values):
            columns[name] = pa.array([None if v is None else json.dumps(v) for v in values],
                                     pa.string())
            continue
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise RecordsError(f"{what}: field {name!r}: values of mixed types "
                               f"({exc})") from None
    table = pa.table(columns) if columns else pa.table({})
    if not columns:
        return table
    json_fields = [i for i, name in enumerate(names)
                   if any(isinstance(row.get(name), dict | list) for row in rows)]
    schema = table.schema
    for i in json_fields:
        schema = schema.set(i, logical_field(schema.field(i).name, "json"))
    return table.cast(schema)


class Conformer:
    """Brings each batch of one window to one schema: ``declared`` columns first (their
    types), then those of the first batch; see the module's rules."""

    def __init__(self, what: str, declared: pa.Schema | None) -> None:
        self.what = what
        self.declared = declared
        self.schema: pa.Schema | None = None

    def conform(self, table: pa.Table, number: int) -> pa.Table:
        """``table`` (batch ``number``, from 1) in the window's schema."""
        where = f"{self.what}: batch {number}"
        if self.schema is None:
            self.schema = self._schema_of(table)
        extra = [n for n in table.column_names if n not in self.schema.names]
        if extra:
            raise RecordsError(f"{where}: field(s) {', '.join(extra)} not in the schema of the "
                               f"first batch or `columns:` ({', '.join(self.schema.names)})")
        arrays = []
        for field in self.schema:
            if field.name not in table.column_names:
                arrays.append(pa.nulls(table.num_rows, field.type))
                continue
            column = table.column(field.name)
            if column.type == field.type:
                arrays.append(column)
                continue
            try:
                arrays.append(column.cast(field.type, safe=True))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                hint = (" (null in every row of the first batch: declare its type in "
                        "`columns:`)" if pa.types.is_null(field.type) else "")
                raise RecordsError(f"{where}: field {field.name!r}: {column.type} does not cast "
                                   f"to {field.type}{hint}: {exc}") from None
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _schema_of(self, first: pa.Table) -> pa.Schema:
        fields = list(self.declared) if self.declared is not None else []
        declared = {f.name for f in fields}
        fields += [f for f in first.schema if f.name not in declared]
        return pa.schema(fields)


def in_window(table: pa.Table, cursor: str, window: Window, what: str) -> pa.Table:
    """The rows of ``table`` whose ``cursor`` is in ``window`` (a NULL cursor is in no
    window). A missing cursor column fails naming it."""
    if cursor not in table.column_names:
        raise RecordsError(f"{what}: no cursor field {cursor!r} in the records (fields: "
                           f"{', '.join(table.column_names)})")
    column = table.column(cursor)
    lo, hi = pa.scalar(window.lo), pa.scalar(window.hi)
    if pa.types.is_timestamp(column.type):
        lo, hi = lo.cast(column.type), hi.cast(column.type)
    try:
        keep = pc.and_(pc.greater(column, lo), pc.less_equal(column, hi))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise RecordsError(f"{what}: cursor field {cursor!r} ({column.type}) cannot be compared "
                           f"with the window's bounds; declare it in `columns:` ({exc})") from None
    return table.filter(pc.fill_null(keep, False))


def window_stream(what: str, pages: Iterable[object], declared: pa.Schema | None,
                  cursor: str, window: Window, notes: StreamNotes | None = None
                  ) -> RecordBatchStream:
    """One window's records as a stream: each page of ``pages`` made a table, conformed, kept
    to the window. The schema is known from ``declared`` or by reading the first page (an
    empty window without declared columns has an empty schema)."""
    conformer = Conformer(what, declared)
    numbered = ((number, as_table(page, f"{what}: batch {number}"))
                for number, page in enumerate(pages, start=1))

    def conformed() -> Iterator[pa.RecordBatch]:
        for number, table in numbered:
            if table.num_rows == 0 and conformer.schema is None and not table.column_names:
                continue
            kept = in_window(conformer.conform(table, number), cursor, window, what)
            yield from kept.combine_chunks().to_batches()

    batches = conformed()
    first = next(batches, None)
    schema = conformer.schema or declared or pa.schema([])

    def chained() -> Iterator[pa.RecordBatch]:
        if first is not None:
            yield first
        yield from batches

    return RecordBatchStream(schema, chained(), notes=notes or StreamNotes(what))
