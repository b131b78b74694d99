"""The instance of dagster.yaml, for real: a killed run is marked FAILURE by one run-monitoring
iteration while a live one is left alone, and the run queue holds a second run of a partition
that is already running."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.launcher import WorkerStatus
from dagster._core.test_utils import create_run_for_test
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import EmptyWorkspaceTarget, ModuleTarget
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

from etl_assets.cli import main as etl_assets_cli
from etl_assets.run_monitoring import RUN_WORKER_TAG, LocalRunWorkerLauncher, RunWorker
from etl_assets_tests.conftest import PgSchema, project_dagster_home
from etl_assets_tests.sample_tables import create_pg_readings

PROJECT = Path(__file__).resolve().parents[1]
DEADLINE_S = 180
log = logging.getLogger(__name__)


@pytest.fixture
def project_instance(pg: PgSchema, tmp_path: Path, etl_home: Path,
                     monkeypatch: pytest.MonkeyPatch) -> Iterator[DagsterInstance]:
    """A persistent instance configured by the project's dagster.yaml, and a spec of one
    source (rows 1..20 by id, a partition per 10) and a file sink whose transform sleeps
    ``$ETL_TEST_SLOW_S`` seconds a batch."""
    home = project_dagster_home(tmp_path)
    table = create_pg_readings(pg, last=20)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "sources": {"readings": {"connection": {"env": "TEST_SOURCE_URL"}, "table": table,
                                 "cursor": "id", "primary_key": ["id"], "max_window": 10}},
        "sinks": {"readings_files": {"source": "readings", "kind": "parquet",
                                     "path": str(tmp_path / "lake"),
                                     "transform": "etl_assets_tests.transforms_for_tests:slow_rows"}},
    }))
    for name, value in {"DAGSTER_HOME": str(home), "ETL_ASSETS_SPEC": str(spec),
                        "TEST_SOURCE_URL": pg.url, "ETL_TEST_SLOW_S": "300"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DAGSTER_PG_HOST", raising=False)
    assert etl_assets_cli(["add-partitions", "readings"]) == 0
    with DagsterInstance.get() as instance:
        assert sorted(instance.get_dynamic_partitions("readings_windows")) == ["0..10", "10..20"]
        yield instance


def wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def job_execute(partition: str, log_file: Path) -> subprocess.Popen:
    """``dagster job execute`` of one partition: no queue, no launcher, no code server."""
    dagster = Path(sys.executable).with_name("dagster")
    with log_file.open("w") as out:
        return subprocess.Popen(
            [str(dagster), "job", "execute", "-m", "etl_assets.definitions", "-j", "readings_job",
             "--tags", json.dumps({"dagster/partition": partition})],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def run_of(instance: DagsterInstance, partition: str) -> DagsterRun | None:
    runs = instance.get_runs(RunsFilter(tags={"dagster/partition": partition}))
    return runs[0] if runs else None


def registered(instance: DagsterInstance, partition: str) -> bool:
    run = run_of(instance, partition)
    return bool(run and run.status == DagsterRunStatus.STARTED and RUN_WORKER_TAG in run.tags)


def monitor_once(instance: DagsterInstance) -> None:
    with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as context:
        errors = [e for e in execute_run_monitoring_iteration(context, log) if e is not None]
    assert not errors, errors


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


@pytest.mark.slow
def test_a_killed_run_is_marked_failed_and_a_live_one_is_not(
        project_instance: DagsterInstance, tmp_path: Path) -> None:
    instance = project_instance
    assert isinstance(instance.run_launcher, LocalRunWorkerLauncher)
    killed = job_execute("0..10", tmp_path / "killed.log")
    live = job_execute("10..20", tmp_path / "live.log")
    try:
        wait_for(lambda: registered(instance, "0..10") and registered(instance, "10..20"),
                 "both runs to start and register their worker")
        worker = RunWorker.from_tag(run_of(instance, "0..10").tags[RUN_WORKER_TAG])
        assert worker and (worker.host, worker.pid) == (socket.gethostname(), killed.pid)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(30)

        monitor_once(instance)
        dead_run = run_of(instance, "0..10")
        assert dead_run.status == DagsterRunStatus.FAILURE
        failure = instance.get_records_for_run(
            dead_run.run_id, of_type=DagsterEventType.RUN_FAILURE).records[0]
        assert f"(pid {killed.pid} on {socket.gethostname()}) has exited" in \
            failure.event_log_entry.dagster_event.message
        assert run_of(instance, "10..20").status == DagsterRunStatus.STARTED
        assert live.poll() is None

        stop(live)  # and once it is killed too, the next iteration fails it
        monitor_once(instance)
        assert run_of(instance, "10..20").status == DagsterRunStatus.FAILURE
    finally:
        stop(killed)
        stop(live)


def test_a_reused_pid_or_another_host_is_judged_right(project_instance: DagsterInstance) -> None:
    launcher = project_instance.run_launcher
    me = RunWorker.of_process(os.getpid())

    def health(worker: RunWorker | None) -> WorkerStatus:
        tags = {RUN_WORKER_TAG: worker.to_tag()} if worker else {}
        return launcher.check_run_worker_health(
            create_run_for_test(project_instance, tags=tags)).status

    assert health(me) == WorkerStatus.RUNNING
    assert health(None) == WorkerStatus.RUNNING  # not registered yet: cannot tell
    assert health(RunWorker("another-host", 1, 0.0)) == WorkerStatus.RUNNING
    # this pid, but a process that started an hour earlier: the worker was another process
    assert health(RunWorker(me.host, me.pid, me.started - 3600)) == WorkerStatus.NOT_FOUND
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(gone.pid).create_time()
    gone.wait()
    assert health(RunWorker(me.host, gone.pid, started)) == WorkerStatus.NOT_FOUND


@pytest.mark.slow
def test_the_queue_holds_a_second_run_of_a_running_partition(
        project_instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    instance = project_instance
    monkeypatch.setenv("ETL_TEST_SLOW_S", "0")
    target = ModuleTarget(module_name="etl_assets.definitions", attribute=None,
                          working_directory=str(PROJECT), location_name="etl_assets")
    with WorkspaceProcessContext(instance, target) as context, \
            QueuedRunCoordinatorDaemon(interval_seconds=1) as daemon:
        location = context.create_request_context().get_code_location("etl_assets")
        job = location.get_repository("__repository__").get_full_job("readings_job")

        def queue(partition: str) -> str:
            return create_run_for_test(
                instance, job_name="readings_job", status=DagsterRunStatus.QUEUED,
                remote_job_origin=job.get_remote_origin(),
                job_code_origin=job.get_python_origin(),
                tags={"dagster/partition": partition}).run_id

        first, second, other = queue("0..10"), queue("0..10"), queue("10..20")

        def status(run_id: str) -> DagsterRunStatus:
            return instance.get_run_by_id(run_id).status

        list(daemon.run_iteration(context))
        assert status(first) != DagsterRunStatus.QUEUED
        assert status(other) != DagsterRunStatus.QUEUED
        assert status(second) == DagsterRunStatus.QUEUED  # held: its partition is running
        wait_for(lambda: status(first) == status(other) == DagsterRunStatus.SUCCESS,
                 "the first runs to succeed")
        # launched through the code server, the run worker is a process of this host
        worker = RunWorker.from_tag(instance.get_run_by_id(first).tags.get(RUN_WORKER_TAG))
        assert worker and worker.host == socket.gethostname() and worker.pid != os.getpid()
        list(daemon.run_iteration(context))
        assert status(second) != DagsterRunStatus.QUEUED
        wait_for(lambda: status(second) == DagsterRunStatus.SUCCESS, "the second run")
