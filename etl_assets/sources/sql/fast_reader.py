"""The fast readers of SQL tables: a native Arrow reader per database, chosen from the URL.

A fast reader runs ``SELECT <columns> FROM <table> WHERE lo < cursor <= hi ORDER BY cursor``
through a driver that decodes the wire format straight into Arrow (ADBC for PostgreSQL,
connectorx for MySQL/MariaDB and SQLite; docs/extraction.md has the measurements behind the
choice), so no Python object is made per value. Each column is selected by an expression
the reader knows to carry exactly (a ``numeric`` as its text, say) and every batch is cast to
the source's Arrow schema with Arrow's safe casts, which refuse to change a value. A column the
reader has no exact expression for sends the whole table to the generic SQLAlchemy path
(:class:`~etl_assets.sources.sql.source.SqlSource` says which reader runs and why).

A database's reader is a subclass of :class:`FastReader` in its own module, plus one line in
:data:`READERS`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from etl_assets.batches import StreamNotes
from etl_assets.connections import sqlalchemy_url
from etl_assets.errors import EtlAssetsError
from etl_assets.retries import describe, is_transient, lost_connection
from etl_assets.watermark import Bound

READERS: dict[str, str] = {
    "postgresql": "etl_assets.sources.sql.postgres_reader:PostgresReader",
    "mysql": "etl_assets.sources.sql.mysql_reader:MySqlReader",
    "mariadb": "etl_assets.sources.sql.mysql_reader:MySqlReader",
    "sqlite": "etl_assets.sources.sql.sqlite_reader:SqliteReader",
}
"""SQLAlchemy dialect name -> ``module:class`` of its fast reader (imported when chosen)."""

GENERIC_READER = "sqlalchemy"
"""The name of the generic path in logs and errors."""


class ReaderError(EtlAssetsError):
    """A fast reader that failed terminally; the message names the source, the window and the
    reader."""


class ReaderConnectionError(ConnectionError):
    """A fast reader that lost or could not reach its database: transient, so the extraction
    starts the window again (:class:`~etl_assets.sources.extraction.Extraction`)."""


class FastReader(ABC):
    """Reads windows of one table as batches of its Arrow ``schema``, ordered by ``cursor``.

    ``url``: the driver's connection URL (holds the password: never shown). ``select``: what
    to select for each column of ``schema``; ``converters``: the columns a cast cannot make
    (see :meth:`value_converter`). Made by :meth:`plan`.
    """

    name: str = ""
    """How logs and errors name the reader (``adbc-postgresql``)."""

    def __init__(self, url: str, dialect: sa.Dialect, table: sa.Table, schema: pa.Schema,
                 cursor: str, select: list[str],
                 converters: dict[str, Callable[[pa.Array], pa.Array]]) -> None:
        self.url = url
        self.dialect = dialect
        self.table = table
        self.schema = schema
        self.cursor = cursor
        self._select = select
        self._converters = converters

    @classmethod
    def plan(cls, url: str, table: sa.Table, schema: pa.Schema,
             cursor: str) -> FastReader | str:
        """The reader for ``table`` at ``url`` (the source's, resolved), or why it cannot read
        it exactly (one phrase)."""
        driver_url = cls.driver_url(url)
        if driver_url is None:
            return f"{cls.name} cannot take this connection's options"
        dialect = sa.make_url(sqlalchemy_url(url)).get_dialect()()
        quote = dialect.identifier_preparer.quote
        select = []
        converters = {}
        for column, field in zip(table.columns, schema, strict=True):
            expression = cls.select_expression(column, field, quote(column.name))
            if expression is None:
                return (f"{cls.name} cannot carry column {column.name} "
                        f"({_type_name(column, dialect)}) exactly")
            select.append(expression)
            converter = cls.value_converter(field)
            if converter is not None:
                converters[field.name] = converter
        return cls(driver_url, dialect, table, schema, cursor, select, converters)

    @classmethod
    @abstractmethod
    def driver_url(cls, source_url: str) -> str | None:
        """The driver's URL for the source's URL; None when it cannot take its options."""

    @classmethod
    @abstractmethod
    def select_expression(cls, column: sa.Column[Any], field: pa.Field,
                          quoted: str) -> str | None:
        """What to select for ``column`` (``quoted``) so that the driver's value casts to
        ``field`` exactly; None when no expression does."""

    @classmethod
    def value_converter(cls, field: pa.Field) -> Callable[[pa.Array], pa.Array] | None:
        """What turns the driver's array into ``field``'s values where a cast would not (the
        default: nothing, the cast does)."""
        return None

    def literal(self, value: Bound) -> str:
        """``value`` as a SQL literal comparable with the cursor column: a number, or a
        timestamp's text (:func:`timestamp_text`)."""
        if isinstance(value, datetime):
            return f"'{timestamp_text(value)}'"
        return str(int(value))

    @abstractmethod
    def driver_batches(self, query: str) -> Iterator[pa.RecordBatch]:
        """The driver's batches of ``query``, as they come (any size, the driver's types)."""

    def is_transient(self, error: BaseException) -> bool:
        """Whether the driver's ``error`` is a lost or unreachable connection (some drivers
        say so only in the text of an ``OSError`` or a ``RuntimeError``)."""
        return is_transient(error) or lost_connection(str(error))

    def query(self, lo: Bound, hi: Bound) -> str:
        """The SELECT of the rows with ``lo < cursor <= hi``, ordered by the cursor."""
        return (f"SELECT {', '.join(self._select)} {self._rows_in(lo, hi)} "
                f"ORDER BY {self.dialect.identifier_preparer.quote(self.cursor)}")

    def _rows_in(self, lo: Bound, hi: Bound) -> str:
        preparer = self.dialect.identifier_preparer
        cursor = preparer.quote(self.cursor)
        return (f"FROM {preparer.format_table(self.table)} "
                f"WHERE {cursor} > {self.literal(lo)} AND {cursor} <= {self.literal(hi)}")

    def batches(self, lo: Bound, hi: Bound, what: str,
                notes: StreamNotes) -> Iterator[pa.RecordBatch]:
        """The rows with ``lo < cursor <= hi`` ordered by the cursor, as batches of the
        source's schema (of any size); what the read met is counted into ``notes``. ``what``
        names the source and the window in errors."""
        named = f"{what} (reader {self.name})"
        for batch in self._guarded(self.driver_batches(self.query(lo, hi)), named):
            yield conformed(self.noted(batch, notes), self.schema, self.cursor, named,
                            self._converters)

    def noted(self, batch: pa.RecordBatch, notes: StreamNotes) -> pa.RecordBatch:
        """The driver's ``batch`` with the columns of the schema only: a reader that selects
        more (flags of what its expressions changed) counts them into ``notes`` here. The
        default: the batch as it is."""
        return batch

    def count(self, lo: Bound, hi: Bound, what: str) -> int:
        """How many rows have ``lo < cursor <= hi``."""
        query = f"SELECT count(*) AS n {self._rows_in(lo, hi)}"
        batches = list(self._guarded(self.driver_batches(query), f"{what} (reader {self.name})"))
        return sum(int(b.column(0)[0].as_py() or 0) for b in batches if b.num_rows)

    def _guarded(self, batches: Iterator[pa.RecordBatch],
                 named: str) -> Iterator[pa.RecordBatch]:
        """``batches``, a driver's error raised as :class:`ReaderConnectionError` (transient)
        or :class:`ReaderError` naming ``named`` (the source, the window, the reader)."""
        try:
            yield from batches
        except (KeyboardInterrupt, SystemExit, GeneratorExit, EtlAssetsError):
            raise
        except BaseException as exc:  # connectorx raises a Rust panic as a BaseException
            if self.is_transient(exc):
                raise ReaderConnectionError(f"reader {self.name}: {describe(exc)}") from exc
            raise ReaderError(f"{named}: {self.at_fault(exc)}{describe(exc)}") from exc

    def at_fault(self, error: BaseException) -> str:
        """``column <name>: `` when the driver's ``error`` tells which column failed."""
        return ""


def _type_name(column: sa.Column[Any], dialect: sa.Dialect) -> str:
    """The column's type as the database names it (``UUID[]``, not SQLAlchemy's ``ARRAY``)."""
    try:
        return str(column.type.compile(dialect=dialect))
    except sa.exc.CompileError:
        return str(column.type)


def timestamp_text(value: datetime) -> str:
    """``value`` as ``YYYY-MM-DD HH:MM:SS.ffffff`` (with ``+00:00`` when it has a zone): the
    text every reader's database compares with its timestamp columns, and the form SQLAlchemy
    stores SQLite timestamps in."""
    text = (f"{value.year:04d}-{value.month:02d}-{value.day:02d} {value.hour:02d}:"
            f"{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}")
    if value.tzinfo is not None:
        offset = value.utcoffset()
        assert offset is not None
        minutes = int(offset.total_seconds()) // 60
        sign = "-" if minutes < 0 else "+"
        text += f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return text


def conformed(batch: pa.RecordBatch, schema: pa.Schema, cursor: str, what: str,
              converters: dict[str, Callable[[pa.Array], pa.Array]] | None = None,
              ) -> pa.RecordBatch:
    """``batch`` cast to ``schema`` with Arrow's safe casts, or a column's converter (no value
    may change: a decimal that would lose digits, a number out of range, text that is no
    timestamp fail, naming the column and the row's cursor value)."""
    converters = converters or {}
    arrays = []
    for field, array in zip(schema, batch.columns, strict=True):
        if isinstance(array, pa.ExtensionArray):  # ADBC's json, uuid and opaque types
            array = array.storage
        convert = converters.get(field.name) or _caster(field.type)
        if field.name in converters or array.type != field.type:
            try:
                array = convert(array)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
                row = _first_failing(array, convert)
                value = array[row].as_py() if row is not None else "a value"
                at = (batch.column(schema.get_field_index(cursor))[row].as_py()
                      if row is not None else "?")
                raise ReaderError(f"{what}: column {field.name} ({field.type}) cannot hold "
                                  f"{value!r} of the row with {cursor} = {at}: "
                                  f"{describe(error)}") from error
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _caster(arrow_type: pa.DataType) -> Callable[[pa.Array], pa.Array]:
    def cast(array: pa.Array) -> pa.Array:
        return pc.cast(array, arrow_type)  # safe: fails rather than change a value
    return cast


def _first_failing(array: pa.Array, convert: Callable[[pa.Array], pa.Array]) -> int | None:
    for row in range(len(array)):
        try:
            convert(array.slice(row, 1))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return row
    return None


def plan_reader(url: str, table: sa.Table, schema: pa.Schema,
                cursor: str) -> FastReader | str:
    """The fast reader of ``table`` at ``url`` (the source's, resolved), or why the generic
    path reads it."""
    dialect = sa.make_url(sqlalchemy_url(url)).get_backend_name()
    reference = READERS.get(dialect)
    if reference is None:
        return f"no fast reader for {dialect}"
    module, _, name = reference.partition(":")
    reader: type[FastReader] = getattr(importlib.import_module(module), name)
    return reader.plan(url, table, schema, cursor)
