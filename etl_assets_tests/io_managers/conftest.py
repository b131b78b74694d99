"""Fixtures of the IO manager tests: a real S3 endpoint (see s3_server.py)."""

from etl_assets_tests.io_managers.s3_server import s3, s3_server

__all__ = ["s3", "s3_server"]
