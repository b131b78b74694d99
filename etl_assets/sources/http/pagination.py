"""How an HTTP source asks for the next page of a window: a model a ``pagination.kind``, each
with the parameters of the first request and the rule for the next one.

- ``none``: one request a window.
- ``page``: ``param`` = ``start``, ``start + 1``... (``size_param`` = ``size`` each time).
- ``offset``: ``offset_param`` = 0, then the records received so far (``limit_param`` =
  ``limit``): a server that gives fewer than asked misses nothing.
- ``next_token``: the token at ``path`` in each answer sent back as the query parameter
  ``param`` (datasette's ``next`` / ``_next``).
- ``next_url``: the URL at ``path`` in each answer (relative URLs resolved).
- ``link_header``: the ``rel="next"`` URL of the answer's ``Link`` header (RFC 8288, which
  replaced RFC 5988: GitHub, datasette...).

Pages stop at an empty page, or when the token or URL is missing, null or empty. A next URL
must stay on the source's origin (scheme, host, port): the source's headers, credentials
among them, go with each request. A server that gives back the token or URL it was just
given fails the window rather than loop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal
from urllib.parse import urlencode, urljoin, urlsplit

from pydantic import Field

from etl_assets.errors import DataError
from etl_assets.secrets import mask_url
from etl_assets.settings import StrictModel
from etl_assets.sources.http.json_paths import PathMissing, at_path, kind_of

Params = tuple[tuple[str, str], ...]


class PaginationError(DataError):
    """Answers whose next page cannot be asked for (named: the URL, masked, and why)."""


@dataclass(frozen=True)
class PageRequest:
    """One page to GET: ``url`` with the source's ``params`` and the pagination's
    ``paging`` parameters; ``position`` is the page number or offset it asks for."""

    url: str
    params: Params = ()
    paging: Params = ()
    position: int = 0

    @property
    def full_url(self) -> str:
        query = urlencode([*self.params, *self.paging])
        if not query:
            return self.url
        return f"{self.url}{'&' if '?' in self.url else '?'}{query}"


@dataclass(frozen=True)
class PageAnswer:
    """What the pagination reads of an answer: its JSON, its headers, its record count."""

    document: Any
    headers: Mapping[str, str]
    records: int


class NoPagination(StrictModel):
    """One request a window."""

    kind: Literal["none"] = "none"

    def parameters(self) -> list[str]:
        return []

    def first(self, request: PageRequest) -> PageRequest:
        return request

    def following(self, request: PageRequest, answer: PageAnswer) -> PageRequest | None:
        return None


class PagePagination(StrictModel):
    """Numbered pages: ``?page=1&per_page=100``, then ``page=2``..."""

    kind: Literal["page"]
    param: str = Field("page", description="query parameter of the page number")
    start: int = Field(1, description="number of the first page")
    size_param: str | None = Field("per_page", description="query parameter of the page size "
                                                           "(null: none sent)")
    size: int = Field(100, gt=0, description="records a page")

    def parameters(self) -> list[str]:
        return [self.param, *([self.size_param] if self.size_param else [])]

    def _paging(self, number: int) -> Params:
        size = ((self.size_param, str(self.size)),) if self.size_param else ()
        return ((self.param, str(number)), *size)

    def first(self, request: PageRequest) -> PageRequest:
        return replace(request, paging=self._paging(self.start), position=self.start)

    def following(self, request: PageRequest, answer: PageAnswer) -> PageRequest | None:
        number = request.position + 1
        return replace(request, paging=self._paging(number), position=number)


class OffsetPagination(StrictModel):
    """Offsets: ``?offset=0&limit=1000``, then ``offset=`` the records received so far."""

    kind: Literal["offset"]
    offset_param: str = Field("offset", description="query parameter of the offset")
    limit_param: str | None = Field("limit", description="query parameter of the page size "
                                                         "(null: none sent)")
    limit: int = Field(1000, gt=0, description="records a page")

    def parameters(self) -> list[str]:
        return [self.offset_param, *([self.limit_param] if self.limit_param else [])]

    def _paging(self, offset: int) -> Params:
        limit = ((self.limit_param, str(self.limit)),) if self.limit_param else ()
        return ((self.offset_param, str(offset)), *limit)

    def first(self, request: PageRequest) -> PageRequest:
        return replace(request, paging=self._paging(0), position=0)

    def following(self, request: PageRequest, answer: PageAnswer) -> PageRequest | None:
        offset = request.position + answer.records
        return replace(request, paging=self._paging(offset), position=offset)


def _found(answer: PageAnswer, path: str) -> str | None:
    """The token or URL at ``path`` (None: missing, null or empty: the last page)."""
    try:
        value = at_path(answer.document, path)
    except PathMissing:
        return None
    if value is None or value == "":
        return None
    if isinstance(value, dict | list):
        raise PaginationError(f"`{path}` is {kind_of(value)}, not a token or URL")
    return str(value)


class NextTokenPagination(StrictModel):
    """A token in each answer (``next``), sent back as a query parameter (``_next``)."""

    kind: Literal["next_token"]
    path: str = Field("next", description="JSON path of the next page's token in an answer")
    param: str = Field("_next", description="query parameter the token is sent as")

    def parameters(self) -> list[str]:
        return [self.param]

    def first(self, request: PageRequest) -> PageRequest:
        return request

    def following(self, request: PageRequest, answer: PageAnswer) -> PageRequest | None:
        token = _found(answer, self.path)
        if token is None:
            return None
        paging = ((self.param, token),)
        if paging == request.paging:
            raise PaginationError(f"the answer gives back the token it was asked with "
                                  f"(`{self.path}`): the pages would never end")
        return replace(request, paging=paging)


def _next_url(request: PageRequest, found: str | None, where: str) -> PageRequest | None:
    """The request of a next URL read from ``where`` (None: the last page)."""
    if found is None:
        return None
    current = request.full_url
    url = urljoin(current, found)
    if _origin(url) != _origin(current):
        raise PaginationError(f"the next page ({where}) is on another origin, "
                              f"{mask_url(url)}: the source's headers are not sent there")
    if url == current:
        raise PaginationError(f"the next page ({where}) is the page itself: the pages would "
                              f"never end")
    return PageRequest(url)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


class NextUrlPagination(StrictModel):
    """A URL in each answer (``next_url``) that gives the next page."""

    kind: Literal["next_url"]
    path: str = Field("next_url", description="JSON path of the next page's URL in an answer")

    def parameters(self) -> list[str]:
        return []

    def first(self, request: PageRequest) -> PageRequest:
        return request

    def following(self, request: PageRequest, answer: PageAnswer) -> PageRequest | None:
        return _next_url(request, _found(answer, self.path), f"`{self.path}`")


_LINK = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]+)*)")


def next_link(header: str | None) -> str | None:
    """The ``rel="next"`` target of a ``Link`` header (RFC 8288), if any."""
    for target, attributes in _LINK.findall(header or ""):
        for attribute in attributes.split(";"):
            name, _, value = attribute.strip().partition("=")
            if name.strip().lower() == "rel" and \
                    "next" in value.strip().strip('"').lower().split():
                return target
    return None


class LinkHeaderPagination(StrictModel):
    """The ``Link: <url>; rel="next"`` header of each answer (RFC 8288)."""

    kind: Literal["link_header"]

    def parameters(self) -> list[str]:
        return []

    def first(self, request: PageRequest) -> PageRequest:
        return request

    def following(self, request: PageRequest, answer: PageAnswer) -> PageRequest | None:
        every = getattr(answer.headers, "getall", None)  # a Link header may come more than once
        links = ", ".join(every("Link", [])) if every else answer.headers.get("Link")
        return _next_url(request, next_link(links), "Link header")


Pagination = Annotated[NoPagination | PagePagination | OffsetPagination | NextTokenPagination
                       | NextUrlPagination | LinkHeaderPagination, Field(discriminator="kind")]
"""Every pagination kind, told apart by ``kind``."""
