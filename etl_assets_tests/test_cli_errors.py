"""`etl-assets` errors as a user meets them, in a subprocess: one line on stderr naming what is
at fault, exit 2 for the spec or the configuration and 1 at run time, a traceback only with
--debug, never a password; --spec, and check's list of unset environment variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from etl_assets_testing.servers.loopback import free_port
from etl_assets_tests.conftest import PgSchema, project_dagster_home
from etl_assets_tests.sample_tables import create_pg_readings

pytestmark = pytest.mark.slow

ETL_ASSETS = str(Path(sys.executable).parent / "etl-assets")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("ETL_ASSETS_", "TARGET_", "SOURCE_", "DAGSTER_"))}
    return {**base, "DAGSTER_HOME": str(project_dagster_home(tmp_path)),
            "ETL_ASSETS_HOME": str(tmp_path / "etl_home")}


def etl_assets(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ETL_ASSETS, *args], env=env, capture_output=True, text=True,
                          timeout=120)


def spec_file(folder: Path, source: dict, sinks: dict | None = None) -> Path:
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump({"sources": {"readings": {
        "cursor": "id", "max_window": 100, "retries": 0, **source}}, "sinks": sinks or {}}))
    return path


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The error line: stderr holds nothing else."""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("etl-assets: "), done.stderr
    return done.stderr.strip()


def test_an_unset_environment_variable_is_a_configuration_error(
        tmp_path: Path, env: dict[str, str]) -> None:
    spec = spec_file(tmp_path, {"connection": {"env": "ETL_TEST_SOURCE_URL"}, "table": "t"})
    done = etl_assets(env, "--spec", str(spec), "add-partitions", "readings")
    assert done.returncode == 2
    assert one_line(done) == ("etl-assets: source 'readings': environment variable "
                              "ETL_TEST_SOURCE_URL is not set")


def test_a_missing_table_is_a_runtime_error_naming_it(
        pg: PgSchema, tmp_path: Path, env: dict[str, str]) -> None:
    spec = spec_file(tmp_path, {"connection": {"env": "ETL_TEST_SOURCE_URL"},
                                "table": pg.table("no_such_table")})
    done = etl_assets({**env, "ETL_TEST_SOURCE_URL": pg.url},
                      "add-partitions", "readings", "--spec", str(spec))  # --spec after, too
    assert done.returncode == 1
    line = one_line(done)
    assert line.startswith("etl-assets: add-partitions: source 'readings': table ")
    assert f"{pg.name}.no_such_table does not exist" in line


def test_an_unreachable_database_is_one_line_without_its_password(
        tmp_path: Path, env: dict[str, str]) -> None:
    password = "Hunter2SecretXyz"
    url = f"postgresql://etl:{password}@127.0.0.1:{free_port()}/nothing"  # a closed port
    spec = spec_file(tmp_path, {"connection": {"env": "ETL_TEST_SOURCE_URL"},
                                "table": "public.readings"})
    env = {**env, "ETL_TEST_SOURCE_URL": url}
    done = etl_assets(env, "--spec", str(spec), "add-partitions", "readings")
    assert done.returncode == 1
    line = one_line(done)
    assert line.startswith("etl-assets: add-partitions: source 'readings': reading the cursor "
                           "range: OperationalError:")
    assert "Connection refused" in line and "127.0.0.1" in line
    assert password not in done.stdout + done.stderr

    debug = etl_assets(env, "--spec", str(spec), "--debug", "add-partitions", "readings")
    assert debug.returncode == 1
    assert "Traceback (most recent call last):" in debug.stderr
    assert debug.stderr.count("\n") > 10  # the whole traceback
    assert debug.stderr.splitlines()[-1] == line  # then the same line
    assert password not in debug.stdout + debug.stderr


def test_a_spec_error_is_one_line_and_debug_shows_its_traceback(
        tmp_path: Path, env: dict[str, str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("sources: {readings: {table: t, cursor: id, connection: {env: X}, "
                    "curser: id}}\n")
    done = etl_assets(env, "--spec", str(spec), "check")
    assert done.returncode == 2
    assert one_line(done) == (f"etl-assets: {spec}: source 'readings': field 'curser': "
                              f"Extra inputs are not permitted")
    spec.write_text("sources: {readings: {table: t, cursor: id, conection: {env: X}}}\n")
    two = etl_assets(env, "--spec", str(spec), "check")  # two errors: still one line
    assert one_line(two) == (f"etl-assets: {spec}: source 'readings': field 'connection': Field "
                             f"required; {spec}: source 'readings': field 'conection': Extra "
                             f"inputs are not permitted")
    debug = etl_assets(env, "check", "--debug", "--spec", str(spec))
    assert debug.returncode == 2
    assert "Traceback (most recent call last):" in debug.stderr
    assert "etl_assets.spec.SpecError" in debug.stderr


def test_spec_option_overrides_the_environment_variable(
        tmp_path: Path, env: dict[str, str]) -> None:
    spec = spec_file(tmp_path, {"connection": {"env": "ETL_TEST_SOURCE_URL"}, "table": "t"})
    env = {**env, "ETL_ASSETS_SPEC": str(tmp_path / "missing.yaml")}
    assert one_line(etl_assets(env, "check")) == \
        f"etl-assets: {tmp_path / 'missing.yaml'}: no such spec file"
    done = etl_assets(env, "--spec", str(spec), "check")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{spec}: ok\n")


def test_check_lists_unset_environment_variables_and_require_env_fails_on_them(
        tmp_path: Path, env: dict[str, str]) -> None:
    spec = spec_file(tmp_path, {"connection": {"env": "ETL_TEST_SOURCE_URL"}, "table": "t"},
                     {"lake": {"source": "readings", "kind": "parquet",
                               "path": "${ETL_TEST_LAKE}/readings"}})
    done = etl_assets(env, "--spec", str(spec), "check")
    assert done.returncode == 0, done.stderr
    assert "  unset: $ETL_TEST_LAKE (sink 'lake' field 'path')" in done.stdout.splitlines()
    assert ("  unset: $ETL_TEST_SOURCE_URL (source 'readings' field 'connection.env')"
            in done.stdout.splitlines())
    assert etl_assets(env, "--spec", str(spec), "check", "--require-env").returncode == 2
    set_env = {**env, "ETL_TEST_SOURCE_URL": "sqlite://", "ETL_TEST_LAKE": str(tmp_path)}
    done = etl_assets(set_env, "--spec", str(spec), "check", "--require-env")
    assert done.returncode == 0 and "unset: " not in done.stdout


def test_commands_that_need_an_instance_refuse_to_run_without_dagster_home(
        tmp_path: Path, env: dict[str, str]) -> None:
    spec = spec_file(tmp_path, {"connection": {"url": "sqlite://"}, "table": "t"})
    env.pop("DAGSTER_HOME")
    for command in (["status"], ["add-partitions", "readings"], ["run", "readings", "-p", "0..1"]):
        done = etl_assets(env, "--spec", str(spec), *command)
        assert done.returncode == 2, command
        assert one_line(done) == ("etl-assets: set DAGSTER_HOME; partitions must live in a "
                                  "persistent instance")


def test_with_the_table_there_the_same_spec_adds_partitions(
        pg: PgSchema, tmp_path: Path, env: dict[str, str]) -> None:
    """The same spec with the table present adds partitions: the errors above are the table's."""
    table = create_pg_readings(pg, last=150)
    spec = spec_file(tmp_path, {"connection": {"env": "ETL_TEST_SOURCE_URL"}, "table": table})
    done = etl_assets({**env, "ETL_TEST_SOURCE_URL": pg.url}, "--spec", str(spec),
                      "add-partitions", "readings")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0..100", "100..150"]
