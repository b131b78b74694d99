"""The spec of staging: where extracted batches wait, as parquet, for the sinks."""

from __future__ import annotations

from pydantic import Field

from etl_assets.code_versions import NotData
from etl_assets.storage import StorageLocation


class StagingSpec(StorageLocation):
    """Where extracted batches are staged as parquet shards: a local folder, or an object store
    when a run's steps do not share a disk (``s3://``, ``gs://``, ``az://``)."""

    root: NotData[str] = Field("${ETL_ASSETS_HOME}/staging", description=(
        "a local folder (${VAR} expanded) or an fsspec URL such as s3://bucket/staging"))
    shard_rows: NotData[int] = Field(1_000_000, gt=0, description="rows per parquet file")
