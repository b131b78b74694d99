"""The README's first command, `make demo`, on the embedded default: a generated SQLite
source and an embedded PostgreSQL target, run with `dagster job execute`."""

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest

from etl_assets.embedded_postgres import embedded_postgres_url, stop_embedded_postgres

pytestmark = [pytest.mark.slow, pytest.mark.servers]  # the embedded PostgreSQL

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_dirs(tmp_path: Path):
    dagster_home, home = tmp_path / "dh", tmp_path / "eh"
    yield dagster_home, home
    stop_embedded_postgres(home / "pgdata")


def make_demo(dagster_home: Path, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ETL_ASSETS_SPEC", "TARGET_PG_URL", "DAGSTER_PG_HOST")}
    return subprocess.run(
        ["make", "-s", "demo", f"VENV={Path(sys.executable).parent.parent}",
         f"DEMO_DAGSTER_HOME={dagster_home}", f"DEMO_HOME={home}"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600)


def test_make_demo_runs_the_main_job_end_to_end(demo_dirs: tuple[Path, Path]) -> None:
    dagster_home, home = demo_dirs
    first = make_demo(dagster_home, home)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "RUN_SUCCESS" in first.stdout + first.stderr
    assert "sink sensors_pg: 10,000 rows in public.sensors" in first.stdout
    # the table's watermark reached the highest window the demo ran
    requested = re.search(r"source sensors: \d+ partition\(s\), requested up to (\S+)", first.stdout)
    committed = re.search(r"sink sensors_pg: .* high watermark (\S+)", first.stdout)
    assert requested and committed and committed.group(1) == requested.group(1) != "nothing"

    url = embedded_postgres_url("etl_demo", data_dir=home / "pgdata")
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT code), min(code), "
                            "bool_and(description IS NOT NULL) FROM public.sensors").fetchone()
    assert rows == (10_000, 10_000, "SEN-00001", True)
    assert "sink sensors_lake: 10,000 rows in 1 parquet file(s)" in first.stdout
    lake = pq.read_table(home / "lake" / "sensors" / "data.parquet")
    assert (lake.num_rows, len(set(lake.column("code").to_pylist()))) == (10_000, 10_000)

    again = make_demo(dagster_home, home)  # nothing new: no run, same table
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 new partition(s)" in again.stderr
    assert "sink sensors_pg: 10,000 rows in public.sensors" in again.stdout
    assert "sink sensors_lake: 10,000 rows in 1 parquet file(s)" in again.stdout
