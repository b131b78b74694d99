"""What the HTTP sink says of its target: run metadata per partition (a range of them in one
step too), its URL (masked), its description and kinds."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from dagster import DagsterInstance

from etl_assets.secrets import mask_text
from etl_assets.sinks.http.spec import HttpSinkSpec
from etl_assets.watermark import Window
from etl_assets_testing.servers.fault_http import FaultServer
from etl_assets_tests.sinks.http.test_http_api import DAY, SCHEMA, batch, expected, sink, write
from etl_assets_tests.sinks.sink_runs import run_range

UTC = timezone.utc
NEXT_DAY = Window(DAY.hi, datetime(2024, 3, 3, tzinfo=UTC))
TOKEN = "tok-0123456789-secret"


def test_a_range_run_sends_each_partition_and_each_has_its_own_metadata(
        fault_server: FaultServer, etl_home: Path, instance: DagsterInstance) -> None:
    manager = sink(etl_home, url=f"{fault_server.url}/_bulk", format="ndjson_bulk", bulk_docs=10)
    first_rows, second_rows = [batch(range(0, 25))], [batch(range(25, 30)), batch(range(30, 34))]
    metadata = run_range(manager, {DAY: first_rows, NEXT_DAY: second_rows}, SCHEMA, instance)
    first, second = metadata[DAY.key], metadata[NEXT_DAY.key]
    assert (first["rows_written"], second["rows_written"]) == (25, 9)
    assert first["dagster/uri"] == second["dagster/uri"] == f"{fault_server.url}/_bulk"
    assert "dagster/row_count" not in first and "dagster/column_schema" not in first
    assert fault_server.documents == expected(first_rows + second_rows)


def test_the_uri_resolves_plain_variables_and_masks_secrets(
        etl_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_HOST", "api.example:9200")
    monkeypatch.setenv("API_TOKEN", TOKEN)
    manager = sink(etl_home, url="https://${API_HOST}/hooks/${API_TOKEN}/x?token=${API_TOKEN}&a=1")
    uri = manager.target_metadata()["dagster/uri"]
    assert uri == "https://api.example:9200/hooks/${API_TOKEN}/x?token=***&a=1"
    # once a run resolves the URL, the token's value is masked wherever it shows up
    manager.target_url()
    assert TOKEN not in mask_text(f"GET https://api.example:9200/hooks/{TOKEN}/x failed")


def test_the_description_shows_the_url_as_written_never_resolved(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", TOKEN)
    monkeypatch.setenv("API_HOST", "api.example")

    def spec(url: str, **config: Any) -> HttpSinkSpec:
        return HttpSinkSpec(kind="http", source="events", url=url, **config)

    shown = spec("https://${API_HOST}/docs/{id}?token=${API_TOKEN}").describe_target()
    assert shown == "https://${API_HOST}/docs/{id}?token=${API_TOKEN} (single)"
    assert TOKEN not in shown and "api.example" not in shown
    assert spec("http://search:9200/events/_bulk", format="ndjson_bulk").describe_target() == \
        "http://search:9200/events/_bulk (ndjson_bulk)"


@pytest.mark.parametrize(("url", "config", "kinds"), [
    ("http://api/docs/{id}", {}, {"http"}),
    ("http://couch:5984/db/{id}", {"couchdb_revisions": True, "method": "PUT"}, {"http", "couchdb"}),
    ("http://couch:5984/db/_bulk_docs", {"format": "json_array_bulk", "wrap": "docs"},
     {"http", "couchdb"}),
    ("http://search:9200/events/_bulk", {"format": "ndjson_bulk"}, {"http", "elasticsearch"}),
    ("http://datasette:8001/db/t/-/insert", {"format": "json_array_bulk", "wrap": "rows"},
     {"http", "datasette"}),
])
def test_kinds_name_the_target_system(url: str, config: dict[str, Any], kinds: set[str]) -> None:
    assert HttpSinkSpec(kind="http", source="events", url=url, **config).asset_kinds() == kinds


def test_rows_written_counts_what_the_api_took(fault_server: FaultServer, etl_home: Path) -> None:
    fault_server.faults.refused_ids = {"3"}
    manager = sink(etl_home, url=f"{fault_server.url}/docs/{{id}}", method="PUT",
                   on_error="dead_letter")
    metadata = write(manager, [batch(range(5)), pa.RecordBatch.from_pylist([], SCHEMA)])
    assert (metadata["rows_written"], metadata["documents_failed"]) == (4, 1)
