"""Spec -> Dagster definitions: assets, IO managers, jobs and sensors.

For each source: a dynamic partitions definition (one partition per window), the source asset
(extract one window into staging), one sink asset per sink, a job over them, and the
watermark sensor. Each asset's code version is a hash of its spec and transform code, so the
UI shows which partitions were made by an older version of a pipeline.
"""


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
    ConfigurableIOManager,
    Definitions,
    DynamicPartitionsDefinition,
    EnvVar,
    JobDefinition,
    SensorDefinition,
    asset,
    define_asset_job,
    in_process_executor,
)

from etl_assets.batches import RecordBatchStream
from etl_assets.connections import dagster_url_value, libpq_url, resolve_url
from etl_assets.dead_letters import build_replay_job
from etl_assets.run_monitoring import register_run_worker
from etl_assets.secrets import mask_parameters, mask_text, mask_url, masked_errors
from etl_assets.sensors import build_watermark_sensor
from etl_assets.sinks.files.io_manager import ParquetSinkIOManager
from etl_assets.sinks.http.io_manager import HttpApiIOManager
from etl_assets.sinks.postgres.declared import load_declared_table
from etl_assets.sinks.postgres.watermark import read_watermark
from etl_assets.sinks.postgres.writer import PostgresUpsertIOManager
from etl_assets.sources.extraction import Extraction
from etl_assets.sources.sql.source import SqlSource
from etl_assets.spec import (
    BigQuerySinkSpec,
    HttpSinkSpec,
    ParquetSinkSpec,
    PipelineSpec,
    PostgresSinkSpec,
    SinkSpec,
    SourceSpec,
)
from etl_assets.staging.io_manager import ParquetStagingIOManager
from etl_assets.transforms import code_of, load_transform
from etl_assets.watermark import Bound, Window

STAGING_IO_MANAGER = "staging_io_manager"


def _version(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def partitions_for(source_name: str) -> DynamicPartitionsDefinition:
    """The dynamic partitions (one per window) of ``source_name``."""
    return DynamicPartitionsDefinition(name=f"{source_name}_windows")


def build_source_asset(name: str, spec: SourceSpec,
                       partitions: DynamicPartitionsDefinition) -> AssetsDefinition:
    """The asset that extracts one window of ``name`` into staging."""
    where = spec.table_name.display if spec.table else "a query"

    @asset(
        name=name,
        partitions_def=partitions,
        io_manager_key=STAGING_IO_MANAGER,
        group_name=name,
        code_version=_version(spec.model_dump()),
        description=f"Rows of {where} with {spec.cursor} in the partition's window, staged "
                    f"as parquet.",
        kinds={"sql", "parquet"},
    )
    def source_asset(context: AssetExecutionContext) -> RecordBatchStream:
        register_run_worker(context)  # so that run monitoring can tell when the run is killed
        with masked_errors():  # the rows are read later, by the staging IO manager
            window = Window.from_key(context.partition_key)
            source = SqlSource(name, spec, resolve_url(spec.connection, f"source {name!r}"))
            context.log.info(f"{name}: extracting {spec.cursor} in {window} from {where} at "
                             f"{mask_url(source.url)}, {spec.chunk_rows:,} rows a batch")

        def start() -> RecordBatchStream:
            stream = source.extract(window)
            return RecordBatchStream(stream.schema, _disposing(stream, source))

        return Extraction(f"source {name!r} window {context.partition_key}", start,
                          spec.retry_policy(), context.log)

    return source_asset


def _disposing(stream: RecordBatchStream, source: SqlSource) -> Iterator[pa.RecordBatch]:
    try:
        yield from stream
    finally:
        source.dispose()


def build_sink_asset(name: str, sink: SinkSpec, partitions: DynamicPartitionsDefinition,
                     io_manager_key: str) -> AssetsDefinition:
    """The asset that writes the staged rows of ``sink.source`` through ``sink``'s transform."""
    transform: Callable[..., Any] | None = (
        load_transform(sink.transform, f"sink {name!r}") if sink.transform else None
    )
    target = (sink.table_name.display if isinstance(sink, PostgresSinkSpec)
              else getattr(sink, "table", "") or getattr(sink, "path", ""))

    @asset(
        name=name,
        partitions_def=partitions,
        io_manager_key=io_manager_key,
        ins={"staged": AssetIn(key=AssetKey(sink.source))},
        group_name=sink.source,
        code_version=_version(sink.model_dump(), code_of(transform) if transform else None),
        description=mask_text(f"Rows of {sink.source} written to the {sink.kind} sink "
                              f"{target}".strip()),
        kinds={sink.kind},
    )
    def sink_asset(context: AssetExecutionContext, staged: RecordBatchStream) -> RecordBatchStream:
        register_run_worker(context)
        # A transform that makes documents, not batches, is applied by the sink's IO manager.
        return staged.map(transform) if transform and sink.transform_makes_batches else staged

    return sink_asset


def build_sink_io_manager(name: str, sink: SinkSpec, spec: PipelineSpec) -> ConfigurableIOManager:
    """The IO manager that writes sink ``name``."""
    if isinstance(sink, PostgresSinkSpec):
        if sink.table_definition:  # a wrong reference fails when the code location loads
            load_declared_table(sink.table_definition, f"sink {name!r}")
        return PostgresUpsertIOManager(
            url=dagster_url_value(sink.connection, f"sink {name!r}"),
            embedded_database=sink.connection.database,
            table=sink.table_name.display,
            primary_key=spec.sink_primary_key(name),
            watermark_column=spec.sink_cursor_column(name),
            replace_slice=sink.without_key == "replace_window",
            table_definition=sink.table_definition,
            delete=sink.delete,
            terminate_blockers_after_s=sink.terminate_blockers_after_s,
            conflict=sink.conflict,
            retries=sink.retries, retry_delay_s=sink.retry_delay_s,
            max_retry_delay_s=sink.max_retry_delay_s,
        )
    if isinstance(sink, ParquetSinkSpec):
        key = spec.sink_primary_key(name)
        if (sink.mode == "update" or sink.drop_duplicates) and not key:
            what = "mode update" if sink.mode == "update" else "drop_duplicates"
            raise ValueError(f"sink {name!r}: {what} needs a primary_key (on the sink or its "
                             f"source {sink.source!r})")
        return ParquetSinkIOManager(
            path=sink.path, mode=sink.mode, format=sink.format, primary_key=key,
            drop_duplicates=sink.drop_duplicates, storage_options=sink.storage_options,
            conflict=sink.conflict, cursor_column=spec.sink_cursor_column(name),
            retries=sink.retries, retry_delay_s=sink.retry_delay_s,
            max_retry_delay_s=sink.max_retry_delay_s, dead_letter_root=spec.dead_letters.root,
        )
    if isinstance(sink, BigQuerySinkSpec):
        key = spec.sink_primary_key(name)
        if sink.write == "merge" and not key:
            raise ValueError(f"sink {name!r}: write merge needs a primary_key (on the sink or "
                             f"its source {sink.source!r})")
        try:
            from etl_assets.sinks.bigquery.io_manager import BigQuerySinkIOManager
        except ImportError as exc:
            raise ValueError(f"sink {name!r}: kind bigquery needs the `bigquery` extra "
                             f"(pip install 'etl_assets[bigquery]'): {exc}") from None
        return BigQuerySinkIOManager(
            project=sink.project, dataset=sink.dataset, table=sink.table,
            location=sink.location, write=sink.write, primary_key=key,
            cursor_column=spec.sink_cursor_column(name), conflict=sink.conflict,
            credentials_path=EnvVar(sink.credentials_env) if sink.credentials_env else "",
            credentials_env=sink.credentials_env or "",
            api_endpoint=sink.api_endpoint or "", chunk_rows=sink.chunk_rows,
            retries=sink.retries, retry_delay_s=sink.retry_delay_s,
            max_retry_delay_s=sink.max_retry_delay_s, request_timeout_s=sink.request_timeout_s,
            dead_letter_root=spec.dead_letters.root,
        )
    if isinstance(sink, HttpSinkSpec):
        return HttpApiIOManager(
            url=sink.url, format=sink.format, method=sink.method, wrap=sink.wrap,
            body_extra=sink.body_extra, primary_key=spec.sink_primary_key(name),
            id_key=sink.id_key, couchdb_revisions=sink.couchdb_revisions,
            conflict=sink.conflict_rule, cursor_column=spec.sink_cursor_column(name),
            concurrency=sink.concurrency, bulk_docs=sink.bulk_docs, retries=sink.retries,
            retry_delay_s=sink.retry_delay_s, max_retry_delay_s=sink.max_retry_delay_s,
            timeout_s=sink.timeout_s, on_error=sink.on_error, headers=sink.headers,
            headers_from_env=sink.headers_from_env, ca_file=sink.ca_file,
            transform=sink.transform, dead_letter_root=spec.dead_letters.root,
        )
    raise ValueError(f"sink {name!r}: unknown kind {sink.kind!r}")


def committed_watermark_reader(source_name: str,
                               spec: PipelineSpec) -> Callable[[], Bound | None] | None:
    """What the source's PostgreSQL sinks have committed: the lowest of their watermarks, or
    None when one has none (a new sink must get the whole history). None when the source has
    no PostgreSQL sink (other sinks keep no watermark)."""
    tables = [(name, sink) for name, sink in spec.sinks.items()
              if sink.source == source_name and isinstance(sink, PostgresSinkSpec)]
    if not tables:
        return None

    def read() -> Bound | None:
        marks = []
        for name, sink in tables:
            url = resolve_url(sink.connection, f"sink {name!r}")
            mark = read_watermark(libpq_url(url, f"sink {name!r}"), sink.table_name)
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
        STAGING_IO_MANAGER: ParquetStagingIOManager(root=spec.staging.root,
                                                    shard_rows=spec.staging.shard_rows),
    }
    for source_name, source in spec.sources.items():
        partitions = partitions_for(source_name)
        keys = [AssetKey(source_name)]
        assets.append(build_source_asset(source_name, source, partitions))
        for sink_name, sink in spec.sinks.items():
            if sink.source != source_name:
                continue
            io_manager_key = f"{sink_name}_io_manager"
            io_manager = build_sink_io_manager(sink_name, sink, spec)
            resources[io_manager_key] = io_manager
            if hasattr(io_manager, "replay_dead_letters"):
                jobs.append(build_replay_job(sink_name, io_manager_key))
            assets.append(build_sink_asset(sink_name, sink, partitions, io_manager_key))
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
            committed_watermark=committed_watermark_reader(source_name, spec)))
    return Definitions(assets=assets, jobs=jobs, sensors=sensors, resources=resources)
