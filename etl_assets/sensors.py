"""The watermark sensor: one per source; its cursor is the high watermark requested so far.

Each tick asks the source for its newest cursor value, cuts the new rows into windows
(see :mod:`etl_assets.watermark`), adds one dynamic partition per window and requests a run
for it. The cursor advances only by creating partitions, so a failed run stays visible as a
failed partition and can be re-run. With an empty cursor the sensor starts after the highest
partition that already exists (so a reset sensor does not backfill again), else after the
watermark its sinks have committed (a new instance over tables loaded before), else from the
oldest row.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    DynamicPartitionsDefinition,
    JobDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,  # what define_asset_job returns; not exported by dagster
)

from etl_assets.errors import TransientError
from etl_assets.logs import Log
from etl_assets.retries import describe, is_transient
from etl_assets.secrets import masked_errors
from etl_assets.sources.base import Source, SourceSpecBase
from etl_assets.sources.registry import open_source
from etl_assets.watermark import (
    Bound,
    Plan,
    Window,
    WindowPolicy,
    decode_bound,
    encode_bound,
    plan_windows,
)


@dataclass(frozen=True)
class WatermarkCursor:
    """The sensor's cursor: the high watermark requested, and when the last window was cut."""

    requested_hi: Bound | None = None
    cut_at: float | None = None  # seconds since the epoch

    def serialize(self) -> str:
        return json.dumps({
            "requested_hi": None if self.requested_hi is None else encode_bound(self.requested_hi),
            "cut_at": self.cut_at,
        })

    @classmethod
    def parse(cls, text: str | None) -> WatermarkCursor:
        if not text:
            return cls()
        data = json.loads(text)
        hi = data.get("requested_hi")
        return cls(None if hi is None else decode_bound(hi), data.get("cut_at"))


def highest_partition_hi(instance: DagsterInstance, partitions_name: str) -> Bound | None:
    """The upper bound of the highest window among the existing partitions."""
    windows = []
    for key in instance.get_dynamic_partitions(partitions_name):
        try:
            windows.append(Window.from_key(key))
        except ValueError:
            continue  # a partition added by hand with another kind of key
    return max((w.hi for w in windows), default=None)


def plan_next_windows(source: Source, requested_hi: Bound | None,
                      since_last_cut: timedelta | None = None, log: Log | None = None) -> Plan:
    """Ask ``source`` for its cursor range and plan the windows that follow ``requested_hi``.
    A transient error is retried by the source's retry policy (each retry logged to ``log``);
    the last one raises TransientError naming the source and the cause."""
    what = f"source {source.name!r}: reading the cursor range"

    def read() -> tuple[WindowPolicy, Bound | None, Bound | None]:
        policy = WindowPolicy.from_spec(source.spec, source.cursor_type)
        return (policy, *source.cursor_range())

    retry = source.spec.retry_policy()
    try:
        policy, oldest, newest = retry.call(read, what=what, log=log)
    except Exception as exc:
        if not is_transient(exc):
            raise
        raise TransientError(f"{what}: {describe(exc)} (gave up after {retry.retries + 1} "
                             f"attempts)") from exc
    return plan_windows(requested_hi, oldest, newest, policy, since_last_cut)


def build_watermark_sensor(
    source_name: str,
    spec: SourceSpecBase,
    partitions: DynamicPartitionsDefinition,
    job: JobDefinition | UnresolvedAssetJobDefinition,
    committed_watermark: Callable[[], Bound | None] | None = None,
) -> SensorDefinition:
    """The sensor that cuts ``source_name``'s new rows into partitions and runs ``job``.

    ``committed_watermark`` returns what the sinks have committed (see
    :mod:`etl_assets.sinks.postgres.watermark`); it is asked only when the sensor's cursor
    is empty and no partition exists yet.
    """

    @sensor(
        name=f"{source_name}_watermark_sensor",
        job=job,
        minimum_interval_seconds=spec.sensor_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING if spec.sensor_running
        else DefaultSensorStatus.STOPPED,
        description=f"Cuts new rows of source {source_name} into windows of {spec.cursor} "
                    f"and launches a run for each.",
    )
    @masked_errors()  # a tick's error is stored and shown in the UI
    def watermark_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        state = WatermarkCursor.parse(context.cursor)
        requested_hi = state.requested_hi
        if requested_hi is None:
            assert partitions.name is not None
            requested_hi = highest_partition_hi(context.instance, partitions.name)
            if requested_hi is None and committed_watermark is not None:
                requested_hi = committed_watermark()
                if requested_hi is not None:
                    context.log.info(f"{source_name}: starting after the watermark its sinks "
                                     f"committed: {encode_bound(requested_hi)}")
        since = None if state.cut_at is None else timedelta(seconds=time.time() - state.cut_at)
        source = open_source(source_name, spec)
        try:
            plan = plan_next_windows(source, requested_hi, since, log=context.log)
        finally:
            source.dispose()
        if not plan.windows:
            return SkipReason(f"{source_name}: {plan.reason}")
        keys = [window.key for window in plan.windows]
        context.log.info(f"{source_name}: {plan.reason}: {len(keys)} window(s), "
                         f"{keys[0]} .. {keys[-1]}")
        return SensorResult(
            run_requests=[RunRequest(partition_key=key, run_key=key) for key in keys],
            dynamic_partitions_requests=[partitions.build_add_request(keys)],
            cursor=WatermarkCursor(plan.high_watermark, time.time()).serialize(),
        )

    return watermark_sensor
