"""Spec -> Dagster definitions: assets, IO managers, jobs and sensors.

For each source: a dynamic partitions definition (one partition per window), the source asset
(extract one window into staging), one sink asset per sink, a job over them, and the
watermark sensor. Each asset's code version hashes only what changes a partition's rows (see
:mod:`etl_assets.code_versions`), so the UI marks partitions made by an older version of a
pipeline and nothing else; governance settings become ``@asset`` arguments
(:mod:`etl_assets.governance`); sink assets carry their checks (:mod:`etl_assets.asset_checks`).
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotation of an asset
# function at definition time and refuses a string.
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
from dagster import Any as AnyValue
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    BetaWarning,
    Definitions,
    DynamicPartitionsDefinition,
    JobDefinition,
    Output,
    PreviewWarning,
    SensorDefinition,
    TableColumnDep,
    TableColumnLineage,
    asset,
    define_asset_job,
)

from etl_assets.asset_checks import Tally, check_specs, evaluations
from etl_assets.batches import RecordBatchStream
from etl_assets.code_versions import sink_code_version, source_code_version
from etl_assets.dead_letters import build_replay_job
from etl_assets.executors import executor_definition
from etl_assets.governance import sink_asset_arguments, source_asset_arguments
from etl_assets.partition_outputs import LazyStreams, PartitionOutput
from etl_assets.run_monitoring import register_run_worker
from etl_assets.secrets import mask_parameters, mask_text, masked_errors
from etl_assets.sensors import build_watermark_sensor
from etl_assets.sinks.base import SinkIOManager
from etl_assets.sinks.registry import sink_io_manager
from etl_assets.sources.base import Source, SourceSpecBase
from etl_assets.sources.extraction import Extraction
from etl_assets.sources.registry import open_source
from etl_assets.spec import PipelineSpec
from etl_assets.staging.io_manager import ParquetStagingIOManager
from etl_assets.transforms import load_transform
from etl_assets.watermark import Bound, Window, partitions_name

STAGING_IO_MANAGER = "staging_io_manager"


def partitions_for(source_name: str) -> DynamicPartitionsDefinition:
    """The dynamic partitions (one per window) of ``source_name``."""
    return DynamicPartitionsDefinition(name=partitions_name(source_name))


def build_source_asset(name: str, spec: SourceSpecBase, partitions: DynamicPartitionsDefinition,
                       op_tags: Mapping[str, str] | None = None) -> AssetsDefinition:
    """The asset that extracts one window of ``name`` into staging (each window of a range, in
    turn, in a single-run backfill); ``op_tags`` go to its step (the executor's, e.g. a Celery
    queue)."""
    where = spec.describe()

    @asset(
        name=name,
        partitions_def=partitions,
        io_manager_key=STAGING_IO_MANAGER,
        code_version=source_code_version(spec, spec.code_of_functions(f"source {name!r}")),
        kinds=spec.asset_kinds() | {"parquet"},
        **source_asset_arguments(name, spec, description=(
            f"Rows of {where} with {spec.cursor} in the partition's window, staged as "
            f"parquet.")),
        dagster_type=AnyValue,  # Dagster cannot read a union annotation: see PartitionOutput
        op_tags=op_tags,
    )
    def source_asset(context: AssetExecutionContext) -> PartitionOutput:
        register_run_worker(context)  # so that run monitoring can tell when the run is killed
        keys = context.partition_keys
        with masked_errors():  # the rows are read later, by the staging IO manager
            source = open_source(name, spec)  # one for every window of a range run
            location = source.location()  # said once when it is what `where` says
            at = "" if location == where else f" at {location}"
            context.log.info(f"{name}: extracting {spec.cursor} in "
                             f"{_windows(keys)} from {where}{at}")
        reader_named: list[str] = []  # the reader is logged once, when the first window starts

        def extraction(key: str) -> Extraction:
            with masked_errors():
                window = Window.from_key(key)

            def start() -> RecordBatchStream:
                stream = source.extract(window)
                if not reader_named:  # known once the source is reflected (retried in here)
                    reader_named.append(source.reader())
                    context.log.info(f"{name}: reading with reader {reader_named[0]}")
                last = key == keys[-1]  # the source is released after the last window
                return RecordBatchStream(
                    stream.schema, _disposing(stream, source) if last else stream,
                    stream.version, stream.notes)

            return Extraction(f"source {name!r} window {key}", start, spec.retry_policy(),
                              context.log)

        if context.has_partition_key:
            return extraction(context.partition_key)
        return LazyStreams(keys, extraction)

    return source_asset


def _windows(keys: Sequence[str]) -> str:
    """How logs name the windows of a run: the one window, or how many from where to where."""
    if len(keys) == 1:
        return str(Window.of_partition(keys[0]) or keys[0])
    return f"{len(keys)} windows, {keys[0]} to {keys[-1]}"


def _disposing(stream: RecordBatchStream, source: Source) -> Iterator[pa.RecordBatch]:
    try:
        yield from stream
    finally:
        source.dispose()


def build_sink_asset(name: str, io_manager_key: str, io_manager: SinkIOManager[Any],
                     source: SourceSpecBase, partitions: DynamicPartitionsDefinition,
                     op_tags: Mapping[str, str] | None = None) -> AssetsDefinition:
    """The asset that writes the staged rows of ``sink.source`` through ``sink``'s transform,
    then checks each partition it wrote (see :mod:`etl_assets.asset_checks`); ``op_tags`` go
    to its step."""
    sink = io_manager.spec
    source_name = sink.source
    transform: Callable[..., Any] | None = (
        load_transform(sink.transform, f"sink {name!r}") if sink.transform else None
    )
    # A transform that makes documents, not batches, is applied by the sink's IO manager.
    maps_batches = transform is not None and sink.transform_makes_batches
    source_key = source.asset_key(source_name)
    specs = check_specs(sink.checks, io_manager, sink.asset_key(name), partitions)
    declared = io_manager.declared_column_schema()

    def newest_in_source() -> Bound | None:
        def read() -> Bound | None:
            opened = open_source(source_name, source)
            try:
                return opened.cursor_range()[1]
            finally:
                opened.dispose()

        return source.retry_policy().call(
            read, what=f"source {source_name!r}: reading the newest {source.cursor}")

    @asset(
        name=name,
        partitions_def=partitions,
        io_manager_key=io_manager_key,
        ins={"staged": AssetIn(key=source_key, dagster_type=AnyValue)},
        dagster_type=AnyValue,
        code_version=sink_code_version(io_manager.setup, transform),
        kinds=sink.asset_kinds(),
        **sink_asset_arguments(sink, source_name, source, description=mask_text(
            f"Rows of {source_name} written to the {sink.kind} sink "
            f"{sink.describe_target()}")),
        check_specs=specs,
        metadata={"dagster/column_schema": declared} if declared else None,
        op_tags=op_tags,
    )
    def sink_asset(context: AssetExecutionContext, staged: PartitionOutput) -> object:
        """Yields the output, then each check's evaluation (typed ``object``: Dagster reads
        a generator's annotation as its output type)."""
        register_run_worker(context)
        tallies = {key: Tally(io_manager.setup.primary_key if io_manager.counts_windows
                              else []) for key in context.partition_keys}

        def prepared(key: str, stream: RecordBatchStream) -> RecordBatchStream:
            return tallies[key].counting(stream.map(transform) if maps_batches and transform
                                         else stream)

        if isinstance(staged, RecordBatchStream):
            first = staged
            out: PartitionOutput = prepared(context.partition_key, staged)
        else:
            first = staged[context.partition_keys[0]]
            out = LazyStreams(list(context.partition_keys),
                              lambda key: prepared(key, staged[key]))
        lineage = _column_lineage(source_key, first.schema,
                                  first.map(transform).schema if maps_batches and transform
                                  else first.schema)
        yield Output(out, metadata={"dagster/column_lineage": lineage} if lineage else None)
        # The IO manager has written every partition: check what the target holds.
        with masked_errors():
            yield from evaluations(specs, sink.checks, io_manager, tallies, context.instance,
                                   newest_in_source, range_run=not context.has_partition_key)
        if not context.has_partition_key:
            # A range run's evaluations are events, not results: each check's step output,
            # which Dagster requires, is given here.
            for check in specs:
                yield Output(None, output_name=context.assets_def
                             .get_output_name_for_asset_check_key(check.key))

    return sink_asset


def _column_lineage(source_key: AssetKey, given: pa.Schema,
                    written: pa.Schema) -> TableColumnLineage | None:
    """Each written column that the source gave under the same name comes from that column
    (a transform that renames or derives a column breaks the link for that column only)."""
    deps = {column: [TableColumnDep(asset_key=source_key, column_name=column)]
            for column in written.names if column in given.names}
    return TableColumnLineage(deps) if deps else None


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
    # We use Dagster's beta backfill policies and preview partitioned checks on purpose: their
    # warnings would greet every `dagster` command that loads the definitions.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        warnings.simplefilter("ignore", PreviewWarning)
        return _definitions(spec)


def _definitions(spec: PipelineSpec) -> Definitions:
    mask_parameters(spec.masked_parameters)
    # every job's, and the default of Dagster's own (UI materializations, backfills)
    executor = executor_definition(spec.executor)
    assets: list[AssetsDefinition] = []
    jobs: list[JobDefinition | Any] = []
    sensors: list[SensorDefinition] = []
    resources: dict[str, Any] = {
        STAGING_IO_MANAGER: ParquetStagingIOManager(spec.staging),
    }
    for source_name, source in spec.sources.items():
        partitions = partitions_for(source_name)
        keys = [source.asset_key(source_name)]
        assets.append(build_source_asset(source_name, source, partitions,
                                         spec.executor.step_tags(source_name)))
        io_managers = []
        for sink_name in spec.sinks_of(source_name):
            io_manager_key = f"{sink_name}_io_manager"
            io_manager = sink_io_manager(spec.sink_setup(sink_name))
            io_managers.append(io_manager)
            resources[io_manager_key] = io_manager
            if hasattr(io_manager, "replay_dead_letters"):
                jobs.append(build_replay_job(
                    sink_name, io_manager_key,
                    spec.sinks[sink_name].asset_key(sink_name).to_user_string()))
            assets.append(build_sink_asset(sink_name, io_manager_key, io_manager, source,
                                           partitions, spec.executor.step_tags(sink_name)))
            keys.append(spec.sinks[sink_name].asset_key(sink_name))
        job = define_asset_job(
            f"{source_name}_job",
            selection=keys,
            executor_def=executor,
            description=f"Extract one window of {source_name} and write it to every sink.",
        )
        jobs.append(job)
        sensors.append(build_watermark_sensor(
            source_name, source, partitions, job,
            committed_watermark=committed_watermark_reader(io_managers)))
    return Definitions(assets=assets, jobs=jobs, sensors=sensors, resources=resources,
                       executor=executor)
