"""`etl-assets run SOURCE --partition KEY`: unknown keys refused before any run starts, naming
the nearest existing ones; known keys run one after the other, as `dagster job execute` runs
them, into a persistent DAGSTER_HOME."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus

from etl_assets.cli import nearest_partitions
from etl_assets_tests.conftest import project_dagster_home

ETL_ASSETS = str(Path(sys.executable).parent / "etl-assets")
KEYS = ["0..100", "100..200", "200..300"]


# -- nearest keys ---------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "nearest"), [
    ("150..250", ["100..200", "200..300"]),      # between two windows
    ("0..50", ["0..100"]),                        # before the first
    ("300..400", ["200..300"]),                   # after the last
    ("250", ["200..300"]),                        # a lone bound: the windows around its lo
    ("100..2000", ["100..200", "200..300"]),     # sorts between them; spelled like 100..200
    ("1OO..200", ["100..200"]),                   # no window (letters O): spelled like it
    ("20240101T000000..20240102T000000", []),     # a timestamp among integers: nothing near
])
def test_nearest_partitions_by_window_order(key: str, nearest: list[str]) -> None:
    assert nearest_partitions(key, list(reversed(KEYS))) == nearest


def test_nearest_partitions_of_timestamp_windows_and_of_a_typo() -> None:
    days = [f"202403{d:02}T000000Z..202403{d + 1:02}T000000Z" for d in range(1, 8)]
    assert nearest_partitions("20240304T120000Z..20240305T120000Z", days) == days[3:5]
    assert nearest_partitions("20240314T000000Z..20240315T000000Z", days) == [days[6]]
    # naive among aware windows cannot be placed: the keys spelled most like it
    assert days[3] in nearest_partitions("20240304T000000..20240305T000000", days)
    assert nearest_partitions("readings-day-3", ["readings-day-2", "other"]) == ["readings-day-2"]


# -- the command, in a subprocess -----------------------------------------------------------

@pytest.fixture
def setup(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    """A SQLite source of 300 rows -> a parquet sink (one shard a partition), its spec, and an
    environment with a DAGSTER_HOME of its own."""
    source = tmp_path / "source.sqlite"
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE readings (id INTEGER PRIMARY KEY, v TEXT, updated INTEGER)")
        conn.executemany("INSERT INTO readings VALUES (?, ?, ?)",
                         [(i, f"v{i}", i) for i in range(1, 301)])
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "sources": {"readings": {"connection": {"url": f"sqlite:///{source}"},
                                 "table": "readings", "cursor": "updated",
                                 "primary_key": ["id"], "max_window": 100}},
        "sinks": {"lake": {"source": "readings", "kind": "parquet",
                           "path": str(tmp_path / "lake")}}}))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ETL_ASSETS_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(project_dagster_home(tmp_path)),
               ETL_ASSETS_HOME=str(tmp_path / "etl_home"), ETL_ASSETS_SPEC=str(spec))
    return env, spec, tmp_path / "lake"


def etl_assets(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ETL_ASSETS, *args], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def runs_of(monkeypatch: pytest.MonkeyPatch):
    """The runs recorded in the instance of an environment (its storage follows the
    environment: etl_assets.instance_storage)."""
    def runs(env: dict[str, str]) -> list:
        monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
        monkeypatch.delenv("DAGSTER_PG_HOST", raising=False)
        with DagsterInstance.get() as instance:
            return instance.get_runs()
    return runs


@pytest.mark.slow
def test_an_unknown_partition_is_refused_before_any_run_naming_the_nearest(
        setup: tuple[dict[str, str], Path, Path], runs_of) -> None:
    env, _, lake = setup
    never = etl_assets(env, "run", "readings", "--partition", "0..100")
    assert never.returncode == 2
    assert never.stderr == ("etl-assets: source 'readings' has no partitions yet (asked for "
                            "0..100): add partitions with `etl-assets add-partitions readings`\n")

    assert etl_assets(env, "add-partitions", "readings").stdout.split() == KEYS
    # a known key first: it is not run either, since another key is unknown
    done = etl_assets(env, "run", "readings", "-p", "0..100", "-p", "150..250")
    assert done.returncode == 2
    assert done.stderr == ("etl-assets: source 'readings': no partition '150..250' (nearest: "
                           "100..200, 200..300); 3 partition(s) exist; add partitions with "
                           "`etl-assets add-partitions readings`\n")
    assert done.stdout == ""
    assert runs_of(env) == []
    assert not lake.exists()
    assert etl_assets(env, "run", "readings", "-p", "0..100").returncode == 0
    assert [run.tags["dagster/partition"] for run in runs_of(env)] == ["0..100"]


@pytest.mark.slow
def test_known_partitions_run_and_land(setup: tuple[dict[str, str], Path, Path],
                                       runs_of) -> None:
    env, _, lake = setup
    etl_assets(env, "add-partitions", "readings")
    done = etl_assets(env, "run", "readings", "-p", "100..200", "-p", "0..100")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert [re.sub(r"run \S+", "run <id>", line) for line in lines] == [
        "readings_job partition 100..200: run <id> SUCCESS",
        "readings_job partition 0..100: run <id> SUCCESS"]
    assert sorted(pq.read_table(lake / "100..200.parquet").column("id").to_pylist()) == \
        list(range(101, 201))
    assert pq.read_table(lake / "0..100.parquet").num_rows == 100
    assert not (lake / "200..300.parquet").exists()

    runs = {run.run_id: run for run in runs_of(env)}
    for line in lines:
        run = runs[line.split(" run ")[1].split()[0]]
        assert run.status == DagsterRunStatus.SUCCESS and run.job_name == "readings_job"
        assert run.tags["dagster/partition"] == line.split()[2].rstrip(":")


@pytest.mark.slow
def test_new_adds_the_partitions_of_new_rows_and_runs_them(
        setup: tuple[dict[str, str], Path, Path], runs_of) -> None:
    env, _, lake = setup
    done = etl_assets(env, "run", "readings", "--new")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line.split()[2] for line in done.stdout.splitlines()] == [f"{k}:" for k in KEYS]
    assert sorted(p.name for p in lake.glob("*.parquet")) == [f"{k}.parquet" for k in KEYS]
    again = etl_assets(env, "run", "readings", "--new")  # nothing new: no run
    assert (again.returncode, again.stdout) == (0, "")
    assert len(runs_of(env)) == 3


@pytest.mark.slow
def test_a_failed_run_is_one_line_naming_the_cause_and_stops_there(
        setup: tuple[dict[str, str], Path, Path], runs_of) -> None:
    env, spec, _ = setup
    etl_assets(env, "add-partitions", "readings")
    spec.write_text(spec.read_text().replace("table: readings", "table: gone"))
    done = etl_assets(env, "run", "readings", "-p", "200..300", "-p", "0..100")
    assert done.returncode == 1
    [run_line] = done.stdout.splitlines()
    run_id = run_line.split(" run ")[1].split()[0]
    assert run_line == f"readings_job partition 200..300: run {run_id} FAILURE"
    ours = [line for line in done.stderr.splitlines() if line.startswith("etl-assets: ")]
    assert ours == [f"etl-assets: run: readings_job partition 200..300: run {run_id} failed: "
                    f"step readings: source 'readings': table gone does not exist in "
                    f"sqlite:///{spec.parent / 'source.sqlite'} (not run: 0..100)"]
    [run] = runs_of(env)
    assert run.status == DagsterRunStatus.FAILURE
