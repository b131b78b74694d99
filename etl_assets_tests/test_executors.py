"""The spec's `executor:`: its kinds, the Celery broker and backend taken from the environment
(never a literal password), the variables it names, the queues of steps, and the one-line
errors of a missing extra and of `etl-assets worker` without a celery executor. The real
runs on Celery workers are in test_celery.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from dagster import in_process_executor, multiprocess_executor

from etl_assets.cli import main
from etl_assets.code_location import definitions_of
from etl_assets.executors import QUEUE_TAG, ExecutorSpec, executor_definition
from etl_assets.factory import build_definitions
from etl_assets.spec import SpecError, parse_spec

SOURCE = {"connection": {"url": "sqlite:////tmp/none.sqlite"}, "table": "r", "cursor": "u",
          "primary_key": ["id"]}


def spec_with(executor: dict | None, sinks: dict | None = None) -> dict:
    spec: dict = {"sources": {"r": SOURCE},
                  "sinks": sinks or {"lake": {"source": "r", "kind": "parquet",
                                              "path": "/tmp/lake"}}}
    if executor is not None:
        spec["executor"] = executor
    return spec


def test_the_default_is_in_process_for_every_job_and_dagsters_own() -> None:
    spec = parse_spec(spec_with(None))
    assert spec.executor == ExecutorSpec(kind="in_process")
    definitions = build_definitions(spec)
    assert definitions.executor is in_process_executor  # UI materializations, backfills
    job = definitions.resolve_job_def("r_job")
    assert job.executor_def is in_process_executor
    assert all(not node.tags for node in job.nodes)  # no step tags
    assert "ETL_ASSETS_CELERY_BROKER" not in spec.environment_variables()


def test_multiprocess_takes_max_concurrent() -> None:
    assert executor_definition(ExecutorSpec(kind="multiprocess")) is multiprocess_executor
    spec = parse_spec(spec_with({"kind": "multiprocess", "max_concurrent": 2}))
    job = build_definitions(spec).resolve_job_def("r_job")
    assert job.executor_def.name == "multiprocess"


def test_celery_takes_broker_and_backend_from_the_environment_as_dagster_env_config() -> None:
    spec = parse_spec(spec_with({"kind": "celery"}))
    assert spec.executor.celery_config() == {
        "broker": {"env": "ETL_ASSETS_CELERY_BROKER"}, "backend": "rpc://"}
    assert spec.environment_variables()["ETL_ASSETS_CELERY_BROKER"] == [
        "field 'executor.broker'"]
    definitions = build_definitions(spec)
    assert definitions.executor is not None and definitions.executor.name == "celery"
    assert definitions.resolve_job_def("r_job").executor_def is definitions.executor

    own = parse_spec(spec_with({"kind": "celery", "broker": "${MY_BROKER}",
                                "backend": "${MY_BACKEND}"}))
    assert own.executor.celery_config() == {"broker": {"env": "MY_BROKER"},
                                            "backend": {"env": "MY_BACKEND"}}
    assert sorted(own.environment_variables()) == ["MY_BACKEND", "MY_BROKER"]
    # a URL without a password may be written out: it is config as it is
    plain = parse_spec(spec_with({"kind": "celery", "broker": "redis://127.0.0.1:6379/3",
                                  "backend": "redis://127.0.0.1:6379/4"}))
    assert plain.executor.celery_config() == {"broker": "redis://127.0.0.1:6379/3",
                                              "backend": "redis://127.0.0.1:6379/4"}
    assert plain.environment_variables() == {}


@pytest.mark.parametrize(("executor", "error"), [
    ({"kind": "celery", "broker": "amqp://guest:guest@127.0.0.1:5672//"},
     "field 'executor.broker': holds a password or another secret (a password in the user info "
     "(user:password@)): put the whole "
     "URL in an environment variable and give it as ${VAR}"),
    ({"kind": "celery", "backend": "redis://127.0.0.1:6379/0?password=s3cret"},
     "field 'executor.backend': holds a password or another secret (parameter password): put "
     "the whole "
     "URL in an environment variable and give it as ${VAR}"),
    ({"kind": "celery", "broker": "redis://:${REDIS_PASSWORD}@127.0.0.1:6379/0"},
     "field 'executor.broker': give the whole URL as one ${VAR} (Dagster reads it from the "
     "environment as a whole) or write it out without a password"),
    ({"kind": "dask"},
     "field 'executor.kind': Input should be 'in_process', 'multiprocess' or 'celery'"),
    ({"broker": "${B}"}, "field 'executor': broker: setting(s) of kind celery, not of kind "
                         "in_process"),
    ({"kind": "celery", "max_concurrent": 4},
     "field 'executor': max_concurrent: setting(s) of kind multiprocess, not of kind celery"),
    ({"kind": "multiprocess", "max_concurrent": 0},
     "field 'executor.max_concurrent': Input should be greater than 0"),
    ({"kind": "celery", "queue": "a queue"},
     "field 'executor.queue': queue 'a queue': use letters, digits, '_', '.' and '-'"),
    ({"kind": "celery", "queues": {"nope": "q1"}},
     "executor.queues: no source or sink nope (sources and sinks: r, lake)"),
    ({"kind": "celery", "concurrency": 2}, "field 'executor.concurrency': Extra inputs are not "
                                           "permitted"),
])
def test_a_bad_executor_is_refused_naming_the_field(executor: dict, error: str) -> None:
    with pytest.raises(SpecError) as refused:
        parse_spec(spec_with(executor), "spec.yaml")
    assert str(refused.value) == f"spec.yaml: {error}"


def test_queues_send_a_sources_or_sinks_steps_to_a_queue_of_their_own() -> None:
    spec = parse_spec(spec_with({"kind": "celery", "queue": "etl", "queues": {"lake": "near_lake"}},
                                sinks={"lake": {"source": "r", "kind": "parquet", "path": "/tmp/a"},
                                       "other": {"source": "r", "kind": "parquet",
                                                 "path": "/tmp/b"}}))
    assert spec.executor.celery_config()["config_source"] == {"task_default_queue": "etl"}
    job = build_definitions(spec).resolve_job_def("r_job")
    assert {node.name: node.tags.get(QUEUE_TAG) for node in job.nodes} == {
        "r": "etl", "lake": "near_lake", "other": "etl"}
    default = build_definitions(parse_spec(spec_with({"kind": "celery"}))).resolve_job_def("r_job")
    assert all(QUEUE_TAG not in node.tags for node in default.nodes)  # dagster-celery's own


def test_celery_without_its_extra_is_one_line_naming_the_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_with({"kind": "celery"})))
    monkeypatch.setitem(sys.modules, "dagster_celery", None)  # as if it were not installed
    with pytest.raises(SpecError) as refused:
        definitions_of(parse_spec(spec_with({"kind": "celery"})), path)
    assert str(refused.value).startswith(
        f"{path}: executor: kind celery needs the `celery` extra "
        f"(pip install 'etl_assets[celery]'): ")
    for command in (["check"], ["worker"]):
        assert main(["--spec", str(path), *command]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"etl-assets: {path}: executor: kind celery needs the `celery` "
                              f"extra (pip install 'etl_assets[celery]')"), err
        assert err.count("\n") == 1


def test_worker_refuses_a_spec_whose_executor_is_not_celery_and_an_unset_broker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DAGSTER_PG_HOST", "127.0.0.1")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_with({"kind": "multiprocess"})))
    assert main(["--spec", str(path), "worker"]) == 2
    assert capsys.readouterr().err == (
        f"etl-assets: {path}: executor: kind is multiprocess, not celery: a worker has no steps "
        f"to run (set `executor: {{kind: celery}}`)\n")

    path.write_text(yaml.safe_dump(spec_with({"kind": "celery"})))
    monkeypatch.delenv("ETL_ASSETS_CELERY_BROKER", raising=False)
    assert main(["--spec", str(path), "worker"]) == 2
    assert capsys.readouterr().err == (
        "etl-assets: executor.broker: environment variable ETL_ASSETS_CELERY_BROKER is not set "
        "(the Celery broker URL)\n")


def test_check_lists_an_unset_broker_only_for_a_celery_executor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("ETL_ASSETS_CELERY_BROKER", raising=False)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_with({"kind": "celery"})))
    assert main(["--spec", str(path), "check", "--require-env"]) == 2
    assert ("unset: $ETL_ASSETS_CELERY_BROKER (field 'executor.broker')"
            in capsys.readouterr().out)
    path.write_text(yaml.safe_dump(spec_with(None)))
    assert main(["--spec", str(path), "check", "--require-env"]) == 0
    assert "unset:" not in capsys.readouterr().out
