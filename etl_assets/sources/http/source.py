"""An HTTP source: a JSON API read one window at a time, page after page.

For a window the source GETs ``url`` with ``params`` (the window's bounds in them) on one
session, takes the records at ``records`` in each answer, flattens them (``flatten_depth``)
and hands each page to :func:`~etl_assets.sources.records.window_stream`, which conforms it
to the window's schema (``columns``, else the first page's types) and keeps the rows of the
window (lo < cursor <= hi: an API's filters are often inclusive, or coarser). One page is in
memory at a time. A timestamp cursor that ``columns`` does not declare is read as timestamps
(in UTC when its text carries an offset or ``Z``), declared columns first.

The newest cursor value (the sensor's) is read from ``latest``; without it, timestamp windows
go up to now.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

import pyarrow as pa
from dagster import get_dagster_logger

from etl_assets.batches import RecordBatchStream, StreamNotes
from etl_assets.connections import expand_url, values_from_env
from etl_assets.home import expand_vars
from etl_assets.progress import ProgressLog
from etl_assets.raw_pages import RawPages
from etl_assets.secrets import (
    mask_parameters,
    mask_url,
    masked_log,
)
from etl_assets.sources.base import CursorType
from etl_assets.sources.http.client import HttpSourceError, PageClient
from etl_assets.sources.http.flatten import flattened
from etl_assets.sources.http.json_paths import PathMissing, at_path, kind_of
from etl_assets.sources.http.pagination import PageAnswer, PageRequest, PaginationError
from etl_assets.sources.http.spec import HttpSourceSpec
from etl_assets.sources.http.templates import bound_values, render
from etl_assets.sources.records import declared_schema, window_stream
from etl_assets.watermark import Bound, Window

_ADVICE = "give a secret query parameter with params_from_env, a token with headers_from_env"


def open_http_source(name: str, spec: HttpSourceSpec) -> HttpSource:
    """Source ``name`` of ``spec``: its URL, headers and secret parameters resolved now."""
    return HttpSource(name, spec)


class HttpSource:
    """A JSON API as a source (see the module's docstring)."""

    def __init__(self, name: str, spec: HttpSourceSpec) -> None:
        self.name = name
        self.spec = spec
        self.what = f"source {name!r}"
        self.url = expand_url(spec.url, self.what, field="url", advice=_ADVICE)
        mask_parameters(spec.params_from_env)
        self.secret_params = values_from_env(spec.params_from_env, "query parameter", self.what)
        self.headers = {**spec.headers,
                        **values_from_env(spec.headers_from_env, "header", self.what)}
        self.ca_file = expand_vars(spec.ca_file) if spec.ca_file else None
        self.log = masked_log(get_dagster_logger())
        self._latest: list[object] = []  # the newest value, once read

    def __repr__(self) -> str:
        return f"HttpSource({self.name!r}, {mask_url(self.url)})"

    def location(self) -> str:
        return mask_url(self.url)

    def reader(self) -> str:
        return f"http GET ({self.spec.pagination.kind} pagination)"

    def dispose(self) -> None:
        """Nothing to release: each extraction's session closes with its last page."""

    def _client(self, what: str) -> PageClient:
        spec = self.spec
        return PageClient(what, spec.retry_policy(), self.headers, spec.timeout_s,
                          ca_file=self.ca_file, requests_per_second=spec.requests_per_second,
                          log=self.log)

    # -- the newest cursor value -------------------------------------------------------------

    @cached_property
    def cursor_type(self) -> CursorType:
        """The spec's; else that of the newest value ``latest`` gives (an integer or
        text), else ``timestamp``."""
        if self.spec.cursor_type:
            return self.spec.cursor_type
        if self.spec.latest is None:
            return "timestamp"
        value = self._latest_value()
        return "integer" if isinstance(value, int) and not isinstance(value, bool) \
            else "timestamp"

    def _latest_url(self) -> str:
        latest = self.spec.latest
        assert latest is not None
        url = self.url if latest.url is None else \
            expand_url(latest.url, self.what, field="latest.url", advice=_ADVICE)
        return PageRequest(url, tuple(latest.params.items())).full_url

    def _latest_value(self) -> object:
        """The value at ``latest.path`` (None: the path ends in an empty list, or null)."""
        if self._latest:
            return self._latest[0]
        latest = self.spec.latest
        assert latest is not None
        url = self._latest_url()
        with self._client(f"{self.what}: reading the newest {self.spec.cursor}") as client:
            document, _answer = client.get_json(url)
        try:
            value = at_path(document, latest.path)
        except PathMissing as exc:
            if not exc.empty:
                raise HttpSourceError(f"{self.what}: GET {mask_url(url)}: {exc} "
                                      f"(latest.path)") from None
            value = None
        self._latest.append(value)
        return value

    def cursor_range(self) -> tuple[Bound | None, Bound | None]:
        """(None, the newest cursor value): ``latest``'s, or now (to the second, in UTC)
        without it. The oldest is not asked for: a first window starts at ``start``, else
        ``max_window`` before the newest."""
        if self.spec.latest is None:
            return None, datetime.now(timezone.utc).replace(microsecond=0)
        return None, self._bound(self._latest_value())

    def _bound(self, value: object) -> Bound | None:
        if value is None:
            return None
        where = f"{self.what}: latest.path {self.spec.latest.path if self.spec.latest else ''}"
        if self.cursor_type == "integer":
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value)
            raise HttpSourceError(f"{where} gave {kind_of(value)}, not an integer")
        if isinstance(value, str):
            parsed = parse_timestamp(value)
            if parsed is not None:
                return parsed
        raise HttpSourceError(f"{where} gave {kind_of(value)}, not an ISO 8601 timestamp")

    # -- one window --------------------------------------------------------------------------

    def extract(self, window: Window) -> RecordBatchStream:
        """The records of ``window``, a page a batch (the first page is read now)."""
        raw = RawPages() if self.spec.keep_raw else None
        notes = StreamNotes(f"{self.what} window {window}", raw_pages=raw)
        pages = self._pages(window, notes.what, raw)
        first = next(pages, None)
        declared = self._declared(first, isinstance(window.lo, datetime))
        records = pages if first is None else itertools.chain([first], pages)
        return window_stream(notes.what, records, declared, self.spec.cursor, window, notes)

    def _first_request(self, window: Window) -> PageRequest:
        values = bound_values(window)
        try:
            params = [(name, render(template, values))
                      for name, template in self.spec.params.items()]
        except KeyError as exc:
            raise HttpSourceError(f"{self.what}: params: {exc.args[0]}") from None
        request = PageRequest(self.url, (*params, *self.secret_params.items()))
        return self.spec.pagination.first(request)

    def _pages(self, window: Window, what: str,
               raw: RawPages | None) -> Iterator[list[dict[str, Any]]]:
        """The records of each page, flattened; one session for them all."""
        spec = self.spec
        request: PageRequest | None = self._first_request(window)
        progress = ProgressLog(self.log, f"{what}: pages of {mask_url(self.url)}",
                               done_line=False)
        with self._client(what) as client:
            while request is not None:
                url = request.full_url
                document, answer = client.get_json(url)
                if raw is not None:
                    raw.add(answer.text.encode("utf-8"), mask_url(url))
                records = self._records(document, url, what)
                progress.add(len(records))
                if not records:
                    return
                yield [flattened(r, spec.flatten_depth, what) for r in records]
                try:
                    request = spec.pagination.following(
                        request, PageAnswer(document, answer.headers, len(records)))
                except PaginationError as exc:
                    raise HttpSourceError(f"{what}: GET {mask_url(url)}: {exc}") from None

    def _records(self, document: object, url: str, what: str) -> list[dict[str, Any]]:
        """The records at ``records`` in ``document`` (the answer of ``url``)."""
        path = self.spec.records
        try:
            found = at_path(document, path)
        except PathMissing as exc:
            raise HttpSourceError(f"{what}: GET {mask_url(url)}: {exc} (`records`)") from None
        where = f"`{path}`" if path else "the answer"
        if not isinstance(found, list):
            raise HttpSourceError(f"{what}: GET {mask_url(url)}: {where} is {kind_of(found)}, "
                                  f"not a list of records (`records`)")
        bad = next((r for r in found if not isinstance(r, dict)), None)
        if bad is not None:
            raise HttpSourceError(f"{what}: GET {mask_url(url)}: {where} holds "
                                  f"{kind_of(bad)}; records are JSON objects")
        return found

    def _declared(self, first: list[dict[str, Any]] | None,
                  timestamps: bool) -> pa.Schema | None:
        """``columns``, and the cursor as timestamps when the window's bounds are
        (``timestamps``) and they do not declare it: in UTC when the first page's text
        carries an offset, else naive."""
        declared = declared_schema(self.spec.columns)
        cursor = self.spec.cursor
        if not timestamps or first is None or \
                (declared is not None and cursor in declared.names):
            return declared
        value = next((r[cursor] for r in first if r.get(cursor) is not None), None)
        parsed = parse_timestamp(value) if isinstance(value, str) else None
        if parsed is None:
            return declared  # not text: window_stream says what it cannot compare
        field = pa.field(cursor, pa.timestamp("us", tz="UTC" if parsed.tzinfo else None))
        return pa.schema([field]) if declared is None else declared.append(field)


def parse_timestamp(text: str) -> datetime | None:
    """ISO 8601 text as a datetime (aware ones in UTC); None when it is not one."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed

