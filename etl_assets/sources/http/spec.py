"""The spec of an HTTP source: what ``kind: http`` accepts (a JSON API read a window at a
time)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from etl_assets.code_versions import NotData
from etl_assets.secrets import described_location, is_secret_name, secret_parts
from etl_assets.settings import SECRET_HEADER, StrictModel, without_secrets
from etl_assets.sources.base import SourceSpecBase
from etl_assets.sources.http.pagination import NoPagination, Pagination
from etl_assets.sources.http.templates import EPOCH, check_template, placeholders
from etl_assets.sources.records import check_columns


def url_without_secrets(value: str) -> str:
    """``value`` (a URL, ``${VAR}`` allowed) when no part of it holds a secret, not even as a
    ``${VAR}``: an HTTP source's URL is shown in logs and asset descriptions."""
    found = secret_parts(value)
    if found:
        raise ValueError(f"holds a secret ({', '.join(found)}): give a secret query parameter "
                         f"with params_from_env and a token with headers_from_env")
    return value


def params_as_text(value: object) -> object:
    """Query parameters given as numbers made text (``per_page: 100``); a ``before``
    validator."""
    if isinstance(value, dict):
        return {name: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for name, v in value.items()}
    return value


def params_without_secrets(value: dict[str, str]) -> dict[str, str]:
    """``value`` when no query parameter is named like a secret."""
    secret = [name for name in value if is_secret_name(name)]
    if secret:
        raise ValueError(f"{', '.join(secret)}: give secret parameters with params_from_env "
                         f"(parameter: ENV_VAR), not in the spec")
    return value


class LatestSpec(StrictModel):
    """Where the sensor reads the source's newest cursor value."""

    url: str | None = Field(None, description="default: the source's url (${VAR} expanded)")
    params: dict[str, str] = Field(default_factory=dict,
                                   description="query parameters (no placeholders)")
    path: str = Field(description="JSON path of the newest value in the answer, e.g. "
                                  "rows.0.updated_at (a number indexes a list)")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return value if value is None else url_without_secrets(value)

    _params_text = field_validator("params", mode="before")(params_as_text)

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, str]) -> dict[str, str]:
        found = sorted({p for v in value.values() for p in placeholders(v)})
        if found:
            raise ValueError(f"{', '.join('{' + p + '}' for p in found)}: `latest` reads no "
                             f"window; its parameters take no placeholders")
        return params_without_secrets(value)


class HttpSourceSpec(SourceSpecBase):
    """A JSON API (api2db's collectors): for each window, GET ``url`` with ``params`` (the
    window's bounds in them), the records at ``records`` in each page, page after page as
    ``pagination`` says."""

    kind: Literal["http"] = "http"
    url: str = Field(description="the API's URL without secrets (${VAR} expanded)")
    params: dict[str, str] = Field(
        default_factory=dict, description="query parameters; {lo} {hi} (ISO 8601 for "
        "timestamps, integers for integer cursors), {lo_epoch} {hi_epoch} (seconds), "
        "{lo_epoch_ms} {hi_epoch_ms} (milliseconds) are the window's bounds")
    # NotData: which variable holds a key or a token does not change the rows
    params_from_env: NotData[dict[str, str]] = Field(
        default_factory=dict, description="query parameter -> env var holding its value "
                                          "(API keys: never logged)")
    records: str = Field("", description="JSON path of the list of records in each answer "
                                         "(rows, data.items); \"\": the answer is the list")
    pagination: Pagination = Field(default_factory=NoPagination,
                                   description="how the next page is asked for")
    headers: dict[str, str] = Field(default_factory=dict, description="headers without secrets")
    headers_from_env: NotData[dict[str, str]] = Field(
        default_factory=dict, description="header name -> env var holding its value "
                                          "(tokens: never logged)")
    flatten_depth: int = Field(0, ge=0, description="levels of nested objects made `a.b` "
                                                    "columns; deeper ones, and lists, are "
                                                    "json columns")
    columns: dict[str, str] | None = Field(
        None, description="Arrow types by column (int64, string, timestamp[us, tz=UTC], "
                          "decimal(12,2), json...); others take the first page's types")
    requests_per_second: NotData[float | None] = Field(
        None, gt=0, description="most requests a second (retries included); default: no limit")
    timeout_s: NotData[float] = Field(30.0, gt=0, description="seconds a request may take")
    ca_file: NotData[str | None] = Field(None, description="a CA bundle to trust besides the "
                                                           "system's (TLS is always verified)")
    latest: NotData[LatestSpec | None] = Field(
        None, description="where the sensor reads the newest cursor value; without it "
                          "timestamp windows go up to now (integer cursors need it)")
    keep_raw: NotData[bool] = Field(
        False, description="keep each page as received in raw/ of the window's staged version")

    _url = field_validator("url")(url_without_secrets)
    _columns = field_validator("columns")(check_columns)

    _params_text = field_validator("params", mode="before")(params_as_text)

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, str]) -> dict[str, str]:
        for template in value.values():
            check_template(template)
        return params_without_secrets(value)

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return without_secrets(value, SECRET_HEADER, "hold secrets: give them with "
                                "headers_from_env (header: ENV_VAR), not in the spec")

    @model_validator(mode="after")
    def _rules(self) -> HttpSourceSpec:
        if self.cursor_type == "integer":
            if self.latest is None:
                raise ValueError("an integer cursor needs `latest` (where the newest value is "
                                 "read): without it windows go up to now, a timestamp")
            epoch = sorted({p for v in self.params.values() for p in placeholders(v)}
                           & set(EPOCH))
            if epoch:
                raise ValueError(f"{', '.join('{' + p + '}' for p in epoch)} are for "
                                 f"timestamp cursors; use {{lo}} and {{hi}}")
        paging = set(self.pagination.parameters())
        clash = sorted(paging & {*self.params, *self.params_from_env})
        if clash:
            raise ValueError(f"`params` sets {', '.join(clash)}, which pagination "
                             f"{self.pagination.kind} sets")
        both = sorted(set(self.params) & set(self.params_from_env))
        if both:
            raise ValueError(f"{', '.join(both)} in both `params` and `params_from_env`")
        return self

    def describe(self) -> str:
        """The URL as written (``${VAR}`` left unresolved)."""
        return described_location(self.url)

    def asset_kinds(self) -> set[str]:
        return {"http"}
