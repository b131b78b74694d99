"""Sends a stream of JSON documents through one HttpClient: a bounded queue feeds
``concurrency`` workers, so requests stay in flight across batches (no barrier between
chunks). Bulk answers are read per document: documents a bulk answer says to retry (429/5xx)
are sent again with backoff; CouchDB conflicts get the current ``_rev`` and are sent again
when asked; the rest of the failures are reported. With ``stop_on_failure`` the first
failure stops new requests, the ones in flight finish. A bulk request the server finds
too large (413) is sent again as two halves, down to one document.

With ``newest_field`` (``conflict: newest``) a conflicting CouchDB document is compared with
the stored one first: when the stored document's value of that field is newer (null is the
oldest), it stays and ours is counted in ``kept_newer``, not sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from etl_assets.newest_wins import is_newer, missing_cursor
from etl_assets.secrets import mask_text
from etl_assets.sinks.http.bulk import RequestShape, with_field
from etl_assets.sinks.http.client import HttpClient

DocumentGroup = tuple[list[str | None], list[bytes]]
"""Ids (None: no id) and JSON bodies of some documents, in the same order."""


@dataclass(frozen=True)
class FailedDocument:
    id: str | None
    body: bytes
    status: int | None
    answer: str


@dataclass
class SendReport:
    sent: int = 0
    failed: list[FailedDocument] = field(default_factory=list)
    retried: int = 0
    stopped: bool = False
    split: int = 0  # bulk requests answered 413 and sent again as two halves
    smallest_split: int | None = None  # documents in the smallest half sent
    kept_newer: int = 0  # documents not sent: the target holds a newer version


@dataclass
class _Job:
    ids: list[str | None]
    bodies: list[bytes]
    attempt: int = 0
    revised: bool = False


class DocumentSender:
    """Sends document groups with ``shape``: ``per_request`` documents a request (one in
    single mode, sent with ``method``; bulk requests are POSTed). ``revisions_url``: a CouchDB
    database URL whose ``_all_docs`` gives the current ``_rev`` of documents that conflict
    (None: a conflict is a failure); ``newest_field``: the field compared with the stored
    document's before a conflicting one is sent again (None: ours wins)."""

    def __init__(self, client: HttpClient, shape: RequestShape, per_request: int, *,
                 stop_on_failure: bool, method: str = "POST",
                 revisions_url: str | None = None, newest_field: str | None = None) -> None:
        self.client = client
        self.method = method if shape.format == "single" else "POST"
        self.shape = shape
        self.per_request = 1 if shape.format == "single" else per_request
        self.stop_on_failure = stop_on_failure
        self.revisions_url = revisions_url
        self.newest_field = newest_field
        self.report = SendReport()
        self._stop = asyncio.Event()

    async def send_all(self, groups: Iterator[DocumentGroup]) -> SendReport:
        """Send every document of ``groups`` (read in a thread: reading may block)."""
        queue: asyncio.Queue[_Job | None] = asyncio.Queue(maxsize=self.client.concurrency * 2)
        workers = [asyncio.create_task(self._worker(queue))
                   for _ in range(self.client.concurrency)]
        try:
            while not self._stop.is_set():
                group = await asyncio.to_thread(next, groups, None)
                if group is None:
                    break
                ids, bodies = group
                for start in range(0, len(bodies), self.per_request):
                    if self._stop.is_set():
                        break
                    end = start + self.per_request
                    await queue.put(_Job(ids[start:end], bodies[start:end]))
        except BaseException:
            self._stop.set()  # the workers drop what is queued; the error goes up
            raise
        finally:
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        self.report.retried += self.client.retried
        self.report.stopped = self._stop.is_set()
        return self.report

    async def _worker(self, queue: asyncio.Queue[_Job | None]) -> None:
        while True:
            job = await queue.get()
            if job is None:
                return
            if self._stop.is_set():
                continue  # stopping: only the requests in flight finish
            try:
                await self._send(job)
            except Exception as exc:  # e.g. a document without the id its URL needs
                for document_id, body in zip(job.ids, job.bodies, strict=True):
                    self._failed(document_id, body, None, f"{type(exc).__name__}: {exc}")

    async def _send(self, job: _Job) -> None:
        for request in self.shape.requests(job.ids, job.bodies):
            answer = await self.client.send(self.method, request.url, request.body,
                                            request.content_type)
            if answer.status == 413 and len(request.positions) > 1:
                await self._send_halves(job, request.positions)
                continue
            results = self.shape.results(answer, len(request.positions))
            again, conflicts = [], []
            for position, result in zip(request.positions, results, strict=True):
                if result.ok:
                    self.report.sent += 1
                elif result.retryable and job.attempt < self.client.policy.retries:
                    again.append(position)
                elif result.conflict and self.revisions_url and not job.revised:
                    conflicts.append(position)
                else:
                    self._failed(job.ids[position], job.bodies[position], result.status,
                                 result.answer)
            if again:
                self.report.retried += len(again)
                await asyncio.sleep(self.client.policy.wait_s(job.attempt, None))
                await self._send(_Job([job.ids[p] for p in again],
                                      [job.bodies[p] for p in again], job.attempt + 1,
                                      job.revised))
            if conflicts:
                revised = await self._with_revisions(job, conflicts)
                if revised.bodies:
                    await self._send(revised)

    async def _send_halves(self, job: _Job, positions: list[int]) -> None:
        """A bulk request too large for the server (413): its documents in two requests."""
        self.report.split += 1
        middle = len(positions) // 2
        for half in (positions[:middle], positions[middle:]):
            if self._stop.is_set():
                return  # on_error fail: a document failed meanwhile, the run will fail
            await self._send(_Job([job.ids[p] for p in half], [job.bodies[p] for p in half],
                                  job.attempt, job.revised))
        self.report.smallest_split = min(self.report.smallest_split or middle, middle)

    async def _with_revisions(self, job: _Job, positions: list[int]) -> _Job:
        """The conflicting documents with the ``_rev`` they have now; under the newest-wins
        rule, without those the target holds newer (counted, not sent)."""
        ids = [job.ids[p] for p in positions]
        assert self.revisions_url is not None
        query = "?include_docs=true" if self.newest_field else ""
        try:
            answer = await self.client.get_json(
                "POST", f"{self.revisions_url}/_all_docs{query}",
                json.dumps({"keys": ids}).encode())
            rows = {row.get("key"): row for row in answer.get("rows", [])
                    if isinstance(row, dict)}
        except Exception:  # the documents then fail as conflicts, with the server's word
            rows = {}
        kept_ids, bodies = [], []
        for position, document_id in zip(positions, ids, strict=True):
            body = job.bodies[position]
            row = rows.get(document_id) or {}
            revision = (row.get("value") or {}).get("rev")
            if revision and self.newest_field and self._stored_is_newer(
                    row.get("doc"), body, document_id):
                self.report.kept_newer += 1
                continue
            kept_ids.append(document_id)
            bodies.append(with_field(_without_rev(body), "_rev", revision) if revision else body)
        return _Job(kept_ids, bodies, job.attempt, revised=True)

    def _stored_is_newer(self, stored: object, body: bytes, document_id: str | None) -> bool:
        """Whether the stored document's ``newest_field`` is newer than ours (ours lacking the
        field is an error: the rule cannot be applied)."""
        assert self.newest_field is not None
        ours = json.loads(body)
        if self.shape.wrap and isinstance(ours.get(self.shape.wrap), dict):
            ours = ours[self.shape.wrap]
        if self.newest_field not in ours:
            raise ValueError(missing_cursor(f"document {document_id!r}", self.newest_field,
                                            list(ours)))
        theirs = stored.get(self.newest_field) if isinstance(stored, dict) else None
        return is_newer(theirs, ours[self.newest_field])

    def _failed(self, document_id: str | None, body: bytes, status: int | None,
                answer: str) -> None:
        # a server's answer or a client error may echo the URL or a token
        self.report.failed.append(FailedDocument(document_id, body, status, mask_text(answer)))
        if self.stop_on_failure:
            self._stop.set()


def _without_rev(body: bytes) -> bytes:
    if b'"_rev"' not in body:
        return body
    document: dict[str, Any] = json.loads(body)
    document.pop("_rev", None)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
