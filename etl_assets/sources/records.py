"""Records from code or an API, as the staged stream of one window: what the source kinds that
are not SQL tables (``python``, ``http``) share.

- ``columns:`` in a spec declares Arrow types by name (``int64``, ``string``, ``float64``,
  ``bool``, ``date32``, ``timestamp[us, tz=UTC]``, ``timestamp[us]``, ``decimal(12,2)``,
  ``binary``, ``json``: text holding JSON); undeclared columns take the first batch's types.
- Each batch (a RecordBatch, Table, DataFrame or list of dicts) is conformed to the window's
  schema: the declared or first batch's columns, in that order, missing ones null; a value
  that a cast would change (``safe_cast``), or a column the schema lacks, fails naming the
  batch and field.
- A batch without rows does not set the schema while no batch with rows has (its pandas
  ``object`` columns would be typed null); a window without rows takes the declared columns
  and those of its last empty batch.
- A field that holds only nulls in the first batch is typed null; a later batch with values
  in it fails, naming the field and asking for its type in ``columns:`` (the schema is fixed
  by the first batch: batches stream on, none is held back).
- Rows outside the window (lo < cursor <= hi) are dropped (an API's filters are often
  inclusive): a window holds exactly its rows, whatever the source gives. A timestamp cursor
  is compared at the finer of its unit and microseconds; a naive one, and naive bounds, are
  UTC.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from collections.abc import Collection, Iterable, Iterator
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.arrow_types import logical_field, logical_type_of
from etl_assets.batches import RecordBatchStream, StreamNotes
from etl_assets.errors import DataError
from etl_assets.json_documents import dumps, plain
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
        zone = found.group(2) and found.group(2).strip()
        if zone and not _known_zone(zone):
            raise ValueError(f"column {name}: unknown time zone {zone!r} in {type_name!r} "
                             f"(UTC, an IANA name like Europe/Paris, or an offset like +02:00)")
        return pa.field(name, pa.timestamp(found.group(1), tz=zone or None))
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


def _known_zone(zone: str) -> bool:
    """Whether Arrow can use ``zone``: an offset (``+02:00``) or a name the tz database has."""
    if re.fullmatch(r"[+-]\d\d:\d\d", zone):
        return True
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def declared_schema(columns: dict[str, str] | None) -> pa.Schema | None:
    """The schema ``columns:`` declares (None: none declared)."""
    if not columns:
        return None
    return pa.schema([column_field(n, t) for n, t in columns.items()])


def check_columns(columns: dict[str, str] | None) -> dict[str, str] | None:
    """A spec validator: every declared type is known."""
    declared_schema(columns)
    return columns


def as_table(records: object, what: str, json_fields: Collection[str] = ()) -> pa.Table:
    """``records`` (Arrow, pandas, or a list of dicts) as an Arrow table. In rows of dicts,
    the values of ``json_fields`` (columns declared ``json``) and of any field holding a dict
    or a list are kept as JSON text. A DataFrame's named index levels are columns (an
    unnamed index, such as the row numbers a filter leaves, is not)."""
    if isinstance(records, pa.RecordBatch):
        return pa.Table.from_batches([records])
    if isinstance(records, pa.Table):
        return records
    if isinstance(records, pd.DataFrame):
        if any(name is not None for name in records.index.names):
            records = records.reset_index(
                level=[n for n in records.index.names if n is not None])
        try:
            return pa.Table.from_pandas(records, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise RecordsError(f"{what}: the DataFrame cannot be made Arrow: {exc}") from None
    if isinstance(records, list):
        if not all(isinstance(r, dict) for r in records):
            raise RecordsError(f"{what}: a list of records must hold dicts (JSON objects)")
        return _table_of_dicts(records, what, json_fields)
    raise RecordsError(f"{what}: got {type(records).__name__}; yield a pyarrow RecordBatch or "
                       f"Table, a pandas DataFrame or a list of dicts")


def _is_json_text(value: object) -> bool:
    """Whether ``value`` is a string holding JSON: in a field declared ``json`` it is taken
    as that JSON (APIs that send JSON inside a string, as datasette does); another string
    is a JSON string."""
    if not isinstance(value, str):
        return False
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def _table_of_dicts(rows: list[dict[str, Any]], what: str,
                    json_fields: Collection[str]) -> pa.Table:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    fields, arrays = [], []
    for name in names:
        values = [row.get(name) for row in rows]
        if name in json_fields or any(isinstance(v, dict | list) for v in values):
            try:
                raw = name in json_fields
                texts = [None if v is None else v if raw and _is_json_text(v)
                         else dumps(plain(v)).decode() for v in values]
            except (TypeError, ValueError) as exc:
                raise RecordsError(f"{what}: field {name!r}: a value cannot be written as "
                                   f"JSON: {exc}") from None
            fields.append(logical_field(str(name), "json"))
            arrays.append(pa.array(texts, pa.string()))
            continue
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise RecordsError(f"{what}: field {name!r}: its values cannot make one Arrow "
                               f"column (mixed types, or an integer beyond 64 bits): "
                               f"{exc}") from None
        fields.append(pa.field(str(name), array.type))
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


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
            if pa.types.is_null(field.type):
                raise RecordsError(f"{where}: field {field.name!r} holds {column.type} values, "
                                   f"but it held only nulls in the first batch (so its type is "
                                   f"null): declare its type in `columns:`")
            try:
                arrays.append(safe_cast(column, field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise RecordsError(f"{where}: field {field.name!r}: {column.type} does not cast "
                                   f"to {field.type}: {exc}") from None
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _schema_of(self, first: pa.Table) -> pa.Schema:
        fields = list(self.declared) if self.declared is not None else []
        declared = {f.name for f in fields}
        fields += [f for f in first.schema if f.name not in declared]
        return pa.schema(fields)


def safe_cast(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """``column`` as ``target`` by Arrow's safe cast, where it keeps every value; ArrowInvalid
    where a value would change. Beyond Arrow's own checks: an integer becomes a decimal of any
    precision that holds it (Arrow asks for room for every int64), and a float becomes a
    decimal only when the decimal reads back as the same float (Arrow rounds 0.125 to 0.12
    in a decimal of scale 2)."""
    source = column.type
    if pa.types.is_decimal(target) and pa.types.is_integer(source):
        wide = (pa.decimal128(38, target.scale) if target.scale <= 18
                else pa.decimal256(76, target.scale))
        return column.cast(wide, safe=True).cast(target, safe=True)
    cast = column.cast(target, safe=True)
    if pa.types.is_decimal(target) and pa.types.is_floating(source):
        same = pc.equal(cast.cast(pa.float64()), column.cast(pa.float64()))
        if not pc.all(same).as_py():  # nulls skipped
            first = pc.index(same, False).as_py()
            raise pa.ArrowInvalid(f"{column[first].as_py()!r} is not exactly {target}")
    return cast


def in_window(table: pa.Table, cursor: str, window: Window, what: str) -> pa.Table:
    """The rows of ``table`` whose ``cursor`` is in ``window`` (a NULL cursor is in no
    window). A missing cursor column fails naming it."""
    if cursor not in table.column_names:
        raise RecordsError(f"{what}: no cursor field {cursor!r} in the records (fields: "
                           f"{', '.join(table.column_names)})")
    column = table.column(cursor)
    try:
        lo, hi = pa.scalar(window.lo), pa.scalar(window.hi)
        if pa.types.is_timestamp(column.type):
            # at the finer unit: a bound cast to seconds could lose its fraction (and fail)
            unit = "ns" if column.type.unit == "ns" else "us"
            compared = pa.timestamp(unit, tz=column.type.tz)
            column = column.cast(compared)
            lo, hi = lo.cast(compared), hi.cast(compared)
        keep = pc.and_(pc.greater(column, lo), pc.less_equal(column, hi))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise RecordsError(f"{what}: cursor field {cursor!r} ({column.type}) cannot be compared "
                           f"with the window's bounds; declare it in `columns:` ({exc})") from None
    return table.filter(pc.fill_null(keep, False))


def window_stream(what: str, pages: Iterable[object], declared: pa.Schema | None,
                  cursor: str, window: Window, notes: StreamNotes | None = None
                  ) -> RecordBatchStream:
    """One window's records as a stream: each page of ``pages`` made a table, conformed, kept
    to the window. The pages are read here up to the first row kept in the window (an
    error there is raised here), the rest as the stream is read. The schema: the declared
    columns, then those of the first page with rows; in a window without rows, the declared
    columns, then those of its last page with columns (none: an empty schema)."""
    conformer = Conformer(what, declared)
    json_fields = {f.name for f in declared or [] if logical_type_of(f) == "json"}
    empty: list[tuple[pa.Table, int]] = []  # the last page without rows, before any with

    def conformed() -> Iterator[pa.RecordBatch]:
        for number, page in enumerate(pages, start=1):
            table = as_table(page, f"{what}: batch {number}", json_fields)
            if table.num_rows == 0 and conformer.schema is None:
                if table.column_names:
                    empty[:] = [(table, number)]
                continue
            kept = in_window(conformer.conform(table, number), cursor, window, what)
            yield from kept.combine_chunks().to_batches()
        if conformer.schema is None and empty:  # no rows: the empty page's columns
            in_window(conformer.conform(*empty[0]), cursor, window, what)

    batches = conformed()
    first = next(batches, None)
    schema = conformer.schema or declared or pa.schema([])

    def chained() -> Iterator[pa.RecordBatch]:
        if first is not None:
            yield first
        yield from batches

    return RecordBatchStream(schema, chained(), notes=notes or StreamNotes(what))
