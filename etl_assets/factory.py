"""Spec -> Dagster definitions: assets, IO managers, jobs and sensors.

For each source: a dynamic partitions definition (one partition per window), the source asset
(extract one window into staging), one sink asset per sink, a job over them, and the
watermark sensor. Each asset's code version is a hash of its spec and transform code, so the
UI shows which partitions were made by an older version of a pipeline.
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotation of an asset
# function at definition time and refuses a string.
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    Definitions,
    DynamicPartitionsDefinition,
    JobDefinition,
    SensorDefinition,
    asset,
    define_asset_job,
    in_process_executor,
)

from etl_assets.batches import RecordBatchStream
from etl_assets.dead_letters import build_replay_job
from etl_assets.run_monitoring import register_run_worker
from etl_assets.secrets import mask_parameters, mask_text, masked_errors
from etl_assets.sensors import build_watermark_sensor
from etl_assets.sinks.base import SinkIOManager, SinkSpecBase
from etl_assets.sinks.registry import sink_io_manager
from etl_assets.sources.base import Source, SourceSpecBase
from etl_assets.sources.extraction import Extraction
from etl_assets.sources.registry import open_source
from etl_assets.spec import PipelineSpec
from etl_assets.staging.io_manager import ParquetStagingIOManager
from etl_assets.transforms import code_of, load_transform
from etl_assets.watermark import Bound, Window

STAGING_IO_MANAGER = "staging_io_manager"


def _version(*parts: object) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def partitions_for(source_name: str) -> DynamicPartitionsDefinition:
    """The dynamic partitions (one per window) of ``source_name``."""
    return DynamicPartitionsDefinition(name=f"{source_name}_windows")


def build_source_asset(name: str, spec: SourceSpecBase,
                       partitions: DynamicPartitionsDefinition) -> AssetsDefinition:
    """The asset that extracts one window of ``name`` into staging."""
    where = spec.describe()

    @asset(
        name=name,
        partitions_def=partitions,
        io_manager_key=STAGING_IO_MANAGER,
        group_name=name,
        code_version=_version(spec.model_dump()),
        description=f"Rows of {where} with {spec.cursor} in the partition's window, staged "
                    f"as parquet.",
        kinds={spec.kind, "parquet"},
    )
    def source_asset(context: AssetExecutionContext) -> RecordBatchStream:
        register_run_worker(context)  # so that run monitoring can tell when the run is killed
        with masked_errors():  # the rows are read later, by the staging IO manager
            window = Window.from_key(context.partition_key)
            source = open_source(name, spec)
            context.log.info(f"{name}: extracting {spec.cursor} in {window} from {where} at "
                             f"{source.location()}")

        def start() -> RecordBatchStream:
            stream = source.extract(window)
            return RecordBatchStream(stream.schema, _disposing(stream, source), stream.version)

        return Extraction(f"source {name!r} window {context.partition_key}", start,
                          spec.retry_policy(), context.log)

    return source_asset


def _disposing(stream: RecordBatchStream, source: Source) -> Iterator[pa.RecordBatch]:
    try:
        yield from stream
    finally:
        source.dispose()


def build_sink_asset(name: str, sink: SinkSpecBase, partitions: DynamicPartitionsDefinition,
                     io_manager_key: str) -> AssetsDefinition:
    """The asset that writes the staged rows of ``sink.source`` through ``sink``'s transform."""
    transform: Callable[..., Any] | None = (
        load_transform(sink.transform, f"sink {name!r}") if sink.transform else None
    )

    @asset(
        name=name,
        partitions_def=partitions,
        io_manager_key=io_manager_key,
        ins={"staged": AssetIn(key=AssetKey(sink.source))},
        group_name=sink.source,
        code_version=_version(sink.model_dump(), code_of(transform) if transform else None),
        description=mask_text(f"Rows of {sink.source} written to the {sink.kind} sink "
                              f"{sink.describe_target()}"),
        kinds={sink.kind},
    )
    def sink_asset(context: AssetExecutionContext, staged: RecordBatchStream) -> RecordBatchStream:
        register_run_worker(context)
        # A transform that makes documents, not batches, is applied by the sink's IO manager.
        return staged.map(transform) if transform and sink.transform_makes_batches else staged

    return sink_asset


def committed_watermark_reader(
        io_managers: list[SinkIOManager[Any]]) -> Callable[[], Bound | None] | None:
    """What a source's sinks have committed: the lowest of the watermarks of those that keep
    one, or None when one has none (a new sink must get the whole history). None when no sink
    keeps a watermark."""
    keeping = [m for m in io_managers if m.keeps_watermark]
    if not keeping:
        return None

    def read() -> Bound | None:
        marks = []
        for io_manager in keeping:
            mark = io_manager.committed_watermark()
            if mark is None:
                return None
            marks.append(mark)
        return min(marks)

    return read


def build_definitions(spec: PipelineSpec) -> Definitions:
    """Every asset, IO manager, job and sensor that ``spec`` declares."""
    mask_parameters(spec.masked_parameters)
    assets: list[AssetsDefinition] = []
    jobs: list[JobDefinition | Any] = []
    sensors: list[SensorDefinition] = []
    resources: dict[str, Any] = {
        STAGING_IO_MANAGER: ParquetStagingIOManager(spec.staging),
    }
    for source_name, source in spec.sources.items():
        partitions = partitions_for(source_name)
        keys = [AssetKey(source_name)]
        assets.append(build_source_asset(source_name, source, partitions))
        io_managers = []
        for sink_name in spec.sinks_of(source_name):
            io_manager_key = f"{sink_name}_io_manager"
            io_manager = sink_io_manager(spec.sink_setup(sink_name))
            io_managers.append(io_manager)
            resources[io_manager_key] = io_manager
            if hasattr(io_manager, "replay_dead_letters"):
                jobs.append(build_replay_job(sink_name, io_manager_key))
            assets.append(build_sink_asset(sink_name, spec.sinks[sink_name], partitions,
                                           io_manager_key))
            keys.append(AssetKey(sink_name))
        job = define_asset_job(
            f"{source_name}_job",
            selection=keys,
            executor_def=in_process_executor,
            description=f"Extract one window of {source_name} and write it to every sink.",
        )
        jobs.append(job)
        sensors.append(build_watermark_sensor(
            source_name, source, partitions, job,
            committed_watermark=committed_watermark_reader(io_managers)))
    return Definitions(assets=assets, jobs=jobs, sensors=sensors, resources=resources)
