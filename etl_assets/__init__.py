"""etl_assets: incremental SQL -> PostgreSQL / HTTP / BigQuery / parquet pipelines as
partitioned Dagster assets. The code location's ``defs`` are in :mod:`etl_assets.definitions`."""
