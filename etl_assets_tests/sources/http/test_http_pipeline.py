"""HTTP source -> staging -> PostgreSQL and parquet, run by Dagster on a real instance: the
values the sinks hold equal those the API serves; raw pages kept in the staged version; an
empty window; the sensor's newest value from `latest`; failures and logs masked."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, SensorResult, build_sensor_context

from etl_assets.factory import build_definitions
from etl_assets.raw_pages import INDEX
from etl_assets.spec import parse_spec
from etl_assets.staging.io_manager import staged_manifest
from etl_assets.watermark import Window
from etl_assets_testing.servers.datasette import Datasette
from etl_assets_testing.servers.fault_http import Faults, FaultServer
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sources.http.servers import (
    T0,
    WINDOW,
    datasette_source,
    datasette_table,
    fault_items,
    fault_source,
    in_window,
)
from etl_assets_tests.test_factory import run_partition

TOKEN = "Bearer pipe-s3cr3t-token"
COLUMNS = {"id": "int64", "name": "string", "amount": "float64",
           "updated_at": "timestamp[us, tz=UTC]", "meta": "json"}


def pipeline(source: dict, pg: PgSchema, lake: Path) -> dict:
    return {"sources": {"readings": source},
            "sinks": {"readings_pg": {"source": "readings", "kind": "postgres",
                                      "connection": {"env": "TEST_TARGET_URL"},
                                      "table": pg.table("api_copy")},
                      "readings_lake": {"source": "readings", "kind": "parquet",
                                        "path": str(lake), "mode": "shard",
                                        "format": "parquet"}}}


@pytest.fixture
def target(pg: PgSchema, monkeypatch: pytest.MonkeyPatch) -> PgSchema:
    monkeypatch.setenv("TEST_TARGET_URL", pg.url)
    monkeypatch.setenv("TEST_API_TOKEN", TOKEN)
    return pg


@pytest.mark.slow
def test_api_rows_land_in_postgres_and_parquet_as_served_with_raw_pages(
        datasette: Datasette, target: PgSchema, instance: DagsterInstance, tmp_path: Path,
        etl_home: Path) -> None:
    table = datasette_table(datasette)
    source = datasette_source(datasette, table, columns=COLUMNS, keep_raw=True,
                              headers_from_env={"Authorization": "TEST_API_TOKEN"})
    defs = build_definitions(parse_spec(pipeline(source, target, tmp_path / "lake")))
    metadata = run_partition(defs, instance, WINDOW)
    expected = in_window(datasette.rows(table), WINDOW)
    assert metadata["readings"]["dagster/row_count"].value == 40
    assert metadata["readings"]["raw_pages"].value == 6
    assert metadata["readings_pg"]["rows_written"].value == 40

    stored = target.execute(f"SELECT id, name, amount, updated_at, meta::text "
                            f"FROM {target.table('api_copy')} ORDER BY id")
    assert [(i, n, a, u, json.loads(m)) for i, n, a, u, m in stored] == \
        [(r["id"], r["name"], r["amount"], r["updated_at"], json.loads(r["meta"]))
         for r in expected]

    lake = pq.read_table(tmp_path / "lake").sort_by("id").to_pylist()
    assert [{k: row[k] for k in ("id", "name", "amount", "updated_at", "meta")}
            for row in lake] == expected

    staged = etl_home / "staging" / "readings" / WINDOW.key
    raw = staged / "raw"
    pages = sorted(raw.glob("page-*.json"))
    assert len(pages) == 6 and staged_manifest(staged).rows == 40
    first = json.loads(pages[0].read_bytes())
    assert [row["id"] for row in first["rows"]] == list(range(11, 18))
    index = [json.loads(line) for line in (raw / INDEX).read_text().splitlines()]
    assert [entry["file"] for entry in index] == [p.name for p in pages]
    assert "&_next=17" in index[1]["url"]  # the token of the 7th row

    again = run_partition(defs, instance, WINDOW)  # a new version, its own raw pages
    assert again["readings"]["raw_pages"].value == 6
    versions = list((etl_home / "staging" / "readings" / ".versions" / WINDOW.key).iterdir())
    assert len([v for v in versions if v.is_dir() and (v / "raw").is_dir()]) == 1  # swept
    assert not any("s3cr3t" in str(entry) for run in instance.get_runs()
                   for entry in instance.all_logs(run.run_id))


@pytest.mark.slow
def test_an_empty_window_stages_an_empty_partition(datasette: Datasette, target: PgSchema,
                                                   instance: DagsterInstance, tmp_path: Path,
                                                   etl_home: Path) -> None:
    table = datasette_table(datasette)
    empty = Window(T0 + timedelta(days=1), T0 + timedelta(days=2))
    source = datasette_source(datasette, table, columns=COLUMNS)
    defs = build_definitions(parse_spec(pipeline(source, target, tmp_path / "lake")))
    metadata = run_partition(defs, instance, empty)
    assert metadata["readings"]["dagster/row_count"].value == 0
    assert metadata["readings_pg"]["rows_written"].value == 0
    assert target.execute(f"SELECT count(*) FROM {target.table('api_copy')}") == [(0,)]
    staged = etl_home / "staging" / "readings" / empty.key
    assert pq.read_schema(next(staged.glob("part-*.parquet"))).names == list(COLUMNS)
    # without `columns` an empty window has no columns either (no record to learn them from)
    undeclared = pipeline(datasette_source(datasette, table), target, tmp_path / "lake")
    del undeclared["sinks"]["readings_pg"]
    metadata = run_partition(build_definitions(parse_spec(undeclared)), instance, empty)
    assert metadata["readings"]["dagster/row_count"].value == 0
    assert metadata["readings_lake"]["rows_written"].value == 0
    assert staged_manifest(staged).rows == 0


@pytest.mark.slow
def test_retries_are_logged_masked_and_a_4xx_fails_the_run_naming_url_and_status(
        fault_server: FaultServer, target: PgSchema, instance: DagsterInstance,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_API_KEY", "pipe-k3y-123456")
    fault_items(fault_server, 30)
    fault_server.faults = Faults(unavailable=0.3)
    source = fault_source(fault_server, pagination={"kind": "page", "size": 4}, retries=10,
                          params_from_env={"api_key": "TEST_API_KEY"},
                          headers_from_env={"Authorization": "TEST_API_TOKEN"})
    defs = build_definitions(parse_spec(pipeline(source, target, tmp_path / "lake")))
    window = Window(0, 30)
    metadata = run_partition(defs, instance, window)
    assert metadata["readings_pg"]["rows_written"].value == 30
    assert target.execute(f"SELECT count(*), min(seq), max(seq) FROM "
                          f"{target.table('api_copy')}") == [(30, 1, 30)]
    run = instance.get_runs()[0]
    logged = [e.user_message for e in instance.all_logs(run.run_id) if e.user_message]
    retried = [m for m in logged if "HTTP 503; attempt" in m]
    assert retried and all("api_key=***" in m for m in retried)

    fault_server.faults = Faults()
    failing = fault_source(fault_server, url=f"{fault_server.url}/refused",
                           params_from_env={"api_key": "TEST_API_KEY"},
                           headers_from_env={"Authorization": "TEST_API_TOKEN"})
    defs = build_definitions(parse_spec(pipeline(failing, target, tmp_path / "lake")))
    instance.add_dynamic_partitions("readings_windows", [Window(30, 40).key])
    result = defs.resolve_job_def("readings_job").execute_in_process(
        instance=instance, partition_key=Window(30, 40).key, raise_on_error=False)
    assert not result.success
    error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    assert error is not None and error.cause is not None  # the asset's error, under Dagster's
    assert error.cause.cls_name == "HttpSourceError"
    assert error.cause.message.startswith(
        f"etl_assets.sources.http.client.HttpSourceError: source 'readings' window (30, 40]: "
        f"GET {fault_server.url}/refused?seq_gt=30&seq_lte=40&api_key=***: HTTP 401: ")
    everything = [str(e) for r in instance.get_runs() for e in instance.all_logs(r.run_id)]
    assert not any("s3cr3t" in e or "pipe-k3y" in e for e in everything)


@pytest.mark.slow
def test_the_sensor_cuts_windows_up_to_the_newest_value_latest_gives(
        fault_server: FaultServer, instance: DagsterInstance) -> None:
    fault_items(fault_server, 2_500)
    spec = {"sources": {"readings": fault_source(fault_server, max_window=1_000, start=0)}}
    defs = build_definitions(parse_spec(spec))
    sensor = defs.resolve_sensor_def("readings_watermark_sensor")
    result = sensor(build_sensor_context(instance=instance, cursor=None))
    assert isinstance(result, SensorResult)
    assert [r.partition_key for r in result.run_requests] == ["0..1000", "1000..2000",
                                                              "2000..2500"]
    assert fault_server.queries[-1] == "/items?order=desc&per_page=1"
