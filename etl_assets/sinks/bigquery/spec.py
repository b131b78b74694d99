"""The spec of a BigQuery sink: what ``kind: bigquery`` accepts."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from etl_assets.code_versions import NotData
from etl_assets.settings import CONFLICT_DESCRIPTION, Conflict, KeyedSinkSettings, RetrySettings
from etl_assets.sinks.base import SinkSetup, SinkSpecBase

WriteMode = Literal["append", "replace_partition", "replace_table", "merge"]


class BigQuerySinkSpec(SinkSpecBase, RetrySettings, KeyedSinkSettings):
    """A BigQuery table loaded by parquet load jobs (created with its dataset when missing)."""

    kind: Literal["bigquery"]
    project: str = Field(description="Google Cloud project of the dataset")
    dataset: str = Field(description="dataset (created when missing, in `location`)")
    table: str = Field(description="table (created from the data's types when missing)")
    location: str | None = Field(None, description="dataset location such as EU or US")
    write: WriteMode = Field(
        "append", description="append; replace_partition: the partition's window of the "
                              "source's cursor is replaced; replace_table: each run's rows "
                              "become the table (swapped in by a copy job); merge: MERGE on the "
                              "primary key through a staging table")
    primary_key: list[str] | None = Field(
        None, description="default: the source's primary key; merge needs one")
    credentials_env: NotData[str | None] = Field(
        None, description="env var holding the path of a service-account JSON file; unset: "
                          "application default credentials")
    api_endpoint: str | None = Field(
        None, description="API root URL (${VAR} expanded), e.g. an emulator's; a plain http:// "
                          "endpoint is called without credentials")
    chunk_rows: NotData[int] = Field(500_000, gt=0, description="rows per load job (bounds memory)")
    conflict: Conflict = Field("newest", description=CONFLICT_DESCRIPTION + " (write merge)")
    retry_delay_s: NotData[float] = Field(2.0, ge=0, description="seconds of the first backoff, "
                                          "doubling after each (full jitter)")
    request_timeout_s: NotData[float] = Field(300.0, gt=0, description="seconds one API call may "
                                              "take, the client's own retries included")

    @field_validator("project", "dataset", "table")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9_.-]+$", value):
            raise ValueError(f"{value!r} is not a BigQuery name (letters, digits, _ . -)")
        return value

    def describe_target(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"

    def asset_kinds(self) -> set[str]:
        return {"bigquery"}

    def check_in_pipeline(self, setup: SinkSetup[SinkSpecBase]) -> None:
        if self.write == "merge" and not setup.primary_key:
            raise ValueError(f"write merge needs a primary_key (on the sink or its source "
                             f"{self.source!r})")
