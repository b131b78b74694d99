"""``etl-assets``: command-line helpers for running pipelines with ``dagster job execute``.

``dagster job execute`` needs a dynamic partition to exist before it runs one, and it takes
the partition as a tag. ``etl-assets add-partitions SOURCE`` does what a sensor tick does —
cuts the source's new rows into windows after the highest existing partition and adds them to
the instance in ``$DAGSTER_HOME`` — and prints one key a line, ready for::

    for key in $(etl-assets add-partitions sensors); do
      dagster job execute -m etl_assets.definitions -j sensors_job \\
        --tags "{\\"dagster/partition\\": \\"$key\\"}"
    done
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from etl_assets.errors import EtlAssetsError
from etl_assets.secrets import mask_text
from etl_assets.sensors import highest_partition_hi, plan_next_windows
from etl_assets.sinks.registry import sink_io_manager
from etl_assets.sources.registry import open_source
from etl_assets.spec import SpecError
from etl_assets.spec_in_use import load_pipeline_spec, spec_path
from etl_assets.watermark import encode_bound


def _add_partitions(source_name: str) -> int:
    from dagster import DagsterInstance

    if not os.environ.get("DAGSTER_HOME"):
        print("etl-assets: set DAGSTER_HOME; partitions must live in a persistent instance",
              file=sys.stderr)
        return 2
    spec = load_pipeline_spec()
    if source_name not in spec.sources:
        print(f"etl-assets: {spec_path()}: no source {source_name!r} "
              f"(sources: {', '.join(sorted(spec.sources))})", file=sys.stderr)
        return 2
    source_spec = spec.sources[source_name]
    partitions_name = f"{source_name}_windows"
    with DagsterInstance.get() as instance:
        requested_hi = highest_partition_hi(instance, partitions_name)
        source = open_source(source_name, source_spec)
        try:
            # retries are logged as warnings, which reach stderr without logging set up
            plan = plan_next_windows(source, requested_hi, log=logging.getLogger("etl_assets"))
        finally:
            source.dispose()
        keys = [window.key for window in plan.windows]
        if keys:
            instance.add_dynamic_partitions(partitions_name, keys)
    print(f"{source_name}: {plan.reason}: {len(keys)} new partition(s)", file=sys.stderr)
    for key in keys:
        print(key)
    return 0


def _status() -> int:
    from dagster import DagsterInstance

    spec = load_pipeline_spec()
    with DagsterInstance.get() as instance:
        for name in spec.sources:
            keys = instance.get_dynamic_partitions(f"{name}_windows")
            high = highest_partition_hi(instance, f"{name}_windows")
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
    return 1 if unset and require_env else 0


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
            print(f"etl-assets: {spec_path()}: no parquet sink {args.sink!r} "
                  f"(parquet sinks: {', '.join(files) or 'none'})", file=sys.stderr)
            return 2
        path, fmt, storage_options = sink.path, sink.format, sink.storage_options
        if args.drop_duplicates and not key:
            key = spec.sink_setup(args.sink).primary_key
    if not path:
        print("etl-assets compose: give --sink NAME or --path PATH", file=sys.stderr)
        return 2
    try:
        done = compose(path, fmt or "parquet", output=args.output, key=key,
                       remove_shards=args.remove_shards, storage_options=storage_options)
    except FileNotFoundError as exc:
        print(f"etl-assets compose: {mask_text(str(exc))}", file=sys.stderr)
        return 1
    print(f"composed {len(done.shards)} shard(s), {done.rows:,} rows, {done.bytes:,} bytes "
          f"-> {done.location}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="etl-assets", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add-partitions",
                              help="add partitions for new rows of SOURCE; print their keys")
    add.add_argument("source")
    check = commands.add_parser("check", help="validate the spec ($ETL_ASSETS_SPEC or the demo) "
                                              "and build its definitions; list unset env vars")
    check.add_argument("--require-env", action="store_true",
                       help="fail (exit 1) when an environment variable the spec names is unset")
    commands.add_parser("status", help="partitions per source, rows per PostgreSQL and file sink")
    commands.add_parser("stop-embedded", help="stop the embedded PostgreSQL server")
    merge = commands.add_parser("compose", help="merge a file sink's shards into one file")
    merge.add_argument("--sink", help="a parquet sink of the spec (its path and format)")
    merge.add_argument("--path", help="a folder or fsspec URL holding shards")
    merge.add_argument("--format", choices=["parquet", "json", "csv"], default=None)
    merge.add_argument("--output", help="file name beside the shards (default composed.<ext>)")
    merge.add_argument("--key", nargs="+", help="keep the last row per key (later shards win)")
    merge.add_argument("--drop-duplicates", action="store_true",
                       help="with --sink: keep the last row per the sink's primary key")
    merge.add_argument("--remove-shards", action="store_true",
                       help="delete the shards once the composed file is in place")
    args = parser.parse_args(argv)
    try:
        if args.command == "add-partitions":
            return _add_partitions(args.source)
        if args.command == "status":
            return _status()
        if args.command == "stop-embedded":
            return _stop_embedded()
        if args.command == "compose":
            return _compose(args)
        return _check(args.require_env)
    except SpecError as exc:
        print(f"etl-assets: {mask_text(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # one line, no traceback: they are for bugs, not for setups
        print(f"etl-assets: {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 2 if args.command == "check" else 1


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, EtlAssetsError | ValueError | ImportError):
        text = f"{type(exc).__name__}: {text}"  # a driver's or library's error
    return mask_text(text)


if __name__ == "__main__":
    sys.exit(main())
