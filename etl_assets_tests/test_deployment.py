"""The deployment files: the Dockerfile, docker-compose.yml (validated by `docker-compose config`)
and the Helm chart values in deploy/helm/values.yaml (their keys are the chart's)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from etl_assets.instance_storage import postgres_url_from_env
from etl_assets_tests.conftest import _unavailable

PROJECT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = PROJECT / "docker-compose.yml"
HELM_VALUES = PROJECT / "deploy" / "helm" / "values.yaml"
# The variables docker-compose.yml requires; a test sets them itself, or leaves one out.
REQUIRED = ("ETL_ASSETS_SPEC", "POSTGRES_PASSWORD")
# The Helm chart's default `global.dagsterHome`: DAGSTER_HOME in its pods.
CHART_DAGSTER_HOME = "/opt/dagster/dagster_home"


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", (PROJECT / "Dockerfile").read_text(), flags=re.M))


@pytest.fixture(scope="module")
def docker_compose() -> str:
    """docker-compose (v1), which validates a file offline; CI must have it (.ci/run)."""
    path = shutil.which("docker-compose")
    if path is None:
        _unavailable("docker-compose (.ci/run installs it)", FileNotFoundError("docker-compose"))
    return path


@pytest.fixture
def password() -> str:
    return f"pw-{secrets.token_hex(8)}"


def compose_config(docker_compose: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config -q` with the variables the file requires set only as ``env`` says."""
    environment = {k: v for k, v in os.environ.items() if k not in REQUIRED} | env
    return subprocess.run([docker_compose, "-f", str(COMPOSE_FILE), "config", "-q"],
                          capture_output=True, text=True, env=environment, timeout=60)


@pytest.mark.parametrize("spec", ["/opt/etl_assets/config/spec.yaml", "demo"])
def test_compose_file_is_valid_with_a_spec_or_demo(docker_compose: str, password: str,
                                                   spec: str) -> None:
    result = compose_config(docker_compose, ETL_ASSETS_SPEC=spec, POSTGRES_PASSWORD=password)
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_a_spec(docker_compose: str, password: str) -> None:
    # with ETL_ASSETS_SPEC unset, production would silently run the demo: refused, saying how
    # to ask for a spec or for the demo, and showing no secret
    result = compose_config(docker_compose, POSTGRES_PASSWORD=password)
    assert result.returncode != 0
    assert "set ETL_ASSETS_SPEC to the spec's path inside the container, or to demo" in result.stderr
    assert password not in result.stderr + result.stdout

    result = compose_config(docker_compose, ETL_ASSETS_SPEC="", POSTGRES_PASSWORD=password)
    assert result.returncode != 0
    assert "ETL_ASSETS_SPEC" in result.stderr


def test_compose_refuses_to_start_without_a_password(docker_compose: str) -> None:
    result = compose_config(docker_compose, ETL_ASSETS_SPEC="demo")
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD" in result.stderr


def test_compose_holds_no_literal_password() -> None:
    # every password is ${POSTGRES_PASSWORD:?...}: required, and no default
    text = COMPOSE_FILE.read_text()
    values = [value for _, value in re.findall(r"^\s*(\w*PASSWORD\w*):\s*(.*)$", text, flags=re.M)]
    values += re.findall(r"://[^:/@\s]+:([^@\n]+)@", text)  # URLs' user info
    assert len(values) >= 3
    for value in values:
        assert value.startswith("${POSTGRES_PASSWORD:?"), value


def test_compose_shape_workers_scale_and_depends_on_waits_for_health() -> None:
    services = compose()["services"]
    assert {"postgres", "broker", "user_code", "webserver", "daemon", "worker"} <= set(services)
    assert "etl_assets.definitions" in services["user_code"]["command"]

    worker = services["worker"]  # `docker compose up --scale worker=4`
    assert worker["command"] == ["etl-assets", "worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["image"] == services["user_code"]["image"]

    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on without conditions"
        for dependency, condition in depends_on.items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in services[dependency], (name, dependency)
    for name in ("postgres", "broker", "user_code", "webserver", "daemon"):
        assert "healthcheck" in services[name], name
    # python:3.11-slim has no curl: the image's checks use its own commands or python
    for name in ("user_code", "webserver", "daemon"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] in {"dagster", "dagster-daemon", "python"}, test


def test_pipeline_code_and_its_workers_get_the_same_env() -> None:
    services = compose()["services"]
    user_code, worker = services["user_code"]["environment"], services["worker"]["environment"]
    assert user_code == worker
    for name in ("ETL_ASSETS_SPEC", "DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD", "TARGET_PG_URL",
                 "ETL_ASSETS_CELERY_BROKER", "ETL_ASSETS_CELERY_BACKEND", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY"):
        assert name in worker, name
    assert worker["ETL_ASSETS_CELERY_BROKER"].startswith("redis://broker:")
    # the webserver and the daemon run no pipeline code: Dagster's storage only
    for name in ("webserver", "daemon"):
        environment = services[name]["environment"]
        assert "DAGSTER_PG_HOST" in environment and "TARGET_PG_URL" not in environment, name


def test_dockerfile_runs_as_a_fixed_non_root_user_and_installs_the_extras() -> None:
    dockerfile = (PROJECT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.M):
        for name in source.split():
            assert (PROJECT / name).exists(), name
    args = dockerfile_args()
    assert {"s3", "gcs", "celery", "bigquery"} <= set(args["EXTRAS"].split(","))

    users = re.findall(r"^USER (\S+)$", dockerfile, flags=re.M)
    assert users, "no USER: the image would run as root"
    user = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], users[-1])
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0, user
    assert f"DAGSTER_HOME={CHART_DAGSTER_HOME}" in dockerfile
    assert re.search(r'chown -R "\$UID:\$GID" "\$DAGSTER_HOME" "\$ETL_ASSETS_HOME"', dockerfile)

    workspace = yaml.safe_load((PROJECT / "docker" / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"]["host"] == "user_code"


def test_the_dockerfile_requirements_are_the_projects_and_the_extras() -> None:
    if sys.version_info < (3, 11):
        pytest.skip("docker/requirements.py runs in the image's Python 3.11 (tomllib)")

    def requirements(extras: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(PROJECT / "docker" / "requirements.py"),
                               str(PROJECT / "pyproject.toml"), extras],
                              capture_output=True, text=True)

    result = requirements("s3,gcs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("dagster==") for line in lines)
    assert {"s3fs>=2024.6", "gcsfs>=2024.6"} <= set(lines)

    result = requirements("s3,nope")  # pip would only warn, and build an image without it
    assert result.returncode != 0 and "no extra nope" in result.stderr


# The chart's keys where deploy/helm/values.yaml sets any, from the chart's schema
# (helm/dagster/schema/schema/charts/.../subschema/*.py in dagster-io/dagster, Dagster 1.13)
CHART_KEYS: dict[str, set[str]] = {
    "": {"dagsterWebserver", "dagster-user-deployments", "postgresql",
         "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "rabbitmq", "redis",
         "flower", "ingress", "imagePullSecrets", "computeLogManager", "scheduler",
         "runLauncher", "pythonLogs", "dagsterDaemon", "busybox", "migrate", "telemetry",
         "serviceAccount", "global", "retention", "concurrency", "additionalInstanceConfig"},
    "global": {"postgresqlSecretName", "dagsterHome", "serviceAccountName",
               "celeryConfigSecretName", "dagsterInstanceConfigMap"},
    "postgresql": {"image", "enabled", "postgresqlHost", "postgresqlUsername",
                   "postgresqlPassword", "postgresqlDatabase", "postgresqlParams",
                   "postgresqlScheme", "service"},
    "postgresql.service": {"port"},
    "dagster-user-deployments": {"enabled", "enableSubchart", "imagePullSecrets", "deployments"},
    "dagster-user-deployments.deployments[]": {
        "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns",
        "deploymentNamespace", "port", "replicaCount", "env", "envConfigMaps", "envSecrets",
        "annotations", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
        "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe",
        "labels", "volumeMounts", "volumes", "schedulerName", "initContainers",
        "sidecarContainers", "deploymentStrategy"},
    "dagster-user-deployments.deployments[].image": {"repository", "tag", "pullPolicy"},
    "dagster-user-deployments.deployments[].includeConfigInLaunchedRuns": {"enabled"},
    "runLauncher": {"type", "config"},
    "runLauncher.config": {"celeryK8sRunLauncher", "k8sRunLauncher", "customRunLauncher"},
    "runLauncher.config.k8sRunLauncher": {
        "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
        "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
        "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig"},
    "dagsterDaemon": {
        "enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps",
        "envSecrets", "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations",
        "podSecurityContext", "securityContext", "resources", "checkDbReadyInitContainer",
        "livenessProbe", "readinessProbe", "startupProbe", "annotations", "runMonitoring",
        "runRetries", "sensors", "schedules", "backfills", "schedulerName", "logFormat",
        "volumeMounts", "volumes", "initContainerResources", "extraContainers",
        "extraPrependedInitContainers"},
    "dagsterDaemon.runCoordinator": {"enabled", "type", "config"},
    "dagsterDaemon.runCoordinator.config": {"queuedRunCoordinator", "customRunCoordinator"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator": {
        "maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds",
        "dequeueNumWorkers", "dequeueUseThreads", "blockOpConcurrencyLimitedRuns"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[]": {
        "key", "value", "limit"},
    # (a free mapping in the schema: these are the keys the chart's instance template reads)
    "dagsterDaemon.runMonitoring": {"enabled", "startTimeoutSeconds", "cancelTimeoutSeconds",
                                    "maxResumeRunAttempts", "pollIntervalSeconds",
                                    "freeSlotsAfterRunEndSeconds"},
    "dagsterDaemon.runRetries": {"enabled", "maxRetries", "retryOnAssetOrOpFailure"},
    "telemetry": {"enabled"},
}


def chart_paths(value: object, path: str = "") -> Iterator[tuple[str, dict]]:
    """Each mapping of ``value`` at a path CHART_KEYS knows, with its path (``[]`` for a list's
    items); below the chart's own objects (Kubernetes objects, free mappings) it does not go."""
    if isinstance(value, list):
        for item in value:
            yield from chart_paths(item, path + "[]")
    elif isinstance(value, dict) and path in CHART_KEYS:
        yield path, value
        for key, item in value.items():
            yield from chart_paths(item, f"{path}.{key}" if path else key)


def helm_values() -> dict:
    return yaml.safe_load(HELM_VALUES.read_text())


def test_helm_values_use_the_charts_keys() -> None:
    seen = set()
    for path, mapping in chart_paths(helm_values()):
        assert set(mapping) <= CHART_KEYS[path], (path, set(mapping) - CHART_KEYS[path])
        seen.add(path)
    assert {"runLauncher.config.k8sRunLauncher", "dagster-user-deployments.deployments[]",
            "postgresql", "dagsterDaemon.runRetries"} <= seen


def test_helm_values_run_this_image_with_env_from_secrets() -> None:
    values = helm_values()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enabled"] is True
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "etl_assets.definitions"]
    assert deployment["image"]["tag"] not in {"", "latest"}
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}

    # Secrets and ConfigMaps by name, the same for the code location and its runs
    for source in ("envSecrets", "envConfigMaps"):
        names = [entry["name"] for entry in deployment[source]]
        assert names and names == [entry["name"] for entry in launcher[source]], source

    # the spec from a mounted ConfigMap, never the demo
    env = {entry["name"]: entry["value"] for entry in deployment["env"]}
    spec = Path(env["ETL_ASSETS_SPEC"])
    volumes = {volume["name"]: volume for volume in deployment["volumes"]}
    (mount,) = [m for m in deployment["volumeMounts"] if spec.parent == Path(m["mountPath"])]
    assert "configMap" in volumes[mount["name"]]

    # the image's user, checked by Kubernetes, in the code server's pod and the runs'
    uid = int(dockerfile_args()["UID"])
    assert deployment["podSecurityContext"]["runAsUser"] == uid
    assert launcher["securityContext"]["runAsUser"] == uid
    assert deployment["podSecurityContext"]["runAsNonRoot"] is True
    assert launcher["securityContext"]["runAsNonRoot"] is True
    assert values.get("global", {}).get("dagsterHome", CHART_DAGSTER_HOME) == CHART_DAGSTER_HOME

    # Dagster's storage: an existing PostgreSQL, its password from a Secret made beforehand;
    # etl-assets' own dagster.yaml in the pods points at the same database
    postgresql = values["postgresql"]
    assert postgresql["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert (env["DAGSTER_PG_HOST"], env["DAGSTER_PG_USER"], env["DAGSTER_PG_DB"]) == (
        postgresql["postgresqlHost"], postgresql["postgresqlUsername"],
        postgresql["postgresqlDatabase"])


def test_helm_values_hold_no_password() -> None:
    def keys(value: object) -> Iterator[str]:
        if isinstance(value, dict):
            for key, item in value.items():
                yield key
                yield from keys(item)
        elif isinstance(value, list):
            for item in value:
                yield from keys(item)

    assert not [key for key in keys(helm_values()) if key.lower().endswith("password")]
    env_names = [entry["name"] for entry in
                 helm_values()["dagster-user-deployments"]["deployments"][0]["env"]]
    assert not [n for n in env_names if re.search("PASSWORD|SECRET|TOKEN|_URL$", n)], env_names


def test_helm_values_scheme_is_the_one_etl_assets_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_PG_HOST", "db")
    url = postgres_url_from_env()
    assert url is not None
    assert url.startswith(helm_values()["postgresql"]["postgresqlScheme"] + "://")


def test_helm_values_keep_the_instance_settings_of_dagster_yaml() -> None:
    instance = yaml.safe_load((PROJECT / "dagster.yaml").read_text())
    daemon = helm_values()["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    coordinator = instance["run_coordinator"]["config"]
    assert queued["maxConcurrentRuns"] == coordinator["max_concurrent_runs"]
    assert [{"key": limit["key"], "limit": limit["limit"],
             "value": {"applyLimitPerUniqueValue": limit["value"]["applyLimitPerUniqueValue"]}}
            for limit in coordinator["tag_concurrency_limits"]] == queued["tagConcurrencyLimits"]
    retries, monitoring = instance["run_retries"], instance["run_monitoring"]
    assert daemon["runRetries"] == {"enabled": retries["enabled"],
                                    "maxRetries": retries["max_retries"],
                                    "retryOnAssetOrOpFailure":
                                        retries["retry_on_asset_or_op_failure"]}
    assert daemon["runMonitoring"] == {"enabled": monitoring["enabled"],
                                       "pollIntervalSeconds": monitoring["poll_interval_seconds"],
                                       "maxResumeRunAttempts":
                                           monitoring["max_resume_run_attempts"]}
