"""``etl-assets``: the command-line companion of ``dagster job execute`` and ``dg launch``.

Commands::

    etl-assets add-partitions SOURCE       add a partition per new window of SOURCE's rows (what a
                                           sensor tick does); print their keys, one a line
    etl-assets run SOURCE --partition KEY [--partition KEY ...]
                                           run SOURCE's job for each partition, in this process
                                           (as ``dagster job execute`` does); print run id and
                                           status. A key never added is refused before any run
                                           starts, naming the nearest existing keys
    etl-assets check [--require-env]       validate the spec and build its definitions; list the
                                           environment variables it names that are unset
    etl-assets status                      partitions per source, rows per sink
    etl-assets compose ...                 merge a file sink's shards into one file
    etl-assets stop-embedded               stop the embedded PostgreSQL server
    etl-assets worker [--concurrency N] [--queue Q ...] [--name NAME] [--loglevel LEVEL]
                                           a Celery worker running the steps of the spec's
                                           celery executor (broker and backend as the spec
                                           says, ${VAR} from the environment)

Options, before or after the command: ``--spec PATH`` (a spec file, or a ``dg`` defs.yaml that
declares an ``etl_assets.EtlAssetsComponent``; it overrides ``$ETL_ASSETS_SPEC``) and
``--debug`` (the traceback of an error, and the DEBUG events of a run).

An error is one line on stderr (``etl-assets: ...``) naming the pipeline, table or column at
fault, and the exit status says whose it is: 2 for the spec or the configuration (a spec that
does not validate, an unset environment variable, an unknown source or partition, no
``$DAGSTER_HOME``), 1 at run time (a database unreachable, a table missing, a run that failed).

Partitions live in the instance in ``$DAGSTER_HOME``::

    for key in $(etl-assets add-partitions sensors); do
      dagster job execute -m etl_assets.definitions -j sensors_job \\
        --tags "{\\"dagster/partition\\": \\"$key\\"}"
    done
    etl-assets run sensors --new      # the same in one process: add the partitions, run each
"""

from __future__ import annotations

import argparse
import bisect
import difflib
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from etl_assets.errors import ConfigurationError, EtlAssetsError
from etl_assets.secrets import mask_text
from etl_assets.spec import PipelineSpec, SpecError
from etl_assets.spec_in_use import load_pipeline_spec, spec_path, use_spec
from etl_assets.watermark import Window, decode_bound, encode_bound, partitions_name

if TYPE_CHECKING:
    from dagster import DagsterInstance, JobExecutionResult

PARTITION_TAG = "dagster/partition"


@contextmanager
def _persistent_instance() -> Iterator[DagsterInstance]:
    """The instance in ``$DAGSTER_HOME``, where partitions and runs are kept."""
    from dagster import DagsterInstance

    if not os.environ.get("DAGSTER_HOME"):
        raise ConfigurationError("set DAGSTER_HOME; partitions must live in a persistent "
                                 "instance")
    with DagsterInstance.get() as instance:
        yield instance


def _check_source(spec: PipelineSpec, source_name: str) -> None:
    if source_name not in spec.sources:
        raise SpecError(f"{spec_path()}: no source {source_name!r} "
                        f"(sources: {', '.join(sorted(spec.sources))})")


def _add_new_partitions(instance: DagsterInstance, spec: PipelineSpec,
                        source_name: str) -> list[str]:
    """What a sensor tick does: cut the source's rows after the highest existing partition
    into windows and add one partition each; their keys."""
    from etl_assets.sensors import highest_partition_hi, plan_next_windows
    from etl_assets.sources.registry import open_source

    windows = partitions_name(source_name)
    requested_hi = highest_partition_hi(instance, windows)
    source = open_source(source_name, spec.sources[source_name])
    try:
        # retries are logged as warnings, which reach stderr without logging set up
        plan = plan_next_windows(source, requested_hi, log=logging.getLogger("etl_assets"))
    finally:
        source.dispose()
    keys = [window.key for window in plan.windows]
    if keys:
        instance.add_dynamic_partitions(windows, keys)
    print(f"{source_name}: {plan.reason}: {len(keys)} new partition(s)", file=sys.stderr)
    return keys


def _add_partitions(source_name: str) -> int:
    spec = load_pipeline_spec()
    _check_source(spec, source_name)
    with _persistent_instance() as instance:
        for key in _add_new_partitions(instance, spec, source_name):
            print(key)
    return 0


def nearest_partitions(key: str, existing: Sequence[str]) -> list[str]:
    """The existing keys nearest ``key``, in window order: the windows just before and after
    where it would sort (a ``lo..hi`` key by its window, a lone bound by ``lo``); for a key that
    cannot be placed among them (no window, or a cursor of another kind), the two keys spelled
    most like it (difflib)."""
    try:
        windows = sorted((w, k) for k in existing if (w := Window.of_partition(k)) is not None)
    except TypeError:  # windows of two kinds of cursor: none is nearer
        windows = []
    at = _sort_position(key, [w for w, _ in windows])
    if at is not None:
        return [k for _, k in windows[max(at - 1, 0):at + 1]]
    order = {k: i for i, (_, k) in enumerate(windows)}
    similar = difflib.get_close_matches(key, list(existing), n=2)
    return sorted(similar, key=lambda k: (order.get(k, len(order)), k))


def _sort_position(key: str, windows: list[Window]) -> int | None:
    """Where ``key`` would sort among ``windows``; None when it is no window or bound, or one of
    another kind (an integer among timestamps, a naive among aware ones)."""
    target = Window.of_partition(key)
    try:
        if target is not None:
            return bisect.bisect_left(windows, target)
        return bisect.bisect_left([w.lo for w in windows], decode_bound(key))
    except (ValueError, TypeError):
        return None


def _refuse_unknown(source_name: str, keys: Sequence[str], existing: Sequence[str]) -> None:
    unknown = [key for key in dict.fromkeys(keys) if key not in set(existing)]
    if not unknown:
        return
    add = f"add partitions with `etl-assets add-partitions {source_name}`"
    if not existing:
        raise ConfigurationError(f"source {source_name!r} has no partitions yet "
                                 f"(asked for {', '.join(unknown)}): {add}")
    parts = []
    for key in unknown:
        near = nearest_partitions(key, existing)
        parts.append(f"no partition {key!r}" + (f" (nearest: {', '.join(near)})" if near else ""))
    raise ConfigurationError(f"source {source_name!r}: {'; '.join(parts)}; "
                             f"{len(existing)} partition(s) exist; {add}")


def _run(source_name: str, keys: Sequence[str], new: bool, debug: bool) -> int:
    """Run ``source_name``'s job for each key, one run after the other, stopping at the first
    that fails; every key is checked before the first run starts."""
    from dagster import execute_job
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    spec = load_pipeline_spec()
    _check_source(spec, source_name)
    job_name = f"{source_name}_job"  # factory.build_definitions
    with _persistent_instance() as instance:
        keys = list(keys)
        if new:
            keys += _add_new_partitions(instance, spec, source_name)
        _refuse_unknown(source_name, keys,
                        instance.get_dynamic_partitions(partitions_name(source_name)))
        # The code location `dagster job execute -m etl_assets.definitions` loads, in this
        # process: the spec in use reaches it through $ETL_ASSETS_SPEC.
        job = ReconstructableRepository.for_module(
            "etl_assets.definitions", "defs", working_directory=os.getcwd(),
        ).get_reconstructable_job(job_name)
        run_config = {"loggers": {"console": {"config": {
            "log_level": "DEBUG" if debug else "INFO"}}}}
        for done, key in enumerate(keys):
            with execute_job(job, instance=instance, run_config=run_config,
                             tags={PARTITION_TAG: key}, raise_on_error=False) as result:
                status = "SUCCESS" if result.success else "FAILURE"
                print(f"{job_name} partition {key}: run {result.run_id} {status}")
                if not result.success:
                    left = keys[done + 1:]
                    print(f"etl-assets: run: {job_name} partition {key}: run {result.run_id} "
                          f"failed: {_failure_of(result)}"
                          + (f" (not run: {', '.join(left)})" if left else ""),
                          file=sys.stderr)
                    return 1
    return 0


def _failure_of(result: JobExecutionResult) -> str:
    """The first failed step's error (its innermost cause), in one line."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            error = event.step_failure_data.error
            while error is not None and error.cause is not None:
                error = error.cause
            if error is not None:  # "etl_assets.x.y.SourceError: ..." names ours: drop the class
                message = re.sub(r"^etl_assets(\.\w+)+: ", "", error.message.strip())
                return f"step {event.step_key}: {_squeeze(message)}"
        if event.is_run_failure:
            return _squeeze(event.message or "the run failed")
    return "the run failed (see its log above)"


def _status() -> int:
    from etl_assets.sensors import highest_partition_hi
    from etl_assets.sinks.registry import sink_io_manager

    spec = load_pipeline_spec()
    with _persistent_instance() as instance:
        for name in spec.sources:
            keys = instance.get_dynamic_partitions(partitions_name(name))
            high = highest_partition_hi(instance, partitions_name(name))
            print(f"source {name}: {len(keys)} partition(s), requested up to "
                  f"{'nothing' if high is None else encode_bound(high)}")
    failed = 0
    for name in spec.sinks:
        try:
            line = sink_io_manager(spec.sink_setup(name)).status()
        except Exception as exc:  # one sink out of reach: report it, show the others
            print(f"etl-assets: status: sink {name}: {_one_line(exc)}", file=sys.stderr)
            failed += 1
            continue
        if line:
            print(line)
    return 1 if failed else 0


def _stop_embedded() -> int:
    from etl_assets.embedded_postgres import default_data_dir, stop_embedded_postgres

    stopped = stop_embedded_postgres()
    print(f"{'stopped' if stopped else 'no server was running on'} the embedded PostgreSQL "
          f"in {default_data_dir()}")
    return 0


def _check(require_env: bool) -> int:
    from etl_assets.code_location import definitions_of

    spec = load_pipeline_spec()
    definitions_of(spec, spec_path())  # what loading the code location does: the same errors
    print(f"{spec_path()}: ok")
    for name, source in spec.sources.items():
        print(f"  source {name}: {source.describe()} by {source.cursor} -> "
              f"{', '.join(spec.sinks_of(name)) or 'no sinks'}")
    unset = {variable: owners for variable, owners in spec.environment_variables().items()
             if not os.environ.get(variable)}  # empty counts as unset, as for `env`
    for variable, owners in sorted(unset.items()):
        print(f"  unset: ${variable} ({'; '.join(owners)})")
    return 2 if unset and require_env else 0  # configuration: exit 2


def _worker(args: argparse.Namespace) -> int:
    from etl_assets.executors import celery_worker_app, run_celery_worker

    executor = load_pipeline_spec().executor
    app = celery_worker_app(executor, str(spec_path()))
    if not os.environ.get("DAGSTER_PG_HOST"):
        print("etl-assets: worker: DAGSTER_PG_HOST is unset: with the project's dagster.yaml, "
              "runs keep their events in SQLite files, which workers on other machines cannot "
              "reach (see etl_assets/instance_storage.py)", file=sys.stderr)
    run_celery_worker(app, args.queue or [executor.queue], concurrency=args.concurrency,
                      name=args.name, loglevel=args.loglevel)
    return 0


def _compose(args: argparse.Namespace) -> int:
    from etl_assets.sinks.files.compose import compose
    from etl_assets.sinks.files.spec import ParquetSinkSpec

    storage_options: dict[str, object] = {}
    path, fmt, key = args.path, args.format, list(args.key or [])
    if args.sink:
        spec = load_pipeline_spec()
        sink = spec.sinks.get(args.sink)
        if not isinstance(sink, ParquetSinkSpec):
            files = [n for n, s in spec.sinks.items() if isinstance(s, ParquetSinkSpec)]
            raise SpecError(f"{spec_path()}: no parquet sink {args.sink!r} "
                            f"(parquet sinks: {', '.join(files) or 'none'})")
        path, fmt, storage_options = sink.path, sink.format, sink.storage_options
        if args.drop_duplicates and not key:
            key = spec.sink_setup(args.sink).primary_key
    if not path:
        raise ConfigurationError("compose: give --sink NAME or --path PATH")
    done = compose(path, fmt or "parquet", output=args.output, key=key,
                   remove_shards=args.remove_shards, storage_options=storage_options)
    print(f"composed {len(done.shards)} shard(s), {done.rows:,} rows, {done.bytes:,} bytes "
          f"-> {done.location}")
    return 0


def _parser() -> argparse.ArgumentParser:
    # --spec and --debug go before or after the command: the command's own copies default to
    # SUPPRESS, so that they do not undo the ones given before it.
    def options(parser: argparse.ArgumentParser, default: Any) -> None:  # noqa: ANN401 (None or SUPPRESS)
        parser.add_argument("--spec", metavar="PATH", default=default,
                            help="the spec: a spec file or a dg defs.yaml declaring an "
                                 "EtlAssetsComponent (default: $ETL_ASSETS_SPEC, else the demo)")
        parser.add_argument("--debug", action="store_true", default=default,
                            help="show the traceback of an error (and a run's DEBUG events)")

    parser = argparse.ArgumentParser(prog="etl-assets", description=__doc__.split("\n")[0])
    options(parser, None)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        options(sub, argparse.SUPPRESS)
        return sub

    add = command("add-partitions", help="add partitions for new rows of SOURCE; print their keys")
    add.add_argument("source")
    run = command("run", help="run SOURCE's job for each partition (refusing unknown keys first)")
    run.add_argument("source")
    run.add_argument("--partition", "-p", metavar="KEY", action="append", default=[],
                     help="a partition key (repeat for more); `etl-assets status` counts them")
    run.add_argument("--new", action="store_true",
                     help="add partitions for the new rows of SOURCE first, and run them too")
    check = command("check", help="validate the spec ($ETL_ASSETS_SPEC or the demo) and build "
                                  "its definitions; list unset env vars")
    check.add_argument("--require-env", action="store_true",
                       help="fail (exit 2) when an environment variable the spec names is unset")
    command("status", help="partitions per source, rows per PostgreSQL and file sink")
    command("stop-embedded", help="stop the embedded PostgreSQL server")
    worker = command("worker", help="start a Celery worker for the steps of the spec's celery "
                                    "executor")
    worker.add_argument("--concurrency", "-c", type=int, metavar="N",
                        help="steps at once (default: the CPU count)")
    worker.add_argument("--queue", "-Q", action="append", default=[], metavar="QUEUE",
                        help="a queue to take steps from (repeat for more; default: the "
                             "executor's `queue`)")
    worker.add_argument("--name", help="the worker's name, NAME@host (default: "
                                       "etl-assets-<random>@host)")
    worker.add_argument("--loglevel", default="INFO", help="the worker's log level")
    merge = command("compose", help="merge a file sink's shards into one file")
    merge.add_argument("--sink", help="a parquet sink of the spec (its path and format)")
    merge.add_argument("--path", help="a folder or fsspec URL holding shards")
    merge.add_argument("--format", choices=["parquet", "json", "csv"], default=None)
    merge.add_argument("--output", help="file name beside the shards (default composed.<ext>)")
    merge.add_argument("--key", nargs="+", help="keep the last row per key (later shards win)")
    merge.add_argument("--drop-duplicates", action="store_true",
                       help="with --sink: keep the last row per the sink's primary key")
    merge.add_argument("--remove-shards", action="store_true",
                       help="delete the shards once the composed file is in place")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run" and not (args.partition or args.new):
        _parser().error("run: give --partition KEY (one or more) or --new")
    try:
        if args.spec:
            use_spec(args.spec)
        if args.command == "add-partitions":
            return _add_partitions(args.source)
        if args.command == "run":
            return _run(args.source, args.partition, args.new, args.debug)
        if args.command == "status":
            return _status()
        if args.command == "stop-embedded":
            return _stop_embedded()
        if args.command == "compose":
            return _compose(args)
        if args.command == "worker":
            return _worker(args)
        return _check(args.require_env)
    except Exception as exc:  # one line; the traceback with --debug (they are for bugs)
        if args.debug:
            print(mask_text("".join(traceback.format_exception(exc))), file=sys.stderr, end="")
        if isinstance(exc, ConfigurationError):  # the spec's or the environment's: fix them
            print(f"etl-assets: {_one_line(exc)}", file=sys.stderr)
            return 2
        print(f"etl-assets: {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 1


def _squeeze(text: str) -> str:
    return mask_text(" ".join(text.split()))


def _one_line(exc: BaseException) -> str:
    """``exc`` in one line: its lines (a spec's errors, one a line) joined by "; "."""
    text = "; ".join(" ".join(line.split()) for line in str(exc).splitlines() if line.strip())
    text = text or type(exc).__name__
    if not isinstance(exc, EtlAssetsError | ValueError | ImportError):
        text = f"{type(exc).__name__}: {text}"  # a driver's or library's error
    return mask_text(text)


if __name__ == "__main__":
    sys.exit(main())
