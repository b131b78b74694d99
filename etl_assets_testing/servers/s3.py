"""A real S3 endpoint: moto's server on a loopback port, which can be stopped (the object
store is down) and started again on the same port with its buckets kept (moto keeps them in
this process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class S3Server:
    port: int
    _server: Any = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

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

    def client(self) -> Any:  # noqa: ANN401 (boto3 has no types)
        """A boto3 S3 client of this endpoint (credentials from the environment)."""
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
