"""Request bodies for each posting format, and each document's result read from the answer.

- ``single``: one request a document, to ``url`` (``{id}`` in it is the document's id).
- ``ndjson_bulk``: Elasticsearch/OpenSearch ``_bulk``: an action line (``{"index":
  {"_id": ..}}``) and a document line each; the answer's ``items`` say how each one went.
- ``json_array_bulk``: one JSON array of documents (CouchDB ``_bulk_docs`` with ``wrap:
  docs``; datasette's insert API with ``wrap: rows``); a list answer has one result per
  document (CouchDB), an ``{"ok": true}`` answer covers them all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from etl_assets.json_documents import encode_string
from etl_assets.retries import RETRYABLE_HTTP_STATUS
from etl_assets.sinks.http.client import Answer

FORMATS = ("single", "ndjson_bulk", "json_array_bulk")
_ANSWER_CHARS = 500


@dataclass(frozen=True)
class Request:
    """One request: ``positions`` are the documents (indexes into the ids and bodies it was
    built from) it carries, in body order."""

    url: str
    body: bytes
    content_type: str
    positions: list[int]


@dataclass(frozen=True)
class DocumentResult:
    """How one document went: ``retryable`` (a per-document 429/5xx in a bulk answer),
    ``conflict`` (it exists already: CouchDB's 409)."""

    ok: bool
    status: int | None
    answer: str = ""
    retryable: bool = False
    conflict: bool = False


class RequestShape:
    """Builds requests in ``format`` and reads per-document results from their answers."""

    def __init__(self, format: str, url: str, *, wrap: str | None = None,
                 body_extra: dict[str, Any] | None = None) -> None:
        if format not in FORMATS:
            raise ValueError(f"format {format!r} is not one of {', '.join(FORMATS)}")
        self.format = format
        self.url = url
        self.wrap = wrap
        extra = json.dumps(body_extra, separators=(",", ":")).encode() if body_extra else b""
        self._extra = b"," + extra[1:-1] if extra and extra != b"{}" else b""

    def requests(self, ids: Sequence[str | None], bodies: Sequence[bytes]) -> list[Request]:
        """Requests carrying the documents: one each (single) or one for all (bulk)."""
        positions = range(len(bodies))
        if self.format == "single":
            return [Request(self._url_for(ids[p]), self._wrapped(bodies[p]), "application/json",
                            [p]) for p in positions]
        if self.format == "ndjson_bulk":
            body = b"".join(_ndjson_entry(ids[p], bodies[p]) for p in positions)
            return [Request(self.url, body, "application/x-ndjson", list(positions))]
        array = b"[" + b",".join(bodies[p] for p in positions) + b"]"
        return [Request(self.url, self._wrapped(array), "application/json", list(positions))]

    def _wrapped(self, body: bytes) -> bytes:
        if not self.wrap:
            return body
        return b'{' + json.dumps(self.wrap).encode() + b":" + body + self._extra + b"}"

    def _url_for(self, document_id: str | None) -> str:
        if "{id}" not in self.url:
            return self.url
        if document_id is None:
            raise ValueError(f"{self.url}: the URL takes the document's id, and a document "
                             f"has none")
        return self.url.replace("{id}", quote(document_id, safe=""))

    def results(self, answer: Answer, count: int) -> list[DocumentResult]:
        """Each of the request's ``count`` documents' result."""
        short = answer.text[:_ANSWER_CHARS]
        if answer.status is None or not 200 <= answer.status < 300:
            return [DocumentResult(False, answer.status, short, conflict=answer.status == 409)
                    ] * count
        if self.format == "single":
            return [DocumentResult(True, answer.status)]
        try:
            parsed = json.loads(answer.text) if answer.text.strip() else None
        except json.JSONDecodeError:
            parsed = None
        if self.format == "ndjson_bulk":
            return self._bulk_items(parsed, answer, count)
        if isinstance(parsed, list) and len(parsed) == count:
            return [_array_item(item, answer.status) for item in parsed]
        if isinstance(parsed, dict) and parsed.get("ok") is False:
            return [DocumentResult(False, answer.status, short)] * count
        return [DocumentResult(True, answer.status)] * count

    def _bulk_items(self, parsed: object, answer: Answer, count: int) -> list[DocumentResult]:
        if isinstance(parsed, dict) and parsed.get("errors") is False:
            # Elasticsearch/OpenSearch: no item failed, whatever the items say
            return [DocumentResult(True, answer.status)] * count
        items = parsed.get("items") if isinstance(parsed, dict) else None
        if not isinstance(items, list) or len(items) != count:
            return [DocumentResult(False, answer.status,
                                   f"a bulk answer without one item per document: "
                                   f"{answer.text[:_ANSWER_CHARS]}")] * count
        results = []
        for item in items:
            action: Any = next(iter(item.values()), {}) if isinstance(item, dict) and item else {}
            status = action.get("status") if isinstance(action, dict) else None
            if isinstance(status, int) and 200 <= status < 300 and "error" not in action:
                results.append(DocumentResult(True, status))
            else:
                error = action.get("error") if isinstance(action, dict) else item
                results.append(DocumentResult(
                    False, status, json.dumps(error)[:_ANSWER_CHARS],
                    retryable=status in RETRYABLE_HTTP_STATUS, conflict=status == 409))
        return results


def _ndjson_entry(doc_id: str | None, body: bytes) -> bytes:
    """The action line (with the id when there is one) and the document of a ``_bulk`` body."""
    if doc_id is None:
        return b'{"index":{}}\n%s\n' % body
    return b'{"index":{"_id":%s}}\n%s\n' % (_json_string(doc_id), body)


def _json_string(text: str) -> bytes:
    return encode_string(text).encode()


def _array_item(item: object, status: int) -> DocumentResult:
    if isinstance(item, dict) and "error" in item:
        return DocumentResult(False, status, json.dumps(item)[:_ANSWER_CHARS],
                              conflict=item.get("error") == "conflict")
    return DocumentResult(True, status)


def with_field(body: bytes, key: str, value: str) -> bytes:
    """A JSON object's text with ``key: value`` first (the object must not have it)."""
    inner = body[1:].lstrip()
    separator = b"," if inner[:1] != b"}" else b""
    return b"{" + json.dumps(key).encode() + b":" + json.dumps(value).encode() + separator + \
        inner
