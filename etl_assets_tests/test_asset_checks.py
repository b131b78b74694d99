"""The sink checks in real runs (PostgreSQL source and sink): reconciliation with both numbers,
keys a later window replaced, a target that loses rows (blocking fails the run), watermark lag,
and a range run (a single-run backfill) recording each partition's metadata and checks."""

from datetime import datetime, timezone

import pytest
from dagster import AssetCheckSeverity, AssetKey, DagsterInstance, Definitions
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from etl_assets.factory import build_definitions
from etl_assets.spec import parse_spec
from etl_assets.watermark import Window
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sample_tables import create_pg_readings, rows_differing

pytestmark = pytest.mark.slow

UTC = timezone.utc
FIRST = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, 1, tzinfo=UTC))
SECOND = Window(FIRST.hi, datetime(2024, 3, 1, 2, tzinfo=UTC))


def spec(pg: PgSchema, source: str, **checks: object) -> dict:
    return {
        "sources": {"readings": {
            "connection": {"env": "TEST_SOURCE_URL"}, "table": source, "cursor": "updated_at",
            "primary_key": ["id"], "chunk_rows": 25, "max_window": "1h",
            "backfill": "single_run"}},
        "sinks": {"readings_pg": {
            "source": "readings", "kind": "postgres", "connection": {"env": "TEST_TARGET_URL"},
            "table": pg.table("landed"), "checks": checks}},
    }


@pytest.fixture(autouse=True)
def urls(pg: PgSchema, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SOURCE_URL", pg.url)
    monkeypatch.setenv("TEST_TARGET_URL", pg.url)


def run(defs: Definitions, instance: DagsterInstance, *windows: Window, sink_only: bool = False,
        expect_success: bool = True):
    instance.add_dynamic_partitions("readings_windows", [w.key for w in windows])
    job = defs.resolve_job_def("readings_job")
    selection = [AssetKey("readings_pg")] if sink_only else None
    if len(windows) == 1:
        result = job.execute_in_process(instance=instance, partition_key=windows[0].key,
                                        asset_selection=selection, raise_on_error=False)
    else:
        result = job.execute_in_process(instance=instance, asset_selection=selection,
                                        raise_on_error=False, tags={
                                            ASSET_PARTITION_RANGE_START_TAG: windows[0].key,
                                            ASSET_PARTITION_RANGE_END_TAG: windows[-1].key})
    assert result.success == expect_success
    return result


def checks_of(result) -> dict[tuple[str, str | None], object]:
    return {(e.check_name, e.partition): e for e in result.get_asset_check_evaluations()}


def test_a_run_passes_its_checks_and_shows_both_numbers(pg: PgSchema,
                                                        instance: DagsterInstance) -> None:
    source = create_pg_readings(pg, last=120)
    result = run(build_definitions(parse_spec(spec(pg, source))), instance, FIRST)
    found = checks_of(result)
    reconciled = found[("row_count_reconciliation", FIRST.key)]
    assert reconciled.passed
    assert reconciled.metadata["source_rows"].value == 60
    assert reconciled.metadata["target_rows"].value == 60
    assert found[("schema_drift", FIRST.key)].passed
    assert ("watermark_lag", FIRST.key) not in found  # no max_watermark_lag: no lag check
    (written,) = [m for m in (e.event_specific_data.materialization
                              for e in result.get_asset_materialization_events())
                  if m.asset_key == AssetKey("readings_pg")]
    lineage = written.metadata["dagster/column_lineage"].value
    assert [d.asset_key for d in lineage.deps_by_column["code"]] == [AssetKey("readings")]
    assert [d.column_name for d in lineage.deps_by_column["code"]] == ["code"]
    assert written.metadata["dagster/table_name"].value.endswith(".landed")


def test_keys_a_later_window_replaced_count_as_held(pg: PgSchema,
                                                    instance: DagsterInstance) -> None:
    source = create_pg_readings(pg, last=120)
    defs = build_definitions(parse_spec(spec(pg, source)))
    run(defs, instance, FIRST)  # stages rows 1..60
    pg.execute(f"UPDATE {source} SET updated_at = timestamptz '2024-03-01 01:30:30+00', "
               f"code = 'MOVED' WHERE id IN (10, 20)")
    run(defs, instance, SECOND)  # rows 10 and 20 land with their newer cursor
    # The first window's sink again, from what was staged before the update (newest wins).
    again = checks_of(run(defs, instance, FIRST, sink_only=True))
    reconciled = again[("row_count_reconciliation", FIRST.key)]
    assert reconciled.passed, reconciled.description
    assert reconciled.metadata["target_rows"].value == 58
    assert reconciled.metadata["replaced_by_later_windows"].value == 2
    assert pg.execute(f"SELECT count(*) FROM {pg.table('landed')} WHERE code = 'MOVED'") == [(2,)]


def test_a_target_that_loses_rows_fails_reconciliation_and_blocking_fails_the_run(
        pg: PgSchema, instance: DagsterInstance) -> None:
    source = create_pg_readings(pg, last=120)
    defs = build_definitions(parse_spec(spec(pg, source, blocking=True)))
    run(defs, instance, FIRST)
    landed = pg.table("landed")
    # A target that silently drops every tenth row it is given.
    pg.execute("CREATE FUNCTION drop_tenth() RETURNS trigger LANGUAGE plpgsql AS "
               "$$ BEGIN IF NEW.id % 10 = 0 THEN RETURN NULL; END IF; RETURN NEW; END $$")
    pg.execute(f"CREATE TRIGGER drop_tenth BEFORE INSERT ON {landed} "
               f"FOR EACH ROW EXECUTE FUNCTION drop_tenth()")
    result = run(defs, instance, SECOND, expect_success=False)
    failed = checks_of(result)[("row_count_reconciliation", SECOND.key)]
    assert not failed.passed and failed.severity == AssetCheckSeverity.ERROR
    assert failed.metadata["source_rows"].value == 60
    assert failed.metadata["target_rows"].value == 54
    assert "60" in failed.description and "54" in failed.description
    failures = [e for e in result.all_events if e.is_step_failure]
    assert "row_count_reconciliation" in failures[0].step_failure_data.error.message


def test_watermark_lag_over_the_limit_warns_and_the_run_succeeds(
        pg: PgSchema, instance: DagsterInstance) -> None:
    source = create_pg_readings(pg, last=120)  # newest row at 02:00
    defs = build_definitions(parse_spec(spec(pg, source, max_watermark_lag="30m")))
    lagging = checks_of(run(defs, instance, FIRST))[("watermark_lag", FIRST.key)]
    assert not lagging.passed and lagging.severity == AssetCheckSeverity.WARN
    assert lagging.metadata["lag"].value == "1:00:00"
    caught_up = checks_of(run(defs, instance, SECOND))[("watermark_lag", SECOND.key)]
    assert caught_up.passed


def test_a_range_run_records_each_partition_with_its_own_metadata_and_checks(
        pg: PgSchema, instance: DagsterInstance) -> None:
    source = create_pg_readings(pg, last=90)  # 60 rows in the first hour, 30 in the second
    defs = build_definitions(parse_spec(spec(pg, source)))
    result = run(defs, instance, FIRST, SECOND)
    assert rows_differing(pg, source, pg.table("landed")) == 0
    written = {m.partition: m.metadata for m in (
        e.event_specific_data.materialization for e in result.get_asset_materialization_events())
        if m.asset_key == AssetKey("readings_pg")}
    assert {k: v["rows_written"].value for k, v in written.items()} == {
        FIRST.key: 60, SECOND.key: 30}
    staged = {m.partition: m.metadata["dagster/row_count"].value for m in (
        e.event_specific_data.materialization for e in result.get_asset_materialization_events())
        if m.asset_key == AssetKey("readings")}
    assert staged == {FIRST.key: 60, SECOND.key: 30}
    found = checks_of(result)
    assert found[("row_count_reconciliation", FIRST.key)].metadata["source_rows"].value == 60
    assert found[("row_count_reconciliation", SECOND.key)].metadata["source_rows"].value == 30
    assert all(e.passed for e in found.values())
    assert len(instance.get_runs()) == 1
