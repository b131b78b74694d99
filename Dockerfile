# One image for the user code server, the webserver and the daemon (docker-compose.yml).
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 DAGSTER_HOME=/opt/dagster/home ETL_ASSETS_HOME=/opt/etl_assets/data
WORKDIR /opt/etl_assets
COPY pyproject.toml README.md ./
COPY etl_assets ./etl_assets
RUN pip install ".[bigquery]"
COPY dagster.yaml /opt/dagster/home/dagster.yaml
COPY docker/workspace.yaml /opt/dagster/workspace.yaml
