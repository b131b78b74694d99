# Quick start: `make demo` runs the demo job end to end; `make test` runs the tests.
# Both install what they need into .venv first.

VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
# The demo's own Dagster instance and data (embedded PostgreSQL, staging, sample source).
DEMO_DAGSTER_HOME ?= $(CURDIR)/.dagster_home
DEMO_HOME ?= $(CURDIR)/.etl_home
DEMO_ENV := DAGSTER_HOME=$(DEMO_DAGSTER_HOME) ETL_ASSETS_HOME=$(DEMO_HOME)
# dg checks that the venv it runs from is the project's: say it is (as `. .venv/bin/activate`).
DG := VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/dg
# Dagster 1.13 marks `dagster job execute` superseded by `dg launch` and warns on each call
# (no setting turns it off); CI and the demo keep the command, without the warning.
DAGSTER_JOB_EXECUTE := PYTHONWARNINGS='ignore:Function `job_execute_command` is superseded' \
	$(BIN)/dagster job execute

.PHONY: install demo dev status stop-demo test test-fast lint bench bench-pg bench-mysql bench-pg-migrate bench-bigquery bench-http bench-http-source bench-parquet bench-backfill bench-extract bench-scale

install: $(VENV)/.installed

# npm: pouchdb-server, a CouchDB-API target of the HTTP sink tests.
$(VENV)/.installed: pyproject.toml package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,bigquery]"
	touch $@

$(DEMO_DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DEMO_DAGSTER_HOME)
	cp dagster.yaml $@

# Add a partition per new window of the demo source, then run the job for each with
# `dagster job execute` (the partition passed as the dagster/partition tag).
demo: install $(DEMO_DAGSTER_HOME)/dagster.yaml
	@keys=$$($(DEMO_ENV) $(BIN)/etl-assets add-partitions sensors) || exit 1; \
	for key in $$keys; do \
	  echo "== dagster job execute sensors_job, partition $$key"; \
	  $(DEMO_ENV) $(DAGSTER_JOB_EXECUTE) -m etl_assets.definitions -j sensors_job \
	    --tags "{\"dagster/partition\": \"$$key\"}" || exit 1; \
	done
	@$(DEMO_ENV) $(BIN)/etl-assets status

# The UI, the daemon and the demo's sensor (http://127.0.0.1:3000 unless DAGSTER_PORT is set):
# `dg dev`, the successor of `dagster dev -w workspace.yaml` (which warns that it is superseded).
dev: install $(DEMO_DAGSTER_HOME)/dagster.yaml
	$(DEMO_ENV) $(DG) dev -p $${DAGSTER_PORT:-3000}

status: install $(DEMO_DAGSTER_HOME)/dagster.yaml
	$(DEMO_ENV) $(BIN)/etl-assets status

stop-demo: install
	$(DEMO_ENV) $(BIN)/etl-assets stop-embedded

test: install
	$(BIN)/pytest

# Under a minute: no end-to-end runs, no servers of the tests' own (PostgreSQL and MariaDB only).
test-fast: install
	$(BIN)/pytest -m "not slow and not servers"

# ruff, then mypy (configured in pyproject.toml: etl_assets and bench)
lint: install
	$(BIN)/ruff check etl_assets etl_assets_testing etl_assets_tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/load_1m.py

# Upserting 1M rows x 10 columns: ours vs hand-written COPY + ON CONFLICT vs pg-bulk-ingest.
bench-pg: install
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python bench/pg_upsert.py $(BENCH_ARGS)

# Upserting 1M rows x 10 columns into MariaDB: ours vs hand-written LOAD DATA LOCAL +
# ON DUPLICATE KEY UPDATE vs pandas to_sql (method multi, and its default).
bench-mysql: install
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python bench/mysql_upsert.py $(BENCH_ARGS)

# Migrating a live table (int -> bigint, reader running): ours vs pg-bulk-ingest (`bench` extra).
bench-pg-migrate: install
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python bench/pg_migrate.py $(BENCH_ARGS)

# The file sink (shard, update, drop_duplicates; parquet, csv, JSON lines) vs plain pyarrow / pandas.
bench-parquet: install
	$(BIN)/python bench/file_sink.py $(BENCH_ARGS)

# Loading into BigQuery (bqemulator on loopback): ours (append, merge) vs a plain client load.
bench-bigquery: install
	$(BIN)/python bench/bigquery_load.py $(BENCH_ARGS)

# Posting 20k documents: ours (single, bulk) vs bare aiohttp vs the etlhelper recipe.
bench-http: install
	$(BIN)/python bench/http_post.py $(BENCH_ARGS)

# Reading 200k records from datasette's paged JSON API into parquet: ours (`kind: http`) vs dlt's
# rest_api source (`bench` extra) vs a plain requests loop.
bench-http-source: install
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python bench/http_source.py $(BENCH_ARGS)

# 100 one-hour windows (1M rows) into PostgreSQL: a single-run backfill vs one window vs a run
# per partition (in process, and `dagster job execute` extrapolated).
bench-backfill: install
	$(BIN)/python bench/backfill.py $(BENCH_ARGS)

# 8 partitions x 250k rows as runs whose steps are Celery tasks: 1 worker vs 2, staging on
# local disk vs S3 (moto); Redis at 127.0.0.1:6379 (db 14), Dagster's storage on PostgreSQL.
bench-scale: install
	$(BIN)/python bench/scale.py $(BENCH_ARGS)

# Extracting one window of 1M rows x 10 columns (PostgreSQL, MariaDB, SQLite): ours vs
# connectorx, pandas and dlt (`bench` extra); then the window end to end vs connectorx + COPY.
bench-extract: install
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python bench/extract.py $(BENCH_ARGS)
