"""A real S3 endpoint for the tests: moto's server on a free loopback port, which can be
stopped (the object store is down) and started again on the same port with its buckets kept
(moto keeps them in this process)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from etl_assets_tests.io_managers.local_servers import free_port


@dataclass
class S3Server:
    port: int
    _server: Any = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def storage_options(self) -> dict[str, Any]:
        """s3fs options for this endpoint: fail fast when it is down (one attempt, 1 s)."""
        return {"endpoint_url": self.endpoint, "skip_instance_cache": True,
                "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")


@dataclass
class S3Bucket:
    server: S3Server
    name: str

    def url(self, prefix: str) -> str:
        return f"s3://{self.name}/{prefix}"

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.server.client().list_objects_v2(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def get(self, key: str) -> bytes:
        return self.server.client().get_object(Bucket=self.name, Key=key)["Body"].read()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A new bucket on the running server; credentials only in the environment."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    if s3_server._server is None:  # a test that stopped it failed before starting it again
        s3_server.start()
    bucket = S3Bucket(s3_server, f"lake-{uuid.uuid4().hex[:10]}")
    s3_server.client().create_bucket(Bucket=bucket.name)
    yield bucket
