"""How a run's steps are executed: in the run's process (the default), in a subprocess each on
this machine, or as Celery tasks on workers that may be other machines (dagster-celery).

``ExecutorSpec`` is the spec's ``executor:`` section; :func:`executor_definition` gives the
Dagster executor every job of the spec uses. A Celery broker or result backend given as
``${VAR}`` reaches Dagster as ``{"env": "VAR"}``: the URL, which may hold a password, is read
from the environment by the run and by each worker (``etl-assets worker``), and is never
stored with a run or printed.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from dagster import DagsterEvent, ExecutorDefinition, in_process_executor, multiprocess_executor
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.retries import RetryMode
from dagster._core.execution.step_dependency_config import StepDependencyConfig
from dagster._core.executor.base import Executor
from pydantic import Field, field_validator, model_validator

from etl_assets.code_versions import NotData
from etl_assets.errors import ConfigurationError
from etl_assets.run_monitoring import register_run_process
from etl_assets.secrets import mask_text, remember_secrets_in, secret_parts
from etl_assets.settings import StrictModel, env_var_names

ExecutorKind = Literal["in_process", "multiprocess", "celery"]
CELERY_EXTRA = "celery"
QUEUE_TAG = "dagster-celery/queue"  # dagster-celery's op tag: the queue a step is sent to
DEFAULT_QUEUE = "dagster"  # dagster-celery's default queue
_WHOLE_VARIABLE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_KIND_OF_FIELD = {"max_concurrent": "multiprocess", "broker": "celery", "backend": "celery",
                  "queue": "celery", "queues": "celery"}


def _queue_name(value: str) -> str:
    if not _QUEUE_NAME.match(value):
        raise ValueError(f"queue {value!r}: use letters, digits, '_', '.' and '-'")
    return value


class ExecutorSpec(StrictModel):
    """How the steps of a run (the source's extraction, each sink's write) are executed."""

    kind: NotData[ExecutorKind] = Field(
        "in_process", description="in_process: one after the other in the run's process; "
                                  "multiprocess: a subprocess a step on this machine; celery: "
                                  "a Celery task a step, on `etl-assets worker` processes "
                                  "(staging and dead letters must then be on an object store "
                                  "or a shared volume, Dagster's storage on PostgreSQL)")
    max_concurrent: NotData[int | None] = Field(
        None, gt=0, description="multiprocess: steps at once (default: the CPU count)")
    broker: NotData[str] = Field(
        "${ETL_ASSETS_CELERY_BROKER}",
        description="celery: the broker URL (redis://host:6379/0, amqp://user:pass@host:5672//) "
                    "as ${VAR}, the URL in the environment of the run and of each worker; a "
                    "URL without a password may be written out")
    backend: NotData[str] = Field(
        "rpc://", description="celery: where task results go back to the run; rpc:// (the "
                              "default) sends them over the broker, with Redis or RabbitMQ "
                              "alike; ${VAR} or a URL without a password")
    queue: NotData[str] = Field(
        DEFAULT_QUEUE, description="celery: the queue steps are sent to, and that "
                                   "`etl-assets worker` listens on by default")
    queues: NotData[dict[str, str]] = Field(
        default_factory=dict, description="celery: source or sink name -> the queue its steps "
                                          "are sent to instead of `queue` (e.g. extraction on "
                                          "workers near the source database)")

    @field_validator("broker", "backend")
    @classmethod
    def _url_from_env(cls, value: str) -> str:
        if _WHOLE_VARIABLE.match(value):
            return value
        if "${" in value:
            raise ValueError("give the whole URL as one ${VAR} (Dagster reads it from the "
                             "environment as a whole) or write it out without a password")
        found = secret_parts(value)
        if found:
            raise ValueError(f"holds a password or another secret ({', '.join(found)}): put "
                             f"the whole URL in an environment variable and give it as ${{VAR}}")
        return value

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str) -> str:
        return _queue_name(value)

    @field_validator("queues")
    @classmethod
    def _queues(cls, value: dict[str, str]) -> dict[str, str]:
        for queue in value.values():
            _queue_name(queue)
        return value

    @model_validator(mode="after")
    def _settings_of_the_kind(self) -> ExecutorSpec:
        other = [field for field in sorted(self.model_fields_set)
                 if _KIND_OF_FIELD.get(field, self.kind) != self.kind]
        if other:
            raise ValueError(f"{', '.join(other)}: setting(s) of kind "
                             f"{_KIND_OF_FIELD[other[0]]}, not of kind {self.kind}")
        return self

    def environment_variables(self) -> list[tuple[str, str]]:
        """(field, variable) for each environment variable the executor reads (none unless
        its kind is celery: the default broker's variable is not needed otherwise)."""
        return env_var_names(self, "executor") if self.kind == "celery" else []

    def queue_of(self, asset_name: str) -> str:
        """The Celery queue the steps of the source or sink ``asset_name`` are sent to."""
        return self.queues.get(asset_name, self.queue)

    def step_tags(self, asset_name: str) -> dict[str, str]:
        """The op tags of the source or sink ``asset_name``'s step: its Celery queue when it is
        not dagster-celery's default."""
        if self.kind != "celery" or self.queue_of(asset_name) == DEFAULT_QUEUE:
            return {}
        return {QUEUE_TAG: self.queue_of(asset_name)}

    def celery_config(self) -> dict[str, Any]:
        """The config of dagster-celery's executor (and of its workers): a ``${VAR}`` URL as
        ``{"env": "VAR"}``, which Dagster resolves where it runs."""
        config: dict[str, Any] = {"broker": _config_value(self.broker),
                                  "backend": _config_value(self.backend)}
        if self.queue != DEFAULT_QUEUE:
            config["config_source"] = {"task_default_queue": self.queue}
        return config


def _config_value(value: str) -> str | dict[str, str]:
    """``${VAR}`` as Dagster's ``{"env": "VAR"}``, any other value as it is."""
    match = _WHOLE_VARIABLE.match(value)
    return {"env": match.group(1)} if match else value


def celery_module(where: str) -> Any:  # noqa: ANN401 (a module)
    """dagster_celery; a ConfigurationError naming the extra when it is not installed."""
    try:
        import dagster_celery
    except ImportError as exc:
        raise ConfigurationError(
            f"{where}: kind celery needs the `{CELERY_EXTRA}` extra "
            f"(pip install 'etl_assets[{CELERY_EXTRA}]'): {exc}") from None
    return dagster_celery


def executor_definition(spec: ExecutorSpec) -> ExecutorDefinition:
    """The Dagster executor of ``spec``, configured."""
    if spec.kind == "in_process":
        return in_process_executor
    if spec.kind == "multiprocess":
        if spec.max_concurrent is None:
            return multiprocess_executor
        return multiprocess_executor.configured({"max_concurrent": spec.max_concurrent})
    celery: ExecutorDefinition = celery_module("executor").celery_executor
    return _tagging_the_run_process(celery).configured(spec.celery_config())


def _tagging_the_run_process(definition: ExecutorDefinition) -> ExecutorDefinition:
    """``definition`` whose executor first tags the run with the process that executes its
    plan (:func:`etl_assets.run_monitoring.register_run_process`: no step runs in it, so no
    step can), then executes as it would: run monitoring then fails the run when that
    process dies, as it does for runs whose steps run in their own process."""
    create = definition.executor_creation_fn
    assert create is not None
    return ExecutorDefinition(
        name=definition.name, config_schema=definition.config_schema.as_field(),
        requirements=definition.get_requirements, description=definition.description,
        executor_creation_fn=lambda init_context: _RunProcessTagging(create(init_context)))


def _resolved(value: str, field: str) -> str:
    """A broker or backend setting as the worker uses it: ``${VAR}`` read from the
    environment (remembered as a secret, so that it is masked wherever it appears)."""
    match = _WHOLE_VARIABLE.match(value)
    if match is None:
        return value
    resolved = os.environ.get(match.group(1))
    if not resolved:
        raise ConfigurationError(f"executor.{field}: environment variable {match.group(1)} "
                                 f"is not set (the Celery {field} URL)")
    remember_secrets_in(resolved)
    return resolved


class _RunProcessTagging(Executor):
    """An executor that tags the run with its process, then lets ``inner`` execute it. It is
    the plan context's executor, on which the inner one's execution loop reads its own
    settings (dagster-celery's ``app_args()``...): they are the inner one's."""

    def __init__(self, inner: Executor) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 (whatever the inner one has)
        return getattr(self._inner, name)

    @property
    def retries(self) -> RetryMode:
        return self._inner.retries

    @property
    def step_dependency_config(self) -> StepDependencyConfig:
        return self._inner.step_dependency_config

    def execute(self, plan_context: PlanOrchestrationContext,
                execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
        register_run_process(plan_context.instance, plan_context.run_id)
        return self._inner.execute(plan_context, execution_plan)


class _Masking(logging.Filter):
    """Masks secrets (:func:`etl_assets.secrets.mask_text`) in every record a handler writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = mask_text(record.getMessage()), None
        if record.exc_info:  # the traceback, formatted here so that it is masked too
            record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def _mask_handlers(logger: logging.Logger, **_: object) -> None:
    for handler in logger.handlers:
        handler.addFilter(_Masking())


def celery_worker_app(spec: ExecutorSpec, where: str) -> Any:  # noqa: ANN401 (a Celery app)
    """The Celery app of a worker for the executor of ``spec`` (``where`` names the spec in
    errors): its broker and backend read from the environment, the task that executes a step
    registered, secrets masked in the worker's log lines."""
    if spec.kind != "celery":
        raise ConfigurationError(f"{where}: executor: kind is {spec.kind}, not celery: a "
                                 f"worker has no steps to run (set `executor: {{kind: celery}}`)")
    celery_module(f"{where}: executor")
    from celery.signals import after_setup_logger, after_setup_task_logger
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    executor = CeleryExecutor.for_cli(broker=_resolved(spec.broker, "broker"),
                                      backend=_resolved(spec.backend, "backend"),
                                      config_source=spec.celery_config().get("config_source"))
    app = make_app(executor.app_args())  # as the run's executor makes it: the same routes
    create_task(app)  # the task that executes a step (dagster_celery.app's)
    after_setup_logger.connect(_mask_handlers, weak=False)
    after_setup_task_logger.connect(_mask_handlers, weak=False)
    return app


def run_celery_worker(app: Any, queues: Sequence[str], concurrency: int | None = None,  # noqa: ANN401 (a Celery app)
                      name: str | None = None, loglevel: str = "INFO") -> None:
    """Run a worker of ``app`` (:func:`celery_worker_app`) in this process, which becomes the
    worker's main process; it returns when the worker stops (SIGTERM: a warm shutdown, which
    waits for the steps it runs). ``queues``: the queues to take steps from;
    ``concurrency``: steps at once (default: the CPU count); ``name``: the worker is
    ``name@host`` (default: etl-assets-<random>), the name each step's events show."""
    name = name or f"etl-assets-{uuid.uuid4().hex[:6]}"
    argv = ["worker", "--prefetch-multiplier=1", f"--loglevel={loglevel}",
            "--queues", ",".join(queues),
            "--hostname", name if "@" in name else f"{name}@%h"]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    app.worker_main(argv)
