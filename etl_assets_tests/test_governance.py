"""Governance in the spec: checked by Dagster's rules when the spec is validated, and the
@asset arguments it gives, read back from the AssetsDefinition Dagster builds."""

from datetime import timedelta

import pytest
import yaml
from dagster import (
    AssetIn,
    AssetKey,
    BackfillPolicy,
    Definitions,
    DynamicPartitionsDefinition,
    FreshnessPolicy,
    asset,
)

from etl_assets.governance import AssetArguments, sink_asset_arguments, source_asset_arguments
from etl_assets.spec import PipelineSpec, SpecError, parse_spec

SPEC = """
sources:
  sensors:
    connection: {env: SOURCE_DB_URL}
    table: bgs.sensors
    cursor: updated_at
    description: Sensors of the plant, by update time.
    owners: [data@example.com, "team:plant"]
    tags: {tier: gold, domain: plant}
    group: plant/raw
    key_prefix: plant/raw
    pool: source_db
    freshness: {fail_window: 2h, warn_window: 1h}
    backfill: single_run
    max_partitions_per_run: 10
sinks:
  sensors_pg:
    source: sensors
    kind: postgres
    connection: {env: TARGET_PG_URL}
    table: analytics.sensors
    owners: ["team:analytics"]
    key_prefix: [warehouse]
    pool: target_pg
    freshness: {cron: "0 9 * * *", lower_bound_delta: 1h, timezone: Europe/Paris}
  sensors_files:
    source: sensors
    kind: parquet
    path: /tmp/sensors
"""


def spec(text: str = SPEC) -> PipelineSpec:
    return parse_spec(yaml.safe_load(text), "pipelines.yaml")


def build(spec: PipelineSpec) -> Definitions:
    """A source asset and its sinks' assets made with the governance arguments, as the factory
    makes them."""
    partitions = DynamicPartitionsDefinition(name="sensors_windows")
    source = spec.sources["sensors"]

    def source_asset(arguments: AssetArguments):
        @asset(name="sensors", partitions_def=partitions, **arguments)
        def made() -> int:
            return 1
        return made

    def sink_asset(name: str, arguments: AssetArguments):
        @asset(name=name, partitions_def=partitions, **arguments,
               ins={"staged": AssetIn(key=source.asset_key("sensors"))})
        def made(staged: int) -> int:
            return staged
        return made

    assets = [source_asset(source_asset_arguments("sensors", source, "generated"))]
    assets += [sink_asset(name, sink_asset_arguments(spec.sinks[name], "sensors", source,
                                                     f"generated {name}"))
               for name in spec.sinks_of("sensors")]
    return Definitions(assets=assets)


def test_governance_reaches_the_assets() -> None:
    defs = build(spec())
    source_key = AssetKey(["plant", "raw", "sensors"])
    source = defs.resolve_assets_def(source_key)
    source_spec = source.specs_by_key[source_key]
    assert source_spec.description == "Sensors of the plant, by update time."
    assert source.owners_by_key[source_key] == ["data@example.com", "team:plant"]
    assert source_spec.tags == {"tier": "gold", "domain": "plant"}
    assert source.group_names_by_key[source_key] == "plant/raw"
    assert source.op.pool == "source_db"
    assert source_spec.freshness_policy == FreshnessPolicy.time_window(
        fail_window=timedelta(hours=2), warn_window=timedelta(hours=1))
    assert source.backfill_policy == BackfillPolicy.multi_run(10)

    sink_key = AssetKey(["warehouse", "sensors_pg"])
    sink = defs.resolve_assets_def(sink_key)
    sink_spec = sink.specs_by_key[sink_key]
    assert sink_spec.description == "generated sensors_pg"
    assert sink.owners_by_key[sink_key] == ["team:analytics"]
    assert sink.group_names_by_key[sink_key] == "plant/raw"  # its source's group
    assert sink.op.pool == "target_pg"
    assert sink_spec.freshness_policy == FreshnessPolicy.cron(
        deadline_cron="0 9 * * *", lower_bound_delta=timedelta(hours=1),
        timezone="Europe/Paris")
    assert sink.backfill_policy == BackfillPolicy.multi_run(10)  # its source's
    assert [dep.asset_key for dep in sink_spec.deps] == [source_key]

    files = defs.resolve_assets_def("sensors_files")
    assert files.group_names_by_key[AssetKey("sensors_files")] == "plant/raw"
    assert files.specs_by_key[AssetKey("sensors_files")].freshness_policy is None
    assert files.op.pool is None


def test_without_governance_the_defaults_stay() -> None:
    defs = build(spec("""
sources:
  sensors: {connection: {env: DB}, table: sensors, cursor: updated_at}
sinks:
  sensors_pg: {source: sensors, kind: postgres, connection: {env: PG}, table: sensors}
"""))
    source = defs.resolve_assets_def("sensors")
    key = AssetKey("sensors")
    assert source.specs_by_key[key].description == "generated"
    assert source.group_names_by_key[key] == "sensors"
    assert source.owners_by_key[key] == []
    assert source.specs_by_key[key].tags == {}
    assert source.specs_by_key[key].freshness_policy is None
    assert source.backfill_policy is None  # Dagster's default: a run per partition
    sink = defs.resolve_assets_def("sensors_pg")
    assert sink.group_names_by_key[AssetKey("sensors_pg")] == "sensors"
    assert sink.backfill_policy is None


@pytest.mark.parametrize(("backfill", "policy"), [
    ("backfill: single_run", BackfillPolicy.single_run()),
    ("backfill: single_run\n    max_partitions_per_run: 3", BackfillPolicy.multi_run(3)),
    ("backfill: multi_run", None),
])
def test_backfill_policy(backfill: str, policy: BackfillPolicy | None) -> None:
    text = SPEC.replace("backfill: single_run\n    max_partitions_per_run: 10", backfill)
    assert spec(text).sources["sensors"].backfill_policy() == policy


FRESHNESS = "freshness: {fail_window: 2h, warn_window: 1h}"
SINK_OWNERS = 'owners: ["team:analytics"]'


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("owners: [data", "owners: [bob, data", "source 'sensors': field 'owners': 'bob': an owner "
     "is an email address or a team name prefixed with team: (team:finance)"),
    (SINK_OWNERS, 'owners: ["team:"]', "sink 'sensors_pg': field 'owners': 'team:': an owner"),
    ("tier: gold", "tier: gold star", "source 'sensors': field 'tags': Invalid tag value: "
     "gold star"),
    ("tier: gold", "dagster/kind/x: ''", "source 'sensors': field 'tags': Attempted to set tag "
     "with reserved system prefix: dagster/kind/x"),
    ("group: plant/raw", "group: plant-raw", "source 'sensors': field 'group': \"plant-raw\" "
     "is not a valid asset group name"),
    ("key_prefix: plant/raw", "key_prefix: plant/raw-2", "source 'sensors': field "
     "'key_prefix': 'raw-2': each part of a key prefix is letters, digits and _"),
    ("pool: source_db", "pool: source db", "source 'sensors': field 'pool': 'source db' is "
     "not a pool name"),
    (FRESHNESS, "freshness: {fail_window: 30s}", "source 'sensors': field 'freshness': Due to "
     "Dagster system constraints, fail_window cannot be less than 1 minute"),
    (FRESHNESS, "freshness: {fail_window: 1h, warn_window: 2h}", "source 'sensors': field "
     "'freshness': warn_window must be less than fail_window"),
    (FRESHNESS, "freshness: {fail_window: two hours}", "source 'sensors': field "
     "'freshness.fail_window': 'two hours' is not a duration"),
    (FRESHNESS, "freshness: {warn_window: 1h}", "source 'sensors': field 'freshness': give "
     "`fail_window` (and optionally `warn_window`), or `cron` and `lower_bound_delta`"),
    (FRESHNESS, "freshness: {cron: '0 9 * * *'}", "source 'sensors': field 'freshness': `cron` "
     "needs `lower_bound_delta`"),
    (FRESHNESS, "freshness: {cron: at nine, lower_bound_delta: 1h}", "source 'sensors': field "
     "'freshness': Invalid cron string."),
    (FRESHNESS, "freshness: {cron: '0 9 * * *', lower_bound_delta: 2d}", "source 'sensors': "
     "field 'freshness': lower_bound_delta must be less than or equal to the smallest cron "
     "interval"),
    (FRESHNESS, "freshness: {cron: '0 9 * * *', lower_bound_delta: 1h, timezone: Mars/Olympus}",
     "source 'sensors': field 'freshness': Invalid IANA timezone: Mars/Olympus"),
    ("backfill: single_run", "backfill: multi_run", "source 'sensors': `max_partitions_per_run` "
     "goes with `backfill: single_run`"),
    ("max_partitions_per_run: 10", "max_partitions_per_run: 0", "source 'sensors': field "
     "'max_partitions_per_run': Input should be greater than 0"),
    (SINK_OWNERS, "backfill: single_run", "sink 'sensors_pg': field 'backfill': Extra inputs "
     "are not permitted"),  # a sink runs as its source's backfill runs
])
def test_governance_dagster_would_refuse_is_refused_when_validated(old: str, new: str,
                                                                   expected: str) -> None:
    with pytest.raises(SpecError) as error:
        spec(SPEC.replace(old, new, 1))
    assert f"pipelines.yaml: {expected}" in str(error.value)
