"""Running a sink IO manager on batches as Dagster would, for the sink tests."""

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    DagsterInstance,
    DynamicPartitionsDefinition,
    IOManager,
    asset,
    build_output_context,
    materialize,
)

from etl_assets.batches import RecordBatchStream
from etl_assets.watermark import Window


def run_sink(manager: IOManager, batches: list[pa.RecordBatch], schema: pa.Schema,
             window: Window, asset: str) -> dict[str, Any]:
    """Hand ``batches`` of partition ``window`` to ``manager``; the metadata it logged."""
    context = build_output_context(asset_key=AssetKey(asset), partition_key=window.key,
                                   run_id=str(uuid.uuid4()))
    manager.handle_output(context, RecordBatchStream(schema, iter(batches)))
    return {k: getattr(v, "value", v) for k, v in context.get_logged_metadata().items()}


def run_range(manager: IOManager, partitions: dict[Window, list[pa.RecordBatch]],
              schema: pa.Schema, instance: DagsterInstance,
              asset_name: str = "sink") -> dict[str, dict[str, Any]]:
    """Materialize the windows of ``partitions`` (in order) in ONE step, as a single-run
    backfill does: the asset returns a stream per partition of ``context.partition_keys``,
    and ``manager`` writes them. The metadata of each partition's materialization, by key.
    (No ``from __future__ import annotations`` here: Dagster reads the context's annotation.)"""
    definition = DynamicPartitionsDefinition(name=f"windows_{uuid.uuid4().hex[:8]}")
    by_key = {window.key: batches for window, batches in partitions.items()}

    @asset(name=asset_name, partitions_def=definition, io_manager_key="sink_io_manager",
           backfill_policy=BackfillPolicy.single_run())
    def sink_asset(context: AssetExecutionContext) -> dict[str, RecordBatchStream]:
        return {key: RecordBatchStream(schema, iter(by_key[key]))
                for key in context.partition_keys}

    keys = list(by_key)
    assert definition.name is not None
    instance.add_dynamic_partitions(definition.name, keys)
    result = materialize([sink_asset], instance=instance,
                         resources={"sink_io_manager": manager},
                         tags={"dagster/asset_partition_range_start": keys[0],
                               "dagster/asset_partition_range_end": keys[-1]})
    assert result.success
    steps = {e.step_key for e in result.get_step_success_events()}
    assert len(steps) == 1, steps  # one step wrote every partition
    return {event.materialization.partition or "": {
        k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()}


# Rows of (id, name, updated_at) for the sinks' target tests.
UTC = timezone.utc
DAY = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))
NEXT_DAY = Window(DAY.hi, datetime(2024, 3, 3, tzinfo=UTC))
EVENTS = pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string()),
                    pa.field("updated_at", pa.timestamp("us", tz="UTC"))])


def rows(ids: list[int], window: Window, tag: str = "v",
         schema: pa.Schema = EVENTS) -> pa.RecordBatch:
    """Rows ``ids`` of ``schema`` (id, name, updated_at), row i at the window's lo + i minutes."""
    assert isinstance(window.lo, datetime)
    return pa.RecordBatch.from_pylist(
        [{"id": i, "name": f"{tag}{i}", "updated_at": window.lo + timedelta(minutes=i)}
         for i in ids], schema)


def keys(ids: list[int]) -> pa.Table:
    """A key table of ``ids``, as a sink's count_window takes it."""
    return pa.table({"id": pa.array(ids, pa.int64())})
