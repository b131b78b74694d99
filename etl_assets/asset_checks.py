"""The asset checks of a sink, evaluated per partition in the run that writes it.

- ``row_count_reconciliation``: the rows the run gave the sink for a window against what the
  target holds of them: for a keyed sink, each distinct key held with the window's cursor or
  a later one (a later window replaced it: newest wins); for a sink without a key, the
  target's rows in the window. ERROR severity; ``blocking: true`` fails the run.
- ``schema_drift``: a column the sink was given that the target lacks (WARN).
- ``watermark_lag``: the source's newest cursor value against the newest window the sink
  holds, over ``max_watermark_lag`` (WARN).

A check is declared only where the sink can answer it (``SinkIOManager.counts_windows``,
``has_columns``) and where the spec asks for it (``checks:`` of the sink).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pyarrow as pa
from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DynamicPartitionsDefinition,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from etl_assets.batches import RecordBatchStream
from etl_assets.secrets import mask_text
from etl_assets.sinks.base import SinkIOManager, WindowCount
from etl_assets.sinks.check_settings import CheckSettings
from etl_assets.watermark import Bound, Size, Window, before, distance, narrower, parse_duration

ROW_COUNT = "row_count_reconciliation"
SCHEMA_DRIFT = "schema_drift"
WATERMARK_LAG = "watermark_lag"


def check_specs(settings: CheckSettings, io_manager: SinkIOManager[Any],
                asset_key: AssetKey,
                partitions: DynamicPartitionsDefinition) -> list[AssetCheckSpec]:
    """The checks ``settings`` asks for that the sink can answer, per partition."""
    wanted = [
        (ROW_COUNT, settings.row_count and io_manager.counts_windows,
         "Rows the run gave the sink for the window (distinct keys when keyed) = rows the "
         "target holds of the window, plus keys a later window replaced."),
        (SCHEMA_DRIFT, settings.schema_drift and io_manager.has_columns,
         "Every column the sink is given is a column of the target."),
        (WATERMARK_LAG, settings.max_watermark_lag is not None,
         f"The source's newest cursor value is at most {settings.max_watermark_lag} ahead of "
         f"the newest window the sink holds."),
    ]
    return [AssetCheckSpec(name, asset=asset_key, description=description,
                           blocking=settings.blocking and name == ROW_COUNT,
                           partitions_def=partitions)
            for name, enabled, description in wanted if enabled]


class Tally:
    """What a run gave a sink for one partition: rows, column names and, for a keyed sink,
    the key columns of every row (to count distinct keys and ask the target about them)."""

    def __init__(self, key: list[str]) -> None:
        self.key = key
        self.rows = 0
        self.columns: list[str] = []
        self._keys: list[pa.Table] = []

    def counting(self, stream: RecordBatchStream) -> RecordBatchStream:
        """``stream``, tallied as the IO manager reads it."""
        self.columns = list(stream.schema.names)
        if not all(k in self.columns for k in self.key):
            self.key = []  # a transform dropped the key: counted as rows, like a keyless sink
        if self.key:  # so that a window without rows still gives (no) keys
            self._keys.append(pa.Table.from_batches(
                [], pa.schema([stream.schema.field(k) for k in self.key])))

        def tallied() -> Iterator[pa.RecordBatch]:
            for batch in stream:
                self.rows += batch.num_rows
                if self.key:
                    self._keys.append(pa.Table.from_batches([batch.select(self.key)]))
                yield batch

        return RecordBatchStream(stream.schema, tallied(), stream.version, stream.notes)

    def keys(self) -> pa.Table | None:
        """The key columns of every row given (None for a sink without a key)."""
        if not self.key:
            return None
        return pa.concat_tables(self._keys)

    def expected(self) -> int:
        """The rows the target should hold of the window: distinct keys when keyed."""
        keys = self.keys()
        if keys is None:
            return self.rows
        return keys.group_by(self.key, use_threads=False).aggregate([]).num_rows


def evaluations(declared: list[AssetCheckSpec], settings: CheckSettings,
                io_manager: SinkIOManager[Any], tallies: dict[str, Tally],
                instance: DagsterInstance, newest_in_source: Callable[[], Bound | None],
                range_run: bool) -> Iterator[AssetCheckResult | AssetCheckEvaluation]:
    """The result of each ``declared`` check for each partition the run wrote: Dagster's
    ``AssetCheckResult`` in a run of one partition; in a range run, an
    ``AssetCheckEvaluation`` naming its partition (a result cannot name one)."""
    specs = {spec.name: spec for spec in declared}
    if not specs:
        return
    asset_key = declared[0].asset_key
    # What does not depend on the window is asked once a run: the source's newest cursor
    # value, the target's columns and (range runs) the partitions' materializations.
    lag = _trying(lambda: _lag(settings, io_manager, asset_key, list(tallies), instance,
                               newest_in_source)) if WATERMARK_LAG in specs else None
    columns: list[str] | Exception | None = None
    if SCHEMA_DRIFT in specs:
        try:
            columns = io_manager.target_columns()
        except Exception as exc:  # the target out of reach: the check fails, the run goes on
            columns = exc
    targets = _target_materializations(instance, asset_key, list(tallies)) if range_run else {}
    counts = _counts(io_manager, tallies) if ROW_COUNT in specs else {}
    for partition, tally in tallies.items():
        outcomes: list[tuple[str, AssetCheckSeverity, Outcome]] = []
        if ROW_COUNT in specs:
            # rows without their cursor column cannot be counted: a warning, not a loss
            counted = io_manager.setup.cursor_column in tally.columns
            outcomes.append((ROW_COUNT, AssetCheckSeverity.ERROR if counted
                             else AssetCheckSeverity.WARN,
                             _reconcile(io_manager, partition, tally, counts.get(partition))))
        if SCHEMA_DRIFT in specs:
            outcomes.append((SCHEMA_DRIFT, AssetCheckSeverity.WARN,
                             _failed(columns) if isinstance(columns, Exception)
                             else _drift(columns, tally)))
        if lag is not None:
            outcomes.append((WATERMARK_LAG, AssetCheckSeverity.WARN, lag))
        target = targets.get(partition)
        for name, severity, (passed, description, metadata) in outcomes:
            if range_run:
                yield AssetCheckEvaluation(
                    asset_key=asset_key, check_name=name, passed=passed,
                    metadata=metadata, severity=severity,  # type: ignore[arg-type]
                    description=description, partition=partition,
                    blocking=specs[name].blocking, target_materialization_data=target)
            else:
                yield AssetCheckResult(asset_key=asset_key, check_name=name, passed=passed,
                                       metadata=metadata, severity=severity,  # type: ignore[arg-type]
                                       description=description)


Outcome = tuple[bool, str, dict[str, object]]
"""(passed, description, metadata) of one check for one partition."""


def _trying(check: Callable[[], Outcome]) -> Outcome:
    """``check()``; when the target or the source cannot answer, a failed check saying why
    (a check that cannot run fails; it does not fail the run unless it is blocking)."""
    try:
        return check()
    except Exception as exc:
        return _failed(exc)


def _failed(error: Exception) -> Outcome:
    text = mask_text(" ".join(str(error).split()) or type(error).__name__)
    return False, f"could not check: {text}", {"error": text}


def _counts(io_manager: SinkIOManager[Any],
            tallies: dict[str, Tally]) -> dict[str, WindowCount | Exception]:
    """What the target holds of each partition's window that can be reconciled, asked in one
    go (``count_windows``); the error instead when the target cannot answer."""
    asks = {partition: (window, tally.keys()) for partition, tally in tallies.items()
            if (window := Window.of_partition(partition)) is not None
            and io_manager.setup.cursor_column in tally.columns}
    if not asks:
        return {}
    try:
        return dict(zip(asks, io_manager.count_windows(list(asks.values())), strict=True))
    except Exception as exc:  # the target out of reach: the check fails, the run goes on
        return dict.fromkeys(asks, exc)


def _reconcile(io_manager: SinkIOManager[Any], partition: str, tally: Tally,
               count: WindowCount | Exception | None) -> Outcome:
    window = Window.of_partition(partition)
    if window is None:
        return True, f"partition {partition} is no window: nothing to reconcile", {}
    cursor = io_manager.setup.cursor_column
    if not tally.columns and not tally.rows:  # the source could not tell them: no rows
        return True, f"window {window}: the source gave no rows", {"source_rows": 0}
    if cursor not in tally.columns or count is None:
        return False, (f"cannot reconcile: the rows written have no cursor column {cursor!r} "
                       f"(a transform dropped it?); set checks.row_count: false"), {}
    if isinstance(count, Exception):
        return _failed(count)
    expected = tally.expected()
    held = count.rows + count.newer
    what = "distinct keys" if tally.key else "rows"
    metadata: dict[str, object] = {"source_rows": expected, "target_rows": count.rows,
                                   "replaced_by_later_windows": count.newer,
                                   "difference": held - expected}
    if held == expected:
        return True, (f"the target holds all {expected:,} {what} of window {window}"
                      + (f" ({count.newer:,} replaced by later windows)" if count.newer else "")
                      ), metadata
    return False, (f"window {window}: the source gave {expected:,} {what}, the target holds "
                   f"{count.rows:,}" + (f" and {count.newer:,} replaced by later windows"
                                        if count.newer else "")), metadata


def _drift(target: list[str] | None, tally: Tally) -> Outcome:
    if not tally.columns:
        return True, "no columns were given (a window without rows)", {}
    if target is None:
        return False, "the target does not exist", {}
    have = {column.casefold() for column in target}
    missing = [column for column in tally.columns if column.casefold() not in have]
    metadata: dict[str, object] = {"missing_in_target": ", ".join(missing) or "none"}
    if missing:
        return False, f"the target lacks column(s) {', '.join(missing)}", metadata
    return True, f"the target has all {len(tally.columns)} columns", metadata


def _lag(settings: CheckSettings, io_manager: SinkIOManager[Any],
         asset_key: AssetKey, written: list[str], instance: DagsterInstance,
         newest_in_source: Callable[[], Bound | None]) -> Outcome:
    newest = newest_in_source()
    held = _newest_held(io_manager, asset_key, written, instance)
    limit = settings.max_watermark_lag
    assert limit is not None
    metadata: dict[str, object] = {"source_newest": str(newest), "sink_watermark": str(held),
                                   "max_lag": str(limit)}
    if newest is None:
        return True, "the source has no rows", metadata
    if held is None:
        return False, f"the sink holds no window; the source's newest is {newest}", metadata
    lag: Size = distance(held, newest) if before(held, newest) else _zero(newest)
    metadata["lag"] = str(lag)
    allowed: Size = parse_duration(limit) if isinstance(limit, str) else limit
    passed = not narrower(allowed, lag)
    return passed, (f"the sink holds up to {held}, {lag} behind the source's newest {newest} "
                    f"(at most {limit})"), metadata


def _zero(like: Bound) -> Size:
    return 0 if isinstance(like, int) else timedelta(0)


def _newest_held(io_manager: SinkIOManager[Any], asset_key: AssetKey,
                 written: list[str], instance: DagsterInstance) -> Bound | None:
    """The sink's committed watermark where it keeps one, else the highest ``hi`` of the
    windows it has materialized (this run's included)."""
    if io_manager.keeps_watermark:
        return io_manager.committed_watermark()
    keys = set(instance.get_materialized_partitions(asset_key)) | set(written)
    windows = [window for window in map(Window.of_partition, keys) if window is not None]
    return max((window.hi for window in windows), default=None)


def _target_materializations(
        instance: DagsterInstance, asset_key: AssetKey,
        partitions: list[str]) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """The latest materialization of each of ``partitions``, which a check evaluation names."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, asset_partitions=partitions),
        limit=len(partitions) * 4).records  # newest first
    found: dict[str, AssetCheckEvaluationTargetMaterializationData] = {}
    for record in records:
        partition = record.partition_key
        if partition is not None and partition not in found:
            found[partition] = AssetCheckEvaluationTargetMaterializationData(
                run_id=record.event_log_entry.run_id, storage_id=record.storage_id,
                timestamp=record.timestamp)
    return found
