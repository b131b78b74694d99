"""Fixtures of the IO manager tests: a real S3 endpoint (s3_server.py), a real BigQuery API
(bq_emulator.py) and real HTTP targets (http_servers.py)."""

from etl_assets_tests.io_managers.bq_emulator import bq_dataset, bq_emulator
from etl_assets_tests.io_managers.http_servers import datasette, fault_server, pouchdb
from etl_assets_tests.io_managers.s3_server import s3, s3_server

__all__ = ["bq_dataset", "bq_emulator", "datasette", "fault_server", "pouchdb", "s3", "s3_server"]
