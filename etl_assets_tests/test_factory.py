"""Extract -> stage -> upsert of whole partitions, run by Dagster on a real instance."""

from datetime import datetime, timezone

import pytest
from dagster import DagsterInstance, Definitions

from etl_assets.factory import build_definitions
from etl_assets.spec import parse_spec
from etl_assets.watermark import Window
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sample_tables import add_pg_readings, create_pg_readings, rows_differing

UTC = timezone.utc


def readings_spec(pg: PgSchema, source_table: str, **sink: object) -> dict:
    return {
        "sources": {"readings": {
            "connection": {"env": "TEST_SOURCE_URL"}, "table": source_table,
            "cursor": "updated_at", "primary_key": ["id"], "chunk_rows": 70,
            "max_window": "2h",
        }},
        "sinks": {"readings_pg": {
            "source": "readings", "kind": "postgres", "connection": {"env": "TEST_TARGET_URL"},
            "table": pg.table("readings_copy"), **sink,
        }},
    }


@pytest.fixture
def urls(pg: PgSchema, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SOURCE_URL", pg.url)
    monkeypatch.setenv("TEST_TARGET_URL", pg.url)


def run_partition(defs: Definitions, instance: DagsterInstance, window: Window,
                  job: str = "readings_job") -> dict:
    instance.add_dynamic_partitions("readings_windows", [window.key])
    result = defs.resolve_job_def(job).execute_in_process(instance=instance,
                                                          partition_key=window.key)
    assert result.success
    return {str(e.asset_key.path[-1]): e.metadata for e in
            (m.event_specific_data.materialization for m in result.get_asset_materialization_events())}


WHOLE = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, 2, tzinfo=UTC))


@pytest.mark.slow
@pytest.mark.usefixtures("urls")
def test_partition_lands_with_values_equal_to_the_source(pg: PgSchema, instance: DagsterInstance) -> None:
    source = create_pg_readings(pg, last=120)  # rows at 00:01 .. 02:00
    defs = build_definitions(parse_spec(readings_spec(pg, source)))
    metadata = run_partition(defs, instance, WHOLE)
    assert metadata["readings"]["dagster/row_count"].value == 120  # the window's rows
    assert metadata["readings_pg"]["rows_written"].value == 120
    assert metadata["readings_pg"]["dagster/row_count"].value == 120  # rows the table holds
    assert rows_differing(pg, source, pg.table("readings_copy")) == 0


@pytest.mark.slow
@pytest.mark.usefixtures("urls")
def test_rerun_gives_the_same_table(pg: PgSchema, instance: DagsterInstance) -> None:
    source = create_pg_readings(pg, last=120)
    defs = build_definitions(parse_spec(readings_spec(pg, source)))
    run_partition(defs, instance, WHOLE)
    again = run_partition(defs, instance, WHOLE)
    assert again["readings_pg"]["rows_changed"].value == 0
    assert again["readings_pg"]["rows_written"].value == again["readings_pg"]["dagster/row_count"].value == 120
    assert pg.execute(f"SELECT count(*), count(DISTINCT id) FROM {pg.table('readings_copy')}") == [(120, 120)]
    assert rows_differing(pg, source, pg.table("readings_copy")) == 0


@pytest.mark.slow
@pytest.mark.usefixtures("urls")
def test_windows_take_only_their_rows_and_updates_flow_through(pg: PgSchema,
                                                               instance: DagsterInstance) -> None:
    source = create_pg_readings(pg, last=120)
    defs = build_definitions(parse_spec(readings_spec(pg, source)))
    first = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, 1, tzinfo=UTC))
    run_partition(defs, instance, first)
    assert pg.execute(f"SELECT min(id), max(id) FROM {pg.table('readings_copy')}") == [(1, 60)]
    # row 30 is updated: it moves to a later window and the sink updates it in place
    pg.execute(f"UPDATE {source} SET description = 'late edit', "
               f"updated_at = timestamptz '2024-03-01 01:30:30+00' WHERE id = 30")
    run_partition(defs, instance, Window(first.hi, WHOLE.hi))
    assert pg.execute(f"SELECT count(*) FROM {pg.table('readings_copy')}") == [(120,)]
    assert pg.execute(f"SELECT description FROM {pg.table('readings_copy')} WHERE id = 30") == [
        ("late edit",)]
    assert rows_differing(pg, source, pg.table("readings_copy")) == 0


@pytest.mark.slow
@pytest.mark.usefixtures("urls")
def test_sink_transform_arrow_and_pandas(pg: PgSchema, instance: DagsterInstance) -> None:
    source = create_pg_readings(pg, last=10)
    spec = readings_spec(pg, source, transform="etl_assets_tests.transforms_for_tests:shout_codes")
    spec["sinks"]["amounts_pg"] = {
        "source": "readings", "kind": "postgres", "connection": {"env": "TEST_TARGET_URL"},
        "table": pg.table("amounts"), "transform": "etl_assets_tests.transforms_for_tests:with_pandas",
        "conflict": "last_write"}  # the transform drops the cursor, which newest-wins compares
    defs = build_definitions(parse_spec(spec))
    run_partition(defs, instance, WHOLE)
    assert pg.execute(f"SELECT id, code FROM {pg.table('readings_copy')} ORDER BY id LIMIT 2") == [
        (1, "X-SEN-00001"), (2, "X-SEN-00002")]
    assert pg.execute(f"SELECT amount FROM {pg.table('amounts')} WHERE id = 2") == [(4.5,)]
    assert pg.execute(f"SELECT count(*) FROM {pg.table('amounts')} WHERE amount IS NULL") == [(1,)]


@pytest.mark.slow
@pytest.mark.usefixtures("urls")
def test_empty_window_succeeds_without_rows(pg: PgSchema, instance: DagsterInstance) -> None:
    source = create_pg_readings(pg, last=10)
    defs = build_definitions(parse_spec(readings_spec(pg, source)))
    metadata = run_partition(defs, instance, Window(datetime(2025, 1, 1, tzinfo=UTC),
                                                    datetime(2025, 1, 2, tzinfo=UTC)))
    assert metadata["readings_pg"]["rows_written"].value == 0
    add_pg_readings(pg, source, 11, 12)
    run_partition(defs, instance, WHOLE)
    assert pg.execute(f"SELECT count(*) FROM {pg.table('readings_copy')}") == [(12,)]


def test_code_version_changes_with_the_spec(pg: PgSchema) -> None:
    spec = readings_spec(pg, "s.t")
    before = build_definitions(parse_spec(spec)).resolve_assets_def("readings_pg")
    spec["sinks"]["readings_pg"]["transform"] = "etl_assets_tests.transforms_for_tests:shout_codes"
    after = build_definitions(parse_spec(spec)).resolve_assets_def("readings_pg")
    assert before.code_versions_by_key != after.code_versions_by_key
