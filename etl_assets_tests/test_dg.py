"""`dg` on this repo (the demo spec) and EtlAssetsComponent in a dg project of its own.

The project is scaffolded by `create-dagster project --no-uv-sync` in a temp folder and uses
this test session's environment (no uv, nothing installed): `dg` runs from our venv with
VIRTUAL_ENV set to it, and the project's `src/` is on PYTHONPATH, which is what `uv sync`'s
editable install of the project would give. Its `defs/` holds a pipeline (our component: a
SQLite source -> a parquet sink) next to a plain Python asset (`defs/hello/assets.py`, loaded by
Dagster's DefsFolderComponent).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from etl_assets_testing.servers.loopback import free_port
from etl_assets_tests.conftest import project_dagster_home

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMPONENT = "etl_assets.EtlAssetsComponent"


def environment(folder: Path, **more: str) -> dict[str, str]:
    """A user's shell with our venv active and a DAGSTER_HOME and ETL_ASSETS_HOME of the test."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("ETL_ASSETS_SPEC", "TARGET_PG_URL", "DAGSTER_PG_HOST", "PYTHONPATH")}
    env.update(VIRTUAL_ENV=str(BIN.parent), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               DAGSTER_HOME=str(project_dagster_home(folder)),
               ETL_ASSETS_HOME=str(folder / "etl_home"),
               DAGSTER_DG_UPDATE_CHECK_ENABLED="0")  # create-dagster asks PyPI for news
    env.update(more)
    return env


def run(command: list[str], cwd: Path, env: dict[str, str],
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.args, done.stdout[-3000:], done.stderr[-3000:])
    return done.stdout


def names(listing: dict, section: str) -> set[str]:
    return {item.get("asset_key") or item["name"] for item in listing[section]}


# -- this repo ------------------------------------------------------------------------------

def test_dg_on_the_repo_lists_checks_and_launches_the_demo(tmp_path: Path) -> None:
    env = environment(tmp_path)
    listing = json.loads(ok(run([str(BIN / "dg"), "list", "defs", "--json"], PROJECT, env)))
    assert names(listing, "assets") == {"sensors", "sensors_pg", "sensors_lake"}
    assert {"sensors_job", "demo_change_source"} <= names(listing, "jobs")
    assert names(listing, "sensors") == {"sensors_watermark_sensor"}

    checked = run([str(BIN / "dg"), "check", "defs"], PROJECT, env)
    assert "All definitions loaded successfully." in ok(checked)

    components = json.loads(ok(run([str(BIN / "dg"), "list", "components", "--json"],
                                   PROJECT, env)))["items"]
    assert COMPONENT in {c["key"] for c in components}

    keys = ok(run([str(BIN / "etl-assets"), "add-partitions", "sensors"], PROJECT, env)).split()
    assert keys
    launched = run([str(BIN / "dg"), "launch", "--assets", "sensors", "--partition", keys[0]],
                   PROJECT, env)
    ok(launched)
    assert "RUN_SUCCESS" in launched.stderr + launched.stdout
    assert "SupersessionWarning" not in launched.stderr
    staged = tmp_path / "etl_home" / "staging" / "sensors" / keys[0]  # the current version
    assert sum(pq.read_table(part).num_rows for part in staged.glob("part-*.parquet")) == 10_000


# -- a dg project of its own ----------------------------------------------------------------

def pipeline_spec(data: Path) -> dict:
    return {
        "sources": {"readings": {
            "connection": {"url": f"sqlite:///{data / 'source.sqlite'}"},
            "table": "readings", "cursor": "updated", "primary_key": ["id"],
            "max_window": 100}},
        "sinks": {"readings_lake": {"source": "readings", "kind": "parquet",
                                    "path": str(data / "lake")}},
        "staging": {"root": str(data / "staging")},
    }


@pytest.fixture(scope="module")
def dg_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh `create-dagster` project whose defs/ hold our pipeline and a Python asset."""
    folder = tmp_path_factory.mktemp("dg")
    env = environment(folder)
    ok(run([str(BIN / "create-dagster"), "project", "--no-uv-sync", "lakeproj"], folder, env))
    root = folder / "lakeproj"
    assert (root / "src" / "lakeproj" / "defs").is_dir()
    env["PYTHONPATH"] = str(root / "src")

    data = folder / "data"
    data.mkdir()
    with sqlite3.connect(data / "source.sqlite") as conn:
        conn.execute("CREATE TABLE readings (id INTEGER PRIMARY KEY, v TEXT, updated INTEGER)")
        conn.executemany("INSERT INTO readings VALUES (?, ?, ?)",
                         [(i, f"v{i}", i) for i in range(1, 301)])
    pipes = root / "src" / "lakeproj" / "defs" / "pipes"
    pipes.mkdir()
    (pipes / "defs.yaml").write_text(yaml.safe_dump(
        {"type": COMPONENT, "attributes": pipeline_spec(data)}, sort_keys=False))
    hello = root / "src" / "lakeproj" / "defs" / "hello"
    hello.mkdir()
    (hello / "assets.py").write_text(
        "import dagster as dg\n\n\n@dg.asset\ndef hello() -> str:\n    return 'hello'\n")
    return root, env


def test_the_component_loads_next_to_other_definitions(
        dg_project: tuple[Path, dict[str, str]]) -> None:
    root, env = dg_project
    components = json.loads(ok(run([str(BIN / "dg"), "list", "components", "--json"],
                                   root, env)))["items"]
    ours = next(c for c in components if c["key"] == COMPONENT)
    assert "pipeline spec" in ours["summary"]

    listing = json.loads(ok(run([str(BIN / "dg"), "list", "defs", "--json"], root, env)))
    assert names(listing, "assets") == {"hello", "readings", "readings_lake"}
    assert {"readings_job", "readings_lake_replay_dead_letters"} == names(listing, "jobs")
    assert names(listing, "sensors") == {"readings_watermark_sensor"}
    job = next(j for j in listing["jobs"] if j["name"] == "readings_job")
    assert job["source"].startswith("src/lakeproj/defs/pipes/defs.yaml")

    checked = run([str(BIN / "dg"), "check", "defs"], root, env)
    assert "All definitions loaded successfully." in ok(checked)


def test_dg_launch_writes_a_partition_of_the_component(
        dg_project: tuple[Path, dict[str, str]]) -> None:
    root, env = dg_project
    defs_yaml = root / "src" / "lakeproj" / "defs" / "pipes" / "defs.yaml"
    added = run([str(BIN / "etl-assets"), "--spec", str(defs_yaml), "add-partitions",
                 "readings"], root, env)
    assert ok(added).split() == ["0..100", "100..200", "200..300"]

    launched = run([str(BIN / "dg"), "launch", "--assets", "readings,readings_lake",
                    "--partition", "100..200"], root, env)
    ok(launched)
    shard = pq.read_table(root.parent / "data" / "lake" / "100..200.parquet")
    assert sorted(shard.column("id").to_pylist()) == list(range(101, 201))


def test_a_wrong_key_in_defs_yaml_is_one_line_naming_the_file_and_field(
        dg_project: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root = shutil.copytree(dg_project[0], tmp_path / "lakeproj")
    env = {**dg_project[1], "PYTHONPATH": str(root / "src")}
    defs_yaml = root / "src" / "lakeproj" / "defs" / "pipes" / "defs.yaml"
    declared = yaml.safe_load(defs_yaml.read_text())
    declared["attributes"]["sinks"]["readings_lake"]["tabel"] = "x"
    defs_yaml.write_text(yaml.safe_dump(declared))
    error = f"{defs_yaml}: sink 'readings_lake': field 'tabel': Extra inputs are not permitted"

    listed = run([str(BIN / "dg"), "list", "defs"], root, env)
    assert listed.returncode == 1
    lines = (listed.stdout + listed.stderr).splitlines()
    assert f"etl_assets.spec.SpecError: {error}" in lines, listed.stderr[-3000:]

    checked = run([str(BIN / "etl-assets"), "--spec", str(defs_yaml), "check"], root, env)
    assert (checked.returncode, checked.stderr) == (2, f"etl-assets: {error}\n")


def test_dg_dev_serves_the_component(dg_project: tuple[Path, dict[str, str]]) -> None:
    root, env = dg_project
    port = free_port()
    server = subprocess.Popen([str(BIN / "dg"), "dev", "-p", str(port)], cwd=root, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    query = ('{ repositoriesOrError { ... on RepositoryConnection { nodes { '
             'location { name } jobs { name } assetNodes { assetKey { path } } } } } }')
    try:
        deadline, answer = time.monotonic() + 120, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                    headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=5) as response:
                    answer = json.load(response)
                if answer["data"]["repositoriesOrError"].get("nodes"):
                    break
            except (OSError, KeyError):
                pass
            time.sleep(1)
        assert answer is not None, server.stderr.read() if server.poll() is not None else ""
    finally:
        # dg dev, its webserver, daemon and code servers share the session it leads
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
    [repository] = answer["data"]["repositoriesOrError"]["nodes"]
    assert repository["location"]["name"] == "lakeproj"
    assert {"readings_job"} <= {j["name"] for j in repository["jobs"]}
    assert {"hello", "readings", "readings_lake"} == {
        a["assetKey"]["path"][0] for a in repository["assetNodes"]}
