"""Spec -> Dagster run -> HTTP API: a PostgreSQL source's windows posted through the sink's
transform; the token from env reaches the server and nowhere in Dagster's records."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from dagster import DagsterInstance

from etl_assets.factory import build_definitions
from etl_assets.spec import SpecError, parse_spec
from etl_assets.watermark import Window
from etl_assets_testing.servers.fault_http import FaultServer
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sample_tables import create_pg_readings
from etl_assets_tests.test_factory import run_partition

UTC = timezone.utc
WHOLE = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, 2, tzinfo=UTC))
TOKEN = "Bearer s3cr3t-t0ken-value"


def spec_for(source_table: str, url: str, **sink: object) -> dict:
    return {
        "sources": {"readings": {
            "connection": {"env": "TEST_SOURCE_URL"}, "table": source_table,
            "cursor": "updated_at", "primary_key": ["id"], "chunk_rows": 25, "max_window": "2h"}},
        "sinks": {"readings_api": {
            "source": "readings", "kind": "http", "url": url, "method": "PUT",
            "transform": "etl_assets_tests.transforms_for_tests:reading_documents",
            "headers_from_env": {"Authorization": "TEST_API_TOKEN"}, "retry_delay_s": 0.01,
            **sink}},
    }


@pytest.mark.slow
def test_documents_from_the_transform_land_by_id_and_the_token_is_never_recorded(
        pg: PgSchema, instance: DagsterInstance, fault_server: FaultServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SOURCE_URL", pg.url)
    monkeypatch.setenv("TEST_API_TOKEN", TOKEN)
    fault_server.faults.unavailable = 0.1
    source = create_pg_readings(pg, last=120)
    defs = build_definitions(parse_spec(spec_for(source, f"{fault_server.url}/docs/{{id}}")))
    assert defs.resolve_job_def("readings_api_replay_dead_letters") is not None
    metadata = run_partition(defs, instance, WHOLE)["readings_api"]
    run_partition(defs, instance, WHOLE)  # a re-run overwrites the same ids
    assert metadata["rows_written"].value == 120
    assert metadata["dagster/uri"].value == f"{fault_server.url}/docs/{{id}}"
    rows = pg.execute(f"SELECT id, code, amount, updated_at FROM {source} ORDER BY id")
    assert fault_server.documents == {
        str(i): {"id": i, "code": code, "reading": {"amount": None if amount is None else str(amount),
                                                    "at": at.astimezone(UTC).isoformat()}}
        for i, code, amount, at in rows}
    assert {h.get("Authorization") for h in fault_server.headers_seen} == {TOKEN}
    entries = [entry for run in instance.get_runs() for entry in instance.all_logs(run.run_id)]
    assert len(entries) > 20 and not any("s3cr3t" in str(entry) for entry in entries)


def test_secret_looking_plain_headers_are_refused_by_the_spec() -> None:
    spec = spec_for("public.t", "http://127.0.0.1:1/docs/{id}", headers={"Authorization": "Bearer x"})
    with pytest.raises(SpecError, match=r"sink 'readings_api': field 'headers': .*headers_from_env"):
        parse_spec(spec, "pipelines.yaml")
