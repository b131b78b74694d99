"""What a Dagster user sees, asked of the real webserver's GraphQL API: the assets' kinds,
owners, tags, column schema and checks; a sensor-launched run's checks passing; a backfill of
several windows launched through the API running as one run with per-partition results."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from etl_assets_testing.servers.loopback import free_port
from etl_assets_tests.conftest import PgSchema, project_dagster_home
from etl_assets_tests.sample_tables import create_pg_readings, rows_differing

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
DEADLINE_SECONDS = 240
CHECKS = {"row_count_reconciliation", "schema_drift", "watermark_lag"}


class Dagster:
    """dagster-daemon and dagster-webserver on one instance, and the webserver's GraphQL."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.port = free_port()
        self.log = folder / "dagster.log"
        out = self.log.open("w")
        workspace = str(PROJECT / "workspace.yaml")
        bin_dir = Path(sys.executable).parent
        self.processes = [
            subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", "-w", workspace],
                             cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True),
            subprocess.Popen([str(bin_dir / "dagster-webserver"), "-w", workspace,
                              "-h", "127.0.0.1", "-p", str(self.port)],
                             cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True),
        ]

    def query(self, text: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql",
            data=json.dumps({"query": text, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            body = json.loads(answer.read())
        assert "errors" not in body, body["errors"]
        return body["data"]

    def wait_for(self, condition: Callable[[], object], what: str) -> object:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    pytest.fail(f"{process.args[0]} exited ({process.returncode}):\n"
                                f"{self.log.read_text()[-4000:]}")
            try:
                found = condition()
            except (urllib.error.URLError, ConnectionError):
                found = None
            if found:
                return found
            time.sleep(1)
        pytest.fail(f"timed out waiting for {what}; log:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        for process in self.processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def dagster(pg: PgSchema, tmp_path: Path) -> Iterator[tuple[Dagster, str, str]]:
    source = create_pg_readings(pg, last=200)  # 00:01 .. 03:20, four one-hour windows
    target = pg.table("landed")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "sources": {"readings": {
            "connection": {"env": "TEST_SOURCE_URL"}, "table": source, "cursor": "updated_at",
            "primary_key": ["id"], "max_window": "1h", "sensor_interval_seconds": 1,
            "sensor_running": True, "owners": ["team:sensors"], "tags": {"domain": "iot"},
            "backfill": "single_run"}},
        "sinks": {
            "readings_pg": {"source": "readings", "kind": "postgres",
                            "connection": {"env": "TEST_TARGET_URL"}, "table": target,
                            "owners": ["alice@example.com"],
                            "checks": {"max_watermark_lag": "1d", "blocking": True}},
            "readings_csv": {"source": "readings", "kind": "parquet", "format": "csv",
                             "path": str(tmp_path / "lake")},
        },
    }))
    env = {**os.environ, "DAGSTER_HOME": str(project_dagster_home(tmp_path)),
           "ETL_ASSETS_SPEC": str(spec), "TEST_SOURCE_URL": pg.url, "TEST_TARGET_URL": pg.url,
           "ETL_ASSETS_HOME": str(tmp_path / "etl_home")}
    env.pop("DAGSTER_PG_HOST", None)
    servers = Dagster(env, tmp_path)
    try:
        yield servers, source, target
    finally:
        servers.stop()


ASSETS = """{ assetNodes { assetKey { path } kinds groupName
  owners { ... on UserAssetOwner { email } ... on TeamAssetOwner { team } }
  tags { key value }
  assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }"""

MATERIALIZATIONS = """query ($path: [String!]!) { assetOrError(assetKey: {path: $path}) {
  ... on Asset { assetMaterializations(limit: 20) { partition runId metadataEntries { label
    ... on IntMetadataEntry { intValue }
    ... on TableSchemaMetadataEntry { schema { columns { name type } } } } } } } }"""

CHECK_EXECUTIONS = """query ($path: [String!]!, $name: String!) {
  assetCheckExecutions(assetKey: {path: $path}, checkName: $name, limit: 50) {
    runId status evaluation { success partition } } }"""

RUNS = """{ runsOrError(filter: {pipelineName: "readings_job"}) { ... on Runs { results {
  runId status tags { key value } } } } }"""


def entry(entries: list[dict], label: str) -> dict:
    return next(e for e in entries if e["label"] == label)


def test_graphql_shows_kinds_owners_schema_and_checks_that_pass(
        dagster: tuple[Dagster, str, str], pg: PgSchema) -> None:
    servers, source, target = dagster
    nodes = servers.wait_for(lambda: servers.query(ASSETS)["assetNodes"], "the webserver")
    by_name = {node["assetKey"]["path"][-1]: node for node in nodes}
    assert {"postgres", "parquet"} <= set(by_name["readings"]["kinds"])
    assert set(by_name["readings_pg"]["kinds"]) == {"postgres"}
    assert "csv" in by_name["readings_csv"]["kinds"] and "parquet" not in by_name["readings_csv"]["kinds"]
    assert by_name["readings"]["owners"] == [{"team": "sensors"}]
    assert {"key": "domain", "value": "iot"} in by_name["readings"]["tags"]
    assert by_name["readings_pg"]["owners"] == [{"email": "alice@example.com"}]
    checks = {c["name"]: c["blocking"] for c in
              by_name["readings_pg"]["assetChecksOrError"]["checks"]}
    assert checks == {"row_count_reconciliation": True, "schema_drift": False,
                      "watermark_lag": False}

    # The sensor adds the four windows and launches a run for each; wait for all to finish.
    def sensor_runs_done() -> list[dict] | None:
        runs = servers.query(RUNS)["runsOrError"]["results"]
        done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
        return runs if len(runs) >= 4 and len(done) == len(runs) else None

    runs = servers.wait_for(sensor_runs_done, "the sensor's four runs")
    assert all(r["status"] == "SUCCESS" for r in runs), runs
    assert all({"key": "dagster/sensor_name", "value": "readings_watermark_sensor"} in r["tags"]
               for r in runs)
    assert rows_differing(pg, source, target) == 0

    executions = servers.query(CHECK_EXECUTIONS, {"path": ["readings_pg"],
                                                  "name": "row_count_reconciliation"})
    passed = {e["evaluation"]["partition"] for e in executions["assetCheckExecutions"]
              if e["status"] == "SUCCEEDED" and e["evaluation"]["success"]}
    assert len(passed) == 4
    for name in ("schema_drift", "watermark_lag"):
        found = servers.query(CHECK_EXECUTIONS, {"path": ["readings_pg"], "name": name})
        assert {e["status"] for e in found["assetCheckExecutions"]} == {"SUCCEEDED"}

    materialized = servers.query(MATERIALIZATIONS, {"path": ["readings_pg"]})
    latest = materialized["assetOrError"]["assetMaterializations"][0]["metadataEntries"]
    columns = {c["name"]: c["type"] for c in
               entry(latest, "dagster/column_schema")["schema"]["columns"]}
    assert columns["id"] == "bigint" and columns["updated_at"].startswith("timestamp")
    assert entry(latest, "dagster/row_count")["intValue"] == 200  # rows in the table


LAUNCH_BACKFILL = """mutation ($partitions: [String!]!) { launchPartitionBackfill(backfillParams: {
  assetSelection: [{path: ["readings"]}, {path: ["readings_pg"]}, {path: ["readings_csv"]}],
  partitionNames: $partitions}) {
  ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""


BACKFILL = """query ($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status error { message } } } }"""


# A backfill's runs are of Dagster's own asset job, not readings_job: found by their tag.
BACKFILL_RUNS = """query ($id: String!) { runsOrError(filter: {tags: [
  {key: "dagster/backfill", value: $id}]}) { ... on Runs { results { runId status } } } }"""


def test_a_backfill_of_four_windows_from_the_api_is_one_run(
        dagster: tuple[Dagster, str, str]) -> None:
    servers, _, _ = dagster
    def four_partitions() -> list[dict] | None:
        sets = servers.query(
            '{ partitionSetsOrError(repositorySelector: {repositoryName: "__repository__", '
            'repositoryLocationName: "etl_assets"}, pipelineName: "readings_job") '
            '{ ... on PartitionSets { results { partitionsOrError { ... on Partitions '
            '{ results { name } } } } } } }')["partitionSetsOrError"].get("results")
        if not sets:  # the webserver has not loaded the code location yet
            return None
        keys = sets[0]["partitionsOrError"].get("results") or []
        return keys if len(keys) == 4 else None

    partitions = servers.wait_for(four_partitions, "four partitions")
    keys = [p["name"] for p in partitions]
    servers.wait_for(lambda: len(servers.query(RUNS)["runsOrError"]["results"]) >= 4,
                     "the sensor's runs")
    launched = servers.query(LAUNCH_BACKFILL, {"partitions": keys})["launchPartitionBackfill"]
    assert "backfillId" in launched, launched
    backfill = launched["backfillId"]

    def backfill_runs() -> list[dict] | None:
        state = servers.query(BACKFILL, {"id": backfill})["partitionBackfillOrError"]
        assert state["status"] not in ("FAILED", "CANCELED"), state
        runs = servers.query(BACKFILL_RUNS, {"id": backfill})["runsOrError"]["results"]
        return runs if runs and all(r["status"] in ("SUCCESS", "FAILURE") for r in runs) else None

    runs = servers.wait_for(backfill_runs, "the backfill's run")
    assert len(runs) == 1 and runs[0]["status"] == "SUCCESS", runs
    run_id = runs[0]["runId"]
    materialized = servers.query(MATERIALIZATIONS, {"path": ["readings_pg"]})
    in_run = {m["partition"]: m for m in materialized["assetOrError"]["assetMaterializations"]
              if m["runId"] == run_id}
    assert set(in_run) == set(keys)
    assert sum(entry(m["metadataEntries"], "rows_written")["intValue"]
               for m in in_run.values()) == 200
    executions = servers.query(CHECK_EXECUTIONS, {"path": ["readings_pg"],
                                                  "name": "row_count_reconciliation"})
    assert {e["evaluation"]["partition"] for e in executions["assetCheckExecutions"]
            if e["runId"] == run_id and e["evaluation"]["success"]} == set(keys)
