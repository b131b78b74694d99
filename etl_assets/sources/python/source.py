"""A window's rows from a Python function: ``function(lo, hi)`` yields (or returns) Arrow
record batches or tables, pandas DataFrames or lists of dicts, which
:mod:`etl_assets.sources.records` makes one schema and keeps to the window."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa

from etl_assets.batches import RecordBatchStream, StreamNotes
from etl_assets.errors import EtlAssetsError
from etl_assets.retries import describe, is_transient
from etl_assets.sources.base import CursorType
from etl_assets.sources.python.spec import PythonSourceSpec, load_function
from etl_assets.sources.records import declared_schema, window_stream
from etl_assets.watermark import Bound, Window


class PythonSourceError(EtlAssetsError):
    """The source's function (or ``latest``) failed, or gave what no cursor is; the message
    names the source, the window and the function."""


def open_python_source(name: str, spec: PythonSourceSpec) -> PythonSource:
    """Source ``name`` of ``spec``, its functions imported now."""
    return PythonSource(name, spec)


class PythonSource:
    """``spec.function`` called once a window, ``function(lo, hi)``: datetimes in UTC for a
    timestamp cursor, ints for an integer one. What it yields is conformed to one schema
    (``columns``, else the first batch's) and kept to the window. An error it raises fails
    the window with one line naming the source, the window and the function; a transient one
    (:func:`etl_assets.retries.is_transient`) is raised as it is, and the extraction retries
    the window from its beginning."""

    def __init__(self, name: str, spec: PythonSourceSpec) -> None:
        self.name = name
        self.spec = spec
        owner = f"source {name!r}"
        self.function = load_function(spec.function, owner, "function")
        self.latest = load_function(spec.latest, owner, "latest") if spec.latest else None
        self.declared = declared_schema(spec.columns)

    def __repr__(self) -> str:
        return f"PythonSource({self.name!r}, {self.spec.function})"

    @property
    def cursor_type(self) -> CursorType:
        return self.spec.resolved_cursor_type

    def location(self) -> str:
        """The file of the function's module (its name when it has none)."""
        try:
            return inspect.getsourcefile(self.function) or self.function.__module__
        except TypeError:  # a builtin, or a callable object of a builtin class
            return str(getattr(self.function, "__module__", self.spec.function))

    def reader(self) -> str:
        return f"python ({self.spec.function})"

    def dispose(self) -> None:
        """Nothing to release: the function holds what it opens."""

    def cursor_range(self) -> tuple[Bound | None, Bound | None]:
        """(None, the newest cursor value): ``latest()``, else now (UTC) for a timestamp
        cursor. The oldest is not known: the first windows start at ``start``, else just
        below the newest."""
        if self.latest is None:
            return None, datetime.now(timezone.utc)
        try:
            value = self.latest()
        except Exception as exc:
            if is_transient(exc):
                raise
            raise PythonSourceError(f"source {self.name!r}: {self.spec.latest} raised "
                                    f"{describe(exc)}") from exc
        return None, None if value is None else self._cursor_value(value)

    def _cursor_value(self, value: object) -> Bound:
        """What ``latest`` returned, as a cursor value of this source's type (datetimes in
        UTC, naive ones taken as UTC)."""
        if isinstance(value, pa.Scalar):
            value = value.as_py()
        if self.cursor_type == "integer":
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                return int(value)
        elif isinstance(value, datetime):
            if isinstance(value, pd.Timestamp):
                value = value.to_pydatetime()
            return _utc(value)
        raise PythonSourceError(
            f"source {self.name!r}: {self.spec.latest} returned {value!r} "
            f"({type(value).__name__}); the cursor {self.spec.cursor} is "
            f"{'an integer' if self.cursor_type == 'integer' else 'a timestamp (a datetime)'}")

    def extract(self, window: Window) -> RecordBatchStream:
        """The rows the function gives for ``window`` with their cursor in it; the first
        batch is read now (to know the schema when ``columns`` does not give it all)."""
        lo, hi = window.lo, window.hi
        if isinstance(lo, datetime) and isinstance(hi, datetime):
            window = Window(_utc(lo), _utc(hi))
        what = f"source {self.name!r} window {window}"
        return window_stream(what, self._pages(window, what), self.declared,
                             self.spec.cursor, window, StreamNotes(what))

    def _pages(self, window: Window, what: str) -> Iterator[object]:
        """What ``function(lo, hi)`` gives, page by page; its errors made one line."""
        try:
            yield from _as_pages(self.function(window.lo, window.hi))  # closed with us
        except Exception as exc:
            if is_transient(exc):  # as it is: the extraction retries the window
                raise
            raise PythonSourceError(f"{what}: {self.spec.function} raised "
                                    f"{describe(exc)}") from exc


def _as_pages(result: object) -> Iterable[object]:
    """The function's result as pages: one Arrow batch or table, DataFrame or list of dicts
    is one page; any other iterable (a generator) gives one page an item."""
    if isinstance(result, pa.RecordBatch | pa.Table | pd.DataFrame):
        return [result]
    if isinstance(result, list) and result and all(isinstance(r, dict) for r in result):
        return [result]
    if not isinstance(result, Iterable) or isinstance(result, str | bytes | dict):
        raise TypeError(f"it returned {type(result).__name__}; yield or return Arrow record "
                        f"batches or tables, pandas DataFrames or lists of dicts")
    return result


def _utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value is UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


