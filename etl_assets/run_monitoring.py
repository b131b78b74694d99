"""Run monitoring that notices a dead run worker: a run whose process was killed (kill -9, the
OOM killer) is marked FAILED by the daemon instead of staying STARTED for ever.

Dagster's ``DefaultRunLauncher`` has no run-worker health check, so its run monitoring only
enforces timeouts: a run of ``dagster job execute`` (no launcher, no code server) that is killed
stays STARTED (runs launched through a code server are failed by the server's orphan check).
:class:`LocalRunWorkerLauncher` is the ``DefaultRunLauncher`` plus that check. The run worker
tags its run with its host, pid and process start time (:func:`register_run_worker`, called by
each asset of the factory as it starts; the start time tells a reused pid from the worker);
the check looks that process up and, when it cannot know (no tag yet, another host), answers
RUNNING so that a live run is never failed.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass

import psutil
from dagster import (
    AssetExecutionContext,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DefaultRunLauncher,
    OpExecutionContext,
)
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

RUN_WORKER_TAG = "etl_assets/run_worker"
# psutil's start times of one process agree to the clock tick; a reused pid starts later
_SAME_START_S = 1.0

_registered: set[str] = set()  # runs this process has tagged


@dataclass(frozen=True)
class RunWorker:
    """The process that executes a run: host name, pid and start time (seconds since the
    epoch)."""

    host: str
    pid: int
    started: float

    @classmethod
    def of_process(cls, pid: int) -> RunWorker:
        return cls(socket.gethostname(), pid, psutil.Process(pid).create_time())

    @classmethod
    def from_tag(cls, value: str | None) -> RunWorker | None:
        if not value:
            return None
        try:
            data = json.loads(value)
            return cls(str(data["host"]), int(data["pid"]), float(data["started"]))
        except (ValueError, KeyError, TypeError):
            return None

    def to_tag(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def health(self) -> CheckRunHealthResult:
        """RUNNING when the process lives (or cannot be checked from here), else NOT_FOUND."""
        if self.host != socket.gethostname():
            return CheckRunHealthResult(WorkerStatus.RUNNING,
                                        f"run worker on host {self.host}: not checked from here")
        try:
            process = psutil.Process(self.pid)
            alive = (abs(process.create_time() - self.started) < _SAME_START_S
                     and process.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            alive = False
        except psutil.AccessDenied:
            alive = True  # it exists; we may not read it
        if alive:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {self.pid} lives")
        return CheckRunHealthResult(
            WorkerStatus.NOT_FOUND,
            f"its run worker (pid {self.pid} on {self.host}) has exited without ending the run: "
            f"killed or crashed", run_worker_id=str(self.pid))


def register_run_worker(context: AssetExecutionContext | OpExecutionContext) -> None:
    """Tag the current run with its run worker (see :data:`RUN_WORKER_TAG`) unless it is.

    The run worker is the process that started the run: this one (in-process executor) or
    its parent (a step subprocess of the multiprocess executor); elsewhere (a step on another
    host, a Celery worker: :func:`register_run_process` tagged the run) nothing is tagged.
    """
    run, instance = context.run, context.instance
    if run.run_id in _registered or RUN_WORKER_TAG in run.tags:
        return
    _registered.add(run.run_id)
    pid = _run_start_pid(instance, run.run_id)
    if pid in (os.getpid(), os.getppid()):
        _tag(instance, run.run_id, pid)


def register_run_process(instance: DagsterInstance, run_id: str) -> None:
    """Tag run ``run_id`` with this process, the one executing its plan, when its steps run in
    other processes that outlive it (Celery workers): called by the executor before it
    hands out the first step."""
    if run_id not in _registered:
        _registered.add(run_id)
        _tag(instance, run_id, os.getpid())


def _tag(instance: DagsterInstance, run_id: str, pid: int) -> None:
    try:
        worker = RunWorker.of_process(pid)
    except psutil.Error:
        return
    instance.add_run_tags(run_id, {RUN_WORKER_TAG: worker.to_tag()})


def _run_start_pid(instance: DagsterInstance, run_id: str) -> int | None:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_START,
                                           limit=1).records
    event = records[0].event_log_entry.dagster_event if records else None
    return event.pid if event else None


class LocalRunWorkerLauncher(DefaultRunLauncher):
    """Dagster's ``DefaultRunLauncher`` that also tells run monitoring whether a run's worker
    process is alive; name it under ``run_launcher`` in ``dagster.yaml``."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = RunWorker.from_tag(run.tags.get(RUN_WORKER_TAG))
        if worker is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING,
                                        "no run worker registered yet: not checked")
        return worker.health()
