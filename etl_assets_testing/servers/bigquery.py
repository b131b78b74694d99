"""A real BigQuery API: the `bqemulator` package's server on a loopback port, in its own
process, which can be stopped (BigQuery is unreachable) and started again on the same port
with its data kept (persistent mode, data in a folder).

Run as a module it is that server: ``python -m etl_assets_testing.servers.bigquery PORT
DATA_DIR``. DuckDB's spatial extension (GEOGRAPHY) is switched off: it is downloaded on first
use and this machine may be offline.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etl_assets_testing.servers.loopback import wait_for_answer

if TYPE_CHECKING:
    from google.cloud import bigquery

PROJECT = "etl-test"


@dataclass
class BigQueryEmulator:
    port: int
    data_dir: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self) -> None:
        log = open(self.data_dir / "emulator.log", "ab")  # noqa: SIM115 - the process owns it
        self._process = subprocess.Popen(
            [sys.executable, "-m", "etl_assets_testing.servers.bigquery", str(self.port),
             str(self.data_dir / "data")],
            stdout=log, stderr=subprocess.STDOUT)
        wait_for_answer(f"{self.endpoint}/bigquery/v2/projects/{PROJECT}/datasets",
                        self._process, "bqemulator", self.log_tail)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
            self._process = None

    def log_tail(self) -> str:
        return (self.data_dir / "emulator.log").read_text()[-2000:]

    def client(self) -> bigquery.Client:
        """A google-cloud-bigquery client of this endpoint, anonymous."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(),
                               client_options=ClientOptions(api_endpoint=self.endpoint))

    def rows(self, table_id: str, order_by: str = "id") -> list[dict[str, Any]]:
        """Every row of ``table_id`` as a dict (JSON columns as their values)."""
        job = self.client().query(f"SELECT * FROM `{table_id}` ORDER BY `{order_by}`")
        return [dict(row.items()) for row in job.result()]


def serve(port: int, data_dir: str) -> None:
    """The emulator in this process, until it is killed."""
    from bqemulator.config import PersistenceMode, Settings
    from bqemulator.server import run_forever
    from bqemulator.storage import engine

    engine.DuckDBEngine._load_spatial = lambda self: None  # type: ignore[method-assign]
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    run_forever(Settings(rest_port=port, grpc_port=0, default_project_id=PROJECT,
                         persistence_mode=PersistenceMode.PERSISTENT, data_dir=Path(data_dir)))


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
