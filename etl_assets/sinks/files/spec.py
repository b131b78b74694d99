"""The spec of a file sink: what ``kind: parquet`` accepts (parquet, JSON lines or CSV)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from etl_assets.secrets import described_location
from etl_assets.settings import (
    CONFLICT_DESCRIPTION,
    Conflict,
    KeyedSinkSettings,
    RetrySettings,
    secrets_from_env_only,
)
from etl_assets.sinks.base import SinkSetup, SinkSpecBase
from etl_assets.storage import (
    STORAGE_OPTIONS_DESCRIPTION,
    check_storage_url,
    storage_options_without_secrets,
)

FileMode = Literal["shard", "update", "replace"]


class ParquetSinkSpec(SinkSpecBase, RetrySettings, KeyedSinkSettings):
    """Parquet, JSON lines or CSV files in a local folder or behind any fsspec URL."""

    kind: Literal["parquet"]
    path: str = Field(description="a folder: a local path (${VAR} expanded) or an fsspec URL "
                                  "such as s3://bucket/prefix")
    mode: FileMode = Field(
        "shard", description="shard: a file per partition (a re-run replaces it); update: one "
                             "dataset merged by primary key, the latest row wins; replace: each "
                             "run's rows are the dataset")
    format: Literal["parquet", "json", "csv"] = Field(
        "parquet", description="parquet, json (one document a line) or csv (with a header)")
    primary_key: list[str] | None = Field(
        None, description="default: the source's primary key; update mode needs one")
    drop_duplicates: bool = Field(
        False, description="keep only the last row per primary key of a run (shard, replace)")
    storage_options: dict[str, Any] = Field(default_factory=dict,
                                            description=STORAGE_OPTIONS_DESCRIPTION)
    conflict: Conflict = Field("newest", description=CONFLICT_DESCRIPTION + " (update mode and "
                                                     "drop_duplicates)")

    _path_secrets = field_validator("path")(secrets_from_env_only)
    _path_scheme = field_validator("path")(check_storage_url)
    _options = field_validator("storage_options")(storage_options_without_secrets)

    def describe_target(self) -> str:
        """The path as written, ``${ETL_ASSETS_HOME}`` expanded; any other ``${VAR}`` stays
        as written (see :func:`~etl_assets.secrets.described_location`)."""
        return f"{described_location(self.path)} ({self.format}, {self.mode})"

    def asset_kinds(self) -> set[str]:
        """The format (``parquet``, ``json``, ``csv``) and the object store, if any."""
        scheme = self.path.partition("://")[0].lower() if "://" in self.path else ""
        store = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}.get(scheme)
        return {self.format, *([store] if store else [])}

    def check_in_pipeline(self, setup: SinkSetup[SinkSpecBase]) -> None:
        if (self.mode == "update" or self.drop_duplicates) and not setup.primary_key:
            what = "mode update" if self.mode == "update" else "drop_duplicates"
            raise ValueError(f"{what} needs a primary_key (on the sink or its source "
                             f"{self.source!r})")
