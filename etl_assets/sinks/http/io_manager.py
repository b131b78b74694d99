"""HTTP API sink IO manager: each staged row, as a JSON document, posted to an HTTP API one
document a request (POST or PUT) or in bulk (NDJSON ``_bulk``, JSON array ``_bulk_docs``).

Documents come from the sink's transform (``module:function``: a record batch -> a list of
JSON-ready dicts) or, without one, from ``json_documents`` (every column). Each document's id
is its primary key (``{id}`` in a single-mode URL, the bulk action's ``_id``, or a field named
by ``id_key`` such as CouchDB's ``_id``), so a re-run overwrites instead of duplicating.

``on_error``: ``fail`` stops sending at the first document the server refuses for good (the
requests in flight finish) and fails the run naming it and the server's answer;
``dead_letter`` keeps refused documents in the shared dead-letter store, the run succeeds
with their count in its metadata, and the sink's replay job posts them again.
Header values come from env vars named in ``headers_from_env`` and never reach logs or
metadata; TLS is verified (``ca_file`` adds a CA).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from dagster import OpExecutionContext, OutputContext

from etl_assets.batches import RecordBatchStream
from etl_assets.connections import values_from_env
from etl_assets.dead_letters import ReplayReport
from etl_assets.errors import EtlAssetsError
from etl_assets.home import expand_vars
from etl_assets.json_documents import dumps, json_lines
from etl_assets.logs import Log
from etl_assets.newest_wins import missing_cursor
from etl_assets.progress import ProgressLog
from etl_assets.secrets import (
    has_user_info,
    is_secret_name,
    masked_errors,
    remember_secret,
    remember_secrets_in,
    shown_location,
)
from etl_assets.sinks.base import Metadata, SinkIOManager
from etl_assets.sinks.http.bulk import RequestShape, with_field
from etl_assets.sinks.http.client import HttpClient
from etl_assets.sinks.http.sender import DocumentGroup, DocumentSender, SendReport
from etl_assets.sinks.http.spec import HttpSinkSpec
from etl_assets.transforms import load_transform

_FAILURES_LOGGED = 5


class HttpSinkError(EtlAssetsError):
    """Documents the API refused, or a sink that cannot run as configured (named)."""


class HttpApiIOManager(SinkIOManager[HttpSinkSpec]):
    """Posts a sink asset's rows as JSON documents to the sink's ``url`` (``${VAR}``
    expanded); see :class:`~etl_assets.sinks.http.spec.HttpSinkSpec` for what each setting
    does."""

    # -- configuration -------------------------------------------------------------------

    def target_url(self) -> str:
        """``url`` expanded; its secrets (user info, token parameters) are remembered so that
        they are masked wherever they show up."""
        url = expand_vars(self.spec.url)
        remember_secrets_in(url)
        for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", self.spec.url):
            if is_secret_name(name):  # e.g. a token in the path: https://hooks/x/${TOKEN}
                remember_secret(os.environ.get(name))
        return url

    def request_headers(self, where: str) -> dict[str, str]:
        """Plain headers plus those whose values are in env vars (never logged)."""
        values = {**self.spec.headers, **values_from_env(self.spec.headers_from_env, "header",
                                                          where, error=HttpSinkError)}
        if any(h.lower() == "authorization" for h in values) and \
                has_user_info(self.target_url()):
            raise HttpSinkError(f"{where}: the URL holds user info (user:password@) and the "
                                f"Authorization header is set too: a request takes one of them")
        return values

    def _sender(self, client: HttpClient) -> DocumentSender:
        url = self.target_url()
        revisions = None
        if self.spec.couchdb_revisions:
            revisions = url.split("/{id}")[0] if self.spec.format == "single" else \
                url.removesuffix("/").removesuffix("/_bulk_docs")
        spec = self.spec
        newest = self.setup.cursor_column if spec.conflict_rule == "newest" and revisions else None
        return DocumentSender(client, RequestShape(spec.format, url, wrap=spec.wrap,
                                                   body_extra=spec.body_extra),
                              spec.bulk_docs, stop_on_failure=spec.on_error == "fail",
                              method=spec.method, revisions_url=revisions, newest_field=newest)

    def _client(self, where: str) -> HttpClient:
        spec = self.spec
        return HttpClient(spec.concurrency, spec.timeout_s, self.request_headers(where),
                          spec.retry_policy(),
                          ca_file=expand_vars(spec.ca_file) if spec.ca_file else None)

    # -- documents -----------------------------------------------------------------------

    def documents(self, batch: pa.RecordBatch,
                  transform: Callable[[pa.RecordBatch], list[dict[str, Any]]] | None,
                  where: str) -> DocumentGroup:
        """The batch's documents (JSON bodies) and their ids."""
        if transform is not None:
            documents = transform(batch)
            if not isinstance(documents, list):
                raise HttpSinkError(f"{where}: the transform must return a list of JSON-ready "
                                    f"dicts, not {type(documents).__name__}")
            ids = [self._id_of(d, where) for d in documents]
            bodies = [dumps(d) for d in documents]
        else:
            bodies = json_lines(batch, self.spec.big_integers).split(b"\n")[:-1]
            ids = self._ids_of(batch, where)
        if self.spec.id_key:
            bodies = [with_field(b, self.spec.id_key, i) if i is not None else b
                      for b, i in zip(bodies, ids, strict=True)]
        return ids, bodies

    def _ids_of(self, batch: pa.RecordBatch, where: str) -> list[str | None]:
        if not self.setup.primary_key:
            return [None] * batch.num_rows
        missing = [k for k in self.setup.primary_key if k not in batch.schema.names]
        if missing:
            raise HttpSinkError(f"{where}: primary key column(s) {', '.join(missing)} not in "
                                f"the data (columns: {', '.join(batch.schema.names)})")
        if len(self.setup.primary_key) == 1:
            column = batch.column(self.setup.primary_key[0])
            if pa.types.is_integer(column.type) or pa.types.is_string(column.type):
                return pc.cast(column, pa.string()).to_pylist()  # ~7x faster than str() a row
        columns = [batch.column(k).to_pylist() for k in self.setup.primary_key]
        return [_joined(values) for values in zip(*columns, strict=True)]

    def _id_of(self, document: dict[str, Any], where: str) -> str | None:
        if not self.setup.primary_key:
            return None
        try:
            return _joined(tuple(document[k] for k in self.setup.primary_key))
        except KeyError as exc:
            raise HttpSinkError(f"{where}: a document of the transform has no {exc} field "
                                f"(the primary key)") from None

    # -- writing -------------------------------------------------------------------------

    @masked_errors()
    def write(self, context: OutputContext, partition: str | None,
              stream: RecordBatchStream) -> Metadata:
        """Send one partition's rows as documents; ``rows_written``: documents the API
        accepted (``documents_failed`` refused, ``documents_kept_newer`` not sent)."""
        asset = context.asset_key.to_user_string()
        where = f"sink {asset}"
        self.target_url()  # its secrets are remembered before anything is logged
        label = f"{asset} [{partition}] -> {shown_location(self.spec.url)} ({self.spec.format})"
        transform = load_transform(self.spec.transform, where) if self.spec.transform else None
        cursor = self.setup.cursor_column
        if transform is None and self.spec.conflict_rule == "newest" and \
                cursor not in stream.schema.names:
            raise HttpSinkError(missing_cursor(where, cursor, stream.schema.names))
        progress = ProgressLog(context.log, label,
                                   done_line=context.has_partition_key)

        def groups() -> Iterator[DocumentGroup]:
            for batch in stream:
                group = self.documents(batch, transform, where)
                progress.add(len(group[1]))
                yield group

        report = self._run(groups(), where)
        progress.done()
        store = self.dead_letter_store()
        self._log_failures(context.log, label, report)
        if report.split:
            context.log.warning(
                f"{label}: {report.split} bulk request(s) were too large for the server "
                f"(HTTP 413) and went again in halves, the smallest of "
                f"{report.smallest_split} document(s); bulk_docs is {self.spec.bulk_docs}: "
                f"lower it to save the round trips")
        if report.failed and self.spec.on_error == "fail":
            first = report.failed[0]
            raise HttpSinkError(
                f"{label}: {len(report.failed)} document(s) refused; first: id {first.id!r}, "
                f"HTTP {first.status}: {first.answer}"
                + ("; stopped sending after it" if report.stopped else ""))
        superseded = store.supersede(asset, partition, stream.version, context.log)
        if report.failed:
            store.add(asset, partition, _letters(report), [
                f"HTTP {f.status}: {f.answer}" for f in report.failed], run_id=context.run_id,
                version=stream.version)
        if report.kept_newer:
            context.log.info(f"{label}: {report.kept_newer:,} document(s) not sent: the target "
                             f"holds newer versions of them")
        return {
            "url": shown_location(self.spec.url),
            "format": self.spec.format,
            "rows_written": report.sent,
            "documents_failed": len(report.failed),
            "documents_kept_newer": report.kept_newer,
            "dead_letters_superseded": superseded,
            "retries": report.retried,
            "bulk_requests_split": report.split,
            "seconds": round(progress.seconds, 3),
            "documents_per_second": round(report.sent / progress.seconds)
            if progress.seconds else 0,
            **store.metadata(asset, partition),
        }

    def target_metadata(self) -> Metadata:
        """``dagster/uri``: the URL, ``${VAR}`` resolved unless named like a secret, its
        secrets masked (:func:`~etl_assets.secrets.shown_location`). An API has no schema or
        row count to read cheaply."""
        return {"dagster/uri": shown_location(self.spec.url)}

    def _run(self, groups: Iterator[DocumentGroup], where: str) -> SendReport:
        async def main() -> SendReport:
            async with self._client(where) as client:
                return await self._sender(client).send_all(groups)

        return asyncio.run(main())

    @staticmethod
    def _log_failures(log: Log, label: str, report: SendReport) -> None:
        for failure in report.failed[:_FAILURES_LOGGED]:
            log.error(f"{label}: document {failure.id!r} refused: HTTP {failure.status}: "
                      f"{failure.answer}; document: {failure.body[:300].decode(errors='replace')}")
        if len(report.failed) > _FAILURES_LOGGED:
            log.error(f"{label}: ... and {len(report.failed) - _FAILURES_LOGGED} more")

    # -- dead letters --------------------------------------------------------------------

    @masked_errors()
    def replay_dead_letters(self, context: OpExecutionContext, asset: str) -> ReplayReport:
        """Post every dead letter of ``asset`` again; those that go through are removed."""
        store = self.dead_letter_store()
        files = store.files(asset)
        replayed = failing = 0
        for file in files:
            letters = store.read(file).payload
            ids = letters.column("id").to_pylist()
            bodies = [d.encode() for d in letters.column("document").to_pylist()]
            report = self._run(iter([(ids, bodies)]), f"sink {asset}")
            if report.kept_newer:
                context.log.info(f"{asset}: {report.kept_newer:,} dead letter(s) not sent: the "
                                 f"target holds newer versions of them")
            refused = {f.body for f in report.failed}
            answers = {f.body: f"HTTP {f.status}: {f.answer}" for f in report.failed}
            still = [b in refused for b in bodies]
            failing += store.settle(file, still, [answers.get(b, "") for b in bodies],
                                    run_id=context.run_id)
            replayed += len(bodies) - sum(still)
        return ReplayReport(replayed, failing, len(files))


def _joined(values: tuple[Any, ...]) -> str | None:
    if any(v is None for v in values):
        return None
    return ":".join(str(v) for v in values)


def _letters(report: SendReport) -> pa.Table:
    return pa.table({"id": pa.array([f.id for f in report.failed], pa.string()),
                     "document": pa.array([f.body.decode() for f in report.failed], pa.string())})

