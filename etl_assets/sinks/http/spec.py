"""The spec of an HTTP API sink: what ``kind: http`` accepts."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from etl_assets.code_versions import NotData
from etl_assets.json_documents import BigIntegers
from etl_assets.secrets import described_location, has_user_info
from etl_assets.settings import (
    CONFLICT_DESCRIPTION,
    SECRET_HEADER,
    Conflict,
    KeyedSinkSettings,
    RetrySettings,
    secrets_from_env_only,
    without_secrets,
)
from etl_assets.sinks.base import SinkSpecBase


class HttpSinkSpec(SinkSpecBase, RetrySettings, KeyedSinkSettings):
    """JSON documents posted to an HTTP API, one a request or in bulk."""

    transform_makes_batches: ClassVar[bool] = False

    kind: Literal["http"]
    url: str = Field(description="where documents go (${VAR} expanded); in single mode "
                                 "{id} is replaced by the document's id")
    format: Literal["single", "ndjson_bulk", "json_array_bulk"] = Field(
        "single", description="single: a request a document; ndjson_bulk: Elasticsearch/"
                              "OpenSearch _bulk; json_array_bulk: a JSON array (CouchDB "
                              "_bulk_docs with wrap: docs)")
    method: Literal["POST", "PUT"] = Field("POST", description="single mode's HTTP method")
    wrap: str | None = Field(None, description="key the document (single) or the array "
                                               "(bulk) is put under")
    body_extra: dict[str, Any] = Field(default_factory=dict,
                                       description="more keys beside `wrap` in each body")
    primary_key: list[str] | None = Field(
        None, description="the document id (default: the source's primary key)")
    id_key: str | None = Field(None, description="document field the id is put into, "
                                                 "e.g. _id for CouchDB")
    couchdb_revisions: bool = Field(
        False, description="a document that exists (conflict) is sent again with its "
                           "current _rev, so a re-run updates it")
    conflict: Conflict | None = Field(
        None, description=CONFLICT_DESCRIPTION + ". newest needs couchdb_revisions (the stored "
                          "document is read and compared); default: newest with "
                          "couchdb_revisions, else last_write")
    big_integers: BigIntegers = Field(
        "string", description="integers beyond ±(2^53 - 1) as JSON strings (a JavaScript-based "
                              "target reads numbers as doubles and rounds them) or numbers")
    concurrency: NotData[int] = Field(16, gt=0, description="requests in flight")
    bulk_docs: NotData[int] = Field(1000, gt=0, description="documents per bulk request "
                                                    "(datasette takes at most 100)")
    retries: NotData[int] = Field(5, ge=0, description="more attempts on connection errors, "
                                  "timeouts, 5xx and 429 (Retry-After honoured)")
    retry_delay_s: NotData[float] = Field(0.5, ge=0,
                                          description="first backoff, doubling, jittered")
    timeout_s: NotData[float] = Field(30.0, gt=0, description="seconds a request may take")
    on_error: NotData[Literal["fail", "dead_letter"]] = Field(
        "fail", description="fail: stop and fail the run at a refused document; "
                            "dead_letter: keep refused documents for the replay job")
    headers: dict[str, str] = Field(default_factory=dict,
                                    description="headers without secrets")
    headers_from_env: dict[str, str] = Field(
        default_factory=dict, description="header name -> env var holding its value "
                                          "(tokens: never logged)")
    ca_file: NotData[str | None] = Field(None, description="a CA bundle to trust besides the "
                                                  "system's (TLS is always verified)")

    _url_secrets = field_validator("url")(secrets_from_env_only)

    @model_validator(mode="after")
    def _one_authorization(self) -> HttpSinkSpec:
        header = next((h for h in [*self.headers, *self.headers_from_env]
                       if h.lower() == "authorization"), None)
        if header and has_user_info(self.url):
            raise ValueError(f"`url` holds user info (user:password@) and `{header}` is set "
                             f"too: an HTTP request takes one of them; drop one")
        return self

    @model_validator(mode="after")
    def _conflict_rule(self) -> HttpSinkSpec:
        if self.conflict == "newest" and not self.couchdb_revisions:
            raise ValueError("conflict newest needs couchdb_revisions: true (only then is the "
                             "stored document read and compared); without it the last write "
                             "wins: set conflict: last_write")
        return self

    @property
    def conflict_rule(self) -> str:
        """The rule in force: ``conflict``, or its default for this sink."""
        return self.conflict or ("newest" if self.couchdb_revisions else "last_write")

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return without_secrets(value, SECRET_HEADER, "hold secrets: give them with "
                                "headers_from_env (header: ENV_VAR), not in the spec")

    def describe_target(self) -> str:
        """The URL as written: ``${VAR}`` left as written, never resolved (see
        :func:`~etl_assets.secrets.described_location`), with its format."""
        return f"{described_location(self.url)} ({self.format})"

    def asset_kinds(self) -> set[str]:
        """``http``, and the target system the settings or the URL name: ``couchdb``
        (``couchdb_revisions``, or ``_bulk_docs``), ``elasticsearch`` (an ``ndjson_bulk``
        ``_bulk`` endpoint; OpenSearch speaks the same API), ``datasette`` (``/-/insert``)."""
        path = re.sub(r"[?#].*$", "", self.url).rstrip("/")
        kinds = {"http"}
        if self.couchdb_revisions or path.endswith("/_bulk_docs"):
            kinds.add("couchdb")
        if self.format == "ndjson_bulk" and path.endswith("/_bulk"):
            kinds.add("elasticsearch")
        if path.endswith("/-/insert") or path.endswith("/-/upsert"):
            kinds.add("datasette")
        return kinds
