"""Chunked extraction of one window from any SQLAlchemy database, as Arrow record batches:
through the database's fast reader where it has one that carries every column exactly
(:mod:`etl_assets.sources.sql.fast_reader`), else through SQLAlchemy and the driver's rows."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import closing
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

import psycopg
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from etl_assets.arrow_types import arrow_field, fallback_converter, infer_field, value_converter
from etl_assets.batches import RecordBatchStream, StreamNotes, rebatched
from etl_assets.connections import resolve_url, sqlalchemy_url
from etl_assets.errors import EtlAssetsError
from etl_assets.secrets import mask_url
from etl_assets.sources.base import CursorType
from etl_assets.sources.sql.fast_reader import GENERIC_READER, FastReader, plan_reader
from etl_assets.sources.sql.mysql_dates import UTC_SESSION, dates_array, holds_dates, is_zero_date
from etl_assets.sources.sql.parallel_reads import QUEUED_BATCHES, read_in_parallel, slices
from etl_assets.sources.sql.spec import SqlSourceSpec
from etl_assets.watermark import Bound, Window

_INT_RANGE = (-(2**63) + 1, 2**63 - 1)
_TS_RANGE = (datetime(1, 1, 2), datetime(9999, 12, 30))


class SourceError(EtlAssetsError):
    """A source that cannot be read as declared; the message names the source."""


def open_sql_source(name: str, spec: SqlSourceSpec) -> SqlSource:
    """Source ``name`` of ``spec``, its connection resolved now."""
    return SqlSource(name, spec, resolve_url(spec.connection, f"source {name!r}"))


class SqlSource:
    """A table, or a query with ``:lo``/``:hi`` parameters, read one window at a time.

    A table whose database has a fast reader that carries all its columns exactly is read by
    it (``reader()`` says which reader runs, and why the generic one when it does). Otherwise
    rows stream through a server-side cursor (``stream_results``). Either way the window comes
    in batches of ``chunk_rows`` rows ordered by the cursor, and memory use does not grow with
    the window's row count.
    """

    def __init__(self, name: str, spec: SqlSourceSpec, url: str) -> None:
        self.name = name
        self.spec = spec
        self.url = url

    def __repr__(self) -> str:
        return f"SqlSource({self.name!r}, {mask_url(self.url)})"

    @cached_property
    def engine(self) -> sa.Engine:
        engine = sa.create_engine(sqlalchemy_url(self.url, f"source {self.name!r}"),
                                  pool_pre_ping=True)
        if engine.dialect.driver == "psycopg":
            sa.event.listen(engine, "connect", _json_as_text)
        if engine.dialect.name in ("mysql", "mariadb"):
            sa.event.listen(engine, "connect", _utc_session)
        return engine

    def location(self) -> str:
        return mask_url(self.url)

    def dispose(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()

    @cached_property
    def table(self) -> sa.Table | None:
        """The reflected source table (None for a query source)."""
        if not self.spec.table:
            return None
        name = self.spec.table_name
        try:
            table = sa.Table(name.name, sa.MetaData(), schema=name.schema,
                             autoload_with=self.engine)
        except sa.exc.NoSuchTableError:
            raise SourceError(f"source {self.name!r}: table {name.display} does not exist "
                              f"in {mask_url(self.url)}") from None
        if self.engine.dialect.name in ("mysql", "mariadb"):
            table = _mysql_table_as_declared(table, self.engine)
        missing = [c for c in [self.spec.cursor, *self.spec.primary_key] if c not in table.c]
        if missing:
            raise SourceError(f"source {self.name!r}: table {name.display} has no column "
                              f"{', '.join(missing)} (columns: {', '.join(table.c.keys())})")
        return table

    @cached_property
    def cursor_type(self) -> CursorType:
        """``timestamp`` or ``integer``."""
        if self.spec.cursor_type:
            return self.spec.cursor_type
        assert self.table is not None
        sql_type = self.table.c[self.spec.cursor].type
        if isinstance(sql_type, sa.DateTime):
            return "timestamp"
        if isinstance(sql_type, sa.Integer):
            return "integer"
        raise SourceError(f"source {self.name!r}: cursor column {self.spec.cursor} is "
                          f"{sql_type}; it must be a timestamp or an integer")

    @cached_property
    def _cursor_is_aware(self) -> bool | None:
        if self.table is None or self.cursor_type != "timestamp":
            return None
        sql_type = self.table.c[self.spec.cursor].type
        return isinstance(sql_type, sa.DateTime) and bool(sql_type.timezone)

    def _bound(self, value: Bound) -> Bound:
        """``value`` with the cursor column's time zone awareness (aware: in UTC; a naive
        value of an aware column is UTC, as the session of a MySQL TIMESTAMP is)."""
        if isinstance(value, datetime) and self._cursor_is_aware is not None:
            if self._cursor_is_aware:
                return (value.replace(tzinfo=timezone.utc) if value.tzinfo is None
                        else value.astimezone(timezone.utc))
            if value.tzinfo is not None:
                return value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    @cached_property
    def schema(self) -> pa.Schema | None:
        """Arrow schema of a table source (a query's is known after its first batch)."""
        if self.table is None:
            return None
        dialect = self.engine.dialect.name
        booleans = self.spec.tinyint1 == "boolean"
        return pa.schema([arrow_field(column, dialect, booleans) for column in self.table.columns])

    @cached_property
    def _fast_reader(self) -> FastReader | str:
        """The table's fast reader, or why the generic path reads it."""
        if self.table is None:
            return "a query"
        if self.spec.reader == "generic":
            return "reader: generic"
        assert self.schema is not None
        return plan_reader(self.url, self.table, self.schema, self.spec.cursor)

    def reader(self) -> str:
        """Which reader extracts the windows (and why the generic one, when it does)."""
        fast = self._fast_reader
        if isinstance(fast, FastReader):
            parallel = self.spec.parallel_reads
            return fast.name + (f" ({parallel} connections per window)" if parallel > 1 else "")
        return f"{GENERIC_READER} ({fast})"

    def _window_select(self, lo: Bound, hi: Bound, order: bool = True) -> sa.Executable:
        if self.table is not None:
            cursor = self.table.c[self.spec.cursor]
            columns = [_as_fetched(c) for c in self.table.columns]
            stmt = sa.select(*columns).where(cursor > self._bound(lo), cursor <= self._bound(hi))
            return stmt.order_by(cursor) if order else stmt
        assert self.spec.query is not None
        return sa.text(self.spec.query).bindparams(lo=lo, hi=hi)

    def cursor_range(self) -> tuple[Bound | None, Bound | None]:
        """The oldest and newest cursor values in the source (None, None when it is empty)."""
        stmt: sa.Executable
        if self.table is not None:
            cursor = self.table.c[self.spec.cursor]
            stmt = sa.select(sa.func.min(cursor), sa.func.max(cursor))
        else:
            assert self.spec.query is not None
            low, high = _INT_RANGE if self.cursor_type == "integer" else _TS_RANGE
            column = self.engine.dialect.identifier_preparer.quote(self.spec.cursor)
            stmt = sa.text(
                f"SELECT min(q.{column}), max(q.{column}) FROM ({self.spec.query}) AS q"
            ).bindparams(lo=low, hi=high)
        with self.engine.connect() as conn:
            oldest, newest = conn.execute(stmt).one()
        return self._checked(oldest), self._checked(newest)

    def _checked(self, value: object) -> Bound | None:
        """A cursor value of the source, with the cursor column's awareness."""
        if value is None:
            return None
        if is_zero_date(value):
            raise SourceError(f"source {self.name!r}: cursor column {self.spec.cursor} holds a "
                              f"zero date ({value!r}), which no window holds: make it NULL or "
                              f"a date")
        if isinstance(value, bool) or not isinstance(value, int | datetime):
            raise SourceError(f"source {self.name!r}: cursor column {self.spec.cursor} gave "
                              f"{value!r} ({type(value).__name__}); declare a timestamp or "
                              f"integer column")
        if self.cursor_type == "integer" and isinstance(value, datetime):
            raise SourceError(f"source {self.name!r}: cursor {self.spec.cursor} is a timestamp, "
                              f"but cursor_type says integer")
        return self._bound(value)

    def extract(self, window: Window) -> RecordBatchStream:
        """The rows of ``window`` ordered by the cursor, in batches of ``chunk_rows``; the
        stream's notes count what the read met (MySQL's zero dates read as null), complete
        once it is read to its end."""
        notes = StreamNotes(f"source {self.name!r} window {window}")
        schema = self.schema
        if schema is None:  # a query: read the first batch to learn its columns
            batches = self._batches(window, None, notes)
            first = next(batches, None)
            if first is None:
                return RecordBatchStream(pa.schema([]), iter(()), notes=notes)
            return RecordBatchStream(first.schema, _chain(first, batches), notes=notes)
        fast = self._fast_reader
        if isinstance(fast, FastReader):
            return RecordBatchStream(schema, rebatched(self._fast_batches(fast, window, notes),
                                                       schema, self.spec.chunk_rows),
                                     notes=notes)
        return RecordBatchStream(schema, self._batches(window, schema, notes), notes=notes)

    def _fast_batches(self, reader: FastReader, window: Window,
                      notes: StreamNotes) -> Iterator[pa.RecordBatch]:
        lo, hi = self._bound(window.lo), self._bound(window.hi)
        what = notes.what
        connections = self.spec.parallel_reads
        if connections == 1:
            return reader.batches(lo, hi, what, notes)
        # slices of about QUEUED_BATCHES batches, so a slice read ahead fits its queue
        rows_per_slice = QUEUED_BATCHES * self.spec.chunk_rows
        parts = slices(lo, hi, max(connections,
                                   math.ceil(reader.count(lo, hi, what) / rows_per_slice)))
        return read_in_parallel(lambda a, b: reader.batches(a, b, what, notes), parts,
                                connections)

    def _batches(self, window: Window, schema: pa.Schema | None,
                 notes: StreamNotes) -> Iterator[pa.RecordBatch]:
        chunk = self.spec.chunk_rows
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=chunk).execute(
                self._window_select(window.lo, window.hi)
            )
            names = list(result.keys())
            for rows in result.partitions(chunk):
                if schema is None:
                    columns = list(zip(*rows, strict=True))
                    schema = pa.schema([infer_field(n, list(c)) for n, c in zip(names, columns,
                                                                                   strict=True)])
                yield self._to_batch(rows, schema, notes)

    @cached_property
    def _dated(self) -> frozenset[str]:
        """The MySQL/MariaDB table's DATE, DATETIME and TIMESTAMP columns, whose values the
        generic path reads through :func:`~etl_assets.sources.sql.mysql_dates.dates_array`."""
        if self.table is None or self.engine.dialect.name not in ("mysql", "mariadb"):
            return frozenset()
        return frozenset(c.name for c in self.table.columns if holds_dates(c))

    def _to_batch(self, rows: Sequence[Sequence[Any]], schema: pa.Schema,
                  notes: StreamNotes) -> pa.RecordBatch:
        columns = list(zip(*rows, strict=True))
        arrays = []
        for field, values in zip(schema, columns, strict=True):
            if field.name in self._dated:
                arrays.append(self._dates(field, values, rows, schema, notes))
                continue
            convert = value_converter(field)
            data = [convert(v) for v in values] if convert else values
            try:
                arrays.append(pa.array(data, type=field.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError) as first_error:
                fallback = fallback_converter(field)
                try:
                    arrays.append(pa.array([fallback(v) for v in data], type=field.type))
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    bad = _first_bad_value(data, field.type)
                    raise SourceError(
                        f"source {self.name!r}: column {field.name} ({field.type}) cannot hold "
                        f"{bad!r}: {first_error}"
                    ) from first_error
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def _dates(self, field: pa.Field, values: Sequence[object], rows: Sequence[Sequence[Any]],
               schema: pa.Schema, notes: StreamNotes) -> pa.Array:
        """A MySQL date column's values: zero dates null, counted into ``notes``."""
        try:
            array, zero = dates_array(values, field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            row = next((i for i, value in enumerate(values)
                        if not _holds(value, field.type)), None)
            value = values[row] if row is not None else "a value"
            at = rows[row][schema.get_field_index(self.spec.cursor)] if row is not None else "?"
            raise SourceError(f"{notes.what}: column {field.name} ({field.type}) cannot hold "
                              f"{value!r} of the row with {self.spec.cursor} = {at}: "
                              f"{error}") from error
        notes.count_zero_dates(field.name, zero)
        return array


def _holds(value: object, arrow_type: pa.DataType) -> bool:
    """Whether :func:`dates_array` makes ``value`` (of a MySQL date column) ``arrow_type``."""
    try:
        dates_array([value], arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True


def _mysql_table_as_declared(table: sa.Table, engine: sa.Engine) -> sa.Table:
    """``table`` as the MySQL/MariaDB server declares it, where SQLAlchemy's reflection does
    not: a backtick in a column name is not left doubled (`a``b` is column a`b), a MariaDB
    JSON column (LONGTEXT with a ``json_valid`` check) is JSON, and a TIMESTAMP is an instant
    (``timezone=True``: read in the UTC session, :mod:`~etl_assets.sources.sql.mysql_dates`)."""
    json_columns: set[str] = set()
    if getattr(engine.dialect, "is_mariadb", False):
        with engine.connect() as conn:
            clauses = conn.execute(sa.text(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                "WHERE CONSTRAINT_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :t"
            ), {"schema": table.schema, "t": table.name}).scalars().all()
        for clause in clauses:
            found = re.fullmatch(r"json_valid\(`((?:[^`]|``)+)`\)", clause.strip())
            if found:
                json_columns.add(found.group(1).replace("``", "`"))
    names = {c.name: c.name.replace("``", "`") for c in table.columns}
    instants = {c.name for c in table.columns if isinstance(c.type, mysql.TIMESTAMP)}
    if not json_columns and not instants and all(old == new for old, new in names.items()):
        return table

    def declared(column: sa.Column[Any]) -> sa.types.TypeEngine[Any]:
        if names[column.name] in json_columns:
            return sa.JSON()
        if column.name in instants:
            return mysql.TIMESTAMP(timezone=True, fsp=getattr(column.type, "fsp", None))
        return column.type

    columns = [sa.Column(names[c.name], declared(c), primary_key=c.primary_key,
                         nullable=c.nullable) for c in table.columns]
    return sa.Table(table.name, sa.MetaData(), *columns, schema=table.schema)


def _as_fetched(column: sa.Column[Any]) -> sa.ColumnElement[Any]:
    """``column`` as the generic path selects it: JSON as its text (no parse in the driver
    and dump again here), a MySQL SET as its text (not a Python set), a MySQL TIME as the
    driver's timedelta (SQLAlchemy would make -838:59:59 a time of day); a float the dialect
    would turn into a decimal (MySQL's DOUBLE, rounded to 10 places) as the driver's
    float."""
    if isinstance(column.type, sa.JSON | mysql.SET):
        return sa.type_coerce(column, sa.Text).label(column.name)
    if isinstance(column.type, mysql.TIME):  # the driver's timedelta, not a time of day
        return sa.type_coerce(column, sa.types.NullType()).label(column.name)
    if isinstance(column.type, sa.Float) and column.type.asdecimal:
        return sa.type_coerce(column, sa.Float(asdecimal=False)).label(column.name)
    return column


def _utc_session(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    """Run a MySQL/MariaDB connection's session in UTC, so that TIMESTAMP values and window
    bounds are UTC whatever the server's time zone (a ``connect`` listener)."""
    with closing(dbapi_connection.cursor()) as cursor:
        cursor.execute(UTC_SESSION)


def _json_as_text(dbapi_connection: psycopg.Connection[Any],
                  _record: ConnectionPoolEntry) -> None:
    """Make psycopg return json/jsonb as the server's text instead of parsed objects (a
    ``connect`` listener of engines with the psycopg driver)."""
    from psycopg.types.string import TextLoader

    for name in ("json", "jsonb"):
        dbapi_connection.adapters.register_loader(name, TextLoader)


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def _first_bad_value(values: Sequence[object], arrow_type: pa.DataType) -> object:
    for value in values:
        try:
            pa.array([value], type=arrow_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return value
    return None
