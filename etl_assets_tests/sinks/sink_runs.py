"""Running a sink IO manager on batches as Dagster would, for the sink tests."""

from __future__ import annotations

import uuid
from typing import Any

import pyarrow as pa
from dagster import AssetKey, ConfigurableIOManager, build_output_context

from etl_assets.batches import RecordBatchStream
from etl_assets.watermark import Window


def run_sink(manager: ConfigurableIOManager, batches: list[pa.RecordBatch], schema: pa.Schema,
             window: Window, asset: str) -> dict[str, Any]:
    """Hand ``batches`` of partition ``window`` to ``manager``; the metadata it logged."""
    context = build_output_context(asset_key=AssetKey(asset), partition_key=window.key,
                                   run_id=str(uuid.uuid4()))
    manager.handle_output(context, RecordBatchStream(schema, iter(batches)))
    return {k: getattr(v, "value", v) for k, v in context.get_logged_metadata().items()}
