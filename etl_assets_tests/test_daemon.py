"""The whole loop in real processes: dagster-daemon ticks the watermark sensor, which adds a
partition and launches a run; the run extracts, stages and upserts; rows land."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from etl_assets_tests.conftest import PgSchema, project_dagster_home
from etl_assets_tests.sample_tables import add_pg_readings, create_pg_readings, rows_differing

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
DEADLINE_SECONDS = 180


def wait_for(condition, what: str, daemon: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        if daemon.poll() is not None:
            pytest.fail(f"dagster-daemon exited ({daemon.returncode}):\n{log.read_text()[-4000:]}")
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}; daemon log:\n{log.read_text()[-4000:]}")


def test_daemon_sensor_launches_runs_and_rows_land(pg: PgSchema, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    source = create_pg_readings(pg, last=200)
    target = pg.table("landed")
    home = project_dagster_home(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "sources": {"readings": {
            "connection": {"env": "TEST_SOURCE_URL"}, "table": source, "cursor": "updated_at",
            "primary_key": ["id"], "max_window": "1d", "sensor_interval_seconds": 1,
            "sensor_running": True}},
        "sinks": {"readings_pg": {"source": "readings", "kind": "postgres",
                                  "connection": {"env": "TEST_TARGET_URL"}, "table": target}},
    }))
    env = {**os.environ, "DAGSTER_HOME": str(home), "ETL_ASSETS_SPEC": str(spec),
           "TEST_SOURCE_URL": pg.url, "TEST_TARGET_URL": pg.url,
           "ETL_ASSETS_HOME": str(tmp_path / "etl_home")}
    env.pop("DAGSTER_PG_HOST", None)
    log = tmp_path / "daemon.log"
    daemon_bin = Path(sys.executable).with_name("dagster-daemon")
    with log.open("w") as out:
        daemon = subprocess.Popen([str(daemon_bin), "run", "-w", str(PROJECT / "workspace.yaml")],
                                  cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        def landed(rows: int):
            def check() -> bool:
                found = pg.execute("SELECT to_regclass(%s)", (target,))[0][0]
                return bool(found) and pg.execute(f"SELECT count(*) FROM {target}")[0][0] == rows
            return check

        wait_for(landed(200), "the first 200 rows", daemon, log)
        add_pg_readings(pg, source, 201, 230)
        wait_for(landed(230), "30 new rows", daemon, log)
        assert rows_differing(pg, source, target) == 0
        # Rows are visible before their run has reported success: let every run finish
        # before stopping the daemon (which stops its run workers with it).
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        with DagsterInstance.get() as instance:
            def runs_finished() -> bool:
                runs = instance.get_runs(RunsFilter(job_name="readings_job"))
                return bool(runs) and all(r.is_finished for r in runs)
            wait_for(runs_finished, "every run to finish", daemon, log)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)

    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(job_name="readings_job"))
        assert runs and all(r.status == DagsterRunStatus.SUCCESS for r in runs)
        assert {r.tags["dagster/partition"] for r in runs} == set(
            instance.get_dynamic_partitions("readings_windows"))
