"""One output per partition, whether a run materializes one partition or a range of them.

A run of one partition passes a ``RecordBatchStream`` between assets. A single-run backfill
(``backfill: single_run``) materializes a range of partitions in one step: it passes
``PartitionStreams``, one stream per partition in partition order, so each window is still
staged, written, counted and checked on its own, and each partition's materialization
records its own metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from dagster import InputContext, OutputContext

from etl_assets.batches import RecordBatchStream
from etl_assets.progress import WindowsProgress

PartitionStreams = Mapping[str, RecordBatchStream]
"""The streams of a range run, by partition key, in partition order."""

PartitionOutput = RecordBatchStream | PartitionStreams


class LazyStreams(Mapping[str, RecordBatchStream]):
    """The stream of each of ``keys``, made by ``make(key)`` only when it is looked up, so a
    range of 100 windows opens one extraction (or pins one staged version) at a time."""

    def __init__(self, keys: list[str], make: Callable[[str], RecordBatchStream]) -> None:
        self._keys = keys
        self._make = make

    def __getitem__(self, key: str) -> RecordBatchStream:
        if key not in self._keys:
            raise KeyError(key)
        return self._make(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def partition_keys(context: OutputContext | InputContext) -> list[str | None]:
    """The partitions a step writes (output) or reads (input): ``[None]`` when unpartitioned.
    In no particular order (Dagster keeps a range's keys as a set)."""
    return list(context.asset_partition_keys) if context.has_asset_partitions else [None]


def partition_streams(context: OutputContext,
                      obj: PartitionOutput) -> Iterator[tuple[str | None, RecordBatchStream]]:
    """Each (partition, stream) of ``obj``, which a step gives its IO manager."""
    where = context.asset_key.to_user_string()
    if isinstance(obj, RecordBatchStream):
        keys = partition_keys(context)
        if len(keys) != 1:
            raise TypeError(f"{where}: one stream for {len(keys)} partitions")
        yield keys[0], obj
        return
    if not isinstance(obj, Mapping):
        raise TypeError(f"{where}: expected a RecordBatchStream or one per partition, got "
                        f"{type(obj).__name__}")
    expected = partition_keys(context)  # in no particular order
    if set(obj) != set(expected):
        raise TypeError(f"{where}: streams for partitions {sorted(obj)}, the step writes "
                        f"{sorted(k for k in expected if k is not None)}")
    for key in obj:  # the asset's order: the partitions definition's
        yield key, obj[key]


def add_partition_metadata(context: OutputContext, partition: str | None,
                           metadata: Mapping[str, object]) -> None:
    """Record ``metadata`` on the materialization of ``partition``: the output's own metadata
    when the step writes one partition, that partition's alone in a range."""
    if partition is None or context.has_partition_key:
        context.add_output_metadata(dict(metadata))  # type: ignore[arg-type]
        return
    step = context.step_context
    accumulator = getattr(step, "_metadata_accumulator", None)
    if accumulator is None:  # not Dagster 1.13's step context: its public, slower way
        step.add_asset_metadata(dict(metadata), asset_key=context.asset_key,
                                partition_key=partition)
        return
    # What add_asset_metadata does, without checking the key against the whole range again:
    # that reads every dynamic partition from the instance each time (22 ms a window of a
    # 100-window run; the key comes from the step's own range).
    step._metadata_accumulator = accumulator.with_additional_asset_metadata(
        asset_key=context.asset_key, metadata=dict(metadata), partition_key=partition)


def windows_progress(context: OutputContext, what: str) -> WindowsProgress | None:
    """The progress log of a range run's windows (``asset: 40 of 100 windows staged...``);
    None in a run of one partition."""
    keys = partition_keys(context)
    if len(keys) < 2:
        return None
    return WindowsProgress(context.log, context.asset_key.to_user_string(), what, len(keys))
