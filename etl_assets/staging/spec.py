"""The spec of staging: where extracted batches wait, as parquet, for the sinks."""

from __future__ import annotations

from pydantic import Field

from etl_assets.code_versions import NotData
from etl_assets.settings import StrictModel


class StagingSpec(StrictModel):
    """Where extracted batches are staged as parquet shards."""

    root: NotData[str] = Field("${ETL_ASSETS_HOME}/staging", description="a local folder (${VAR} "
                                                                "expanded)")
    shard_rows: NotData[int] = Field(1_000_000, gt=0, description="rows per parquet file")
