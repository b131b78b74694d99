"""Fixtures of the IO manager tests: a real S3 endpoint (s3_server.py) and a real BigQuery API
(bq_emulator.py)."""

from etl_assets_tests.io_managers.bq_emulator import bq_dataset, bq_emulator
from etl_assets_tests.io_managers.s3_server import s3, s3_server

__all__ = ["bq_dataset", "bq_emulator", "s3", "s3_server"]
