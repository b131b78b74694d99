"""``etl-assets``: the commands that prepare partitions for ``dagster job execute``."""

from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance

from etl_assets.cli import main
from etl_assets_tests.conftest import PgSchema, project_dagster_home
from etl_assets_tests.sample_tables import add_pg_readings, create_pg_readings


@pytest.fixture
def spec_file(pg: PgSchema, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = project_dagster_home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("TEST_SOURCE_URL", pg.url)
    table = create_pg_readings(pg, last=300)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"sources": {"readings": {
        "connection": {"env": "TEST_SOURCE_URL"}, "table": table, "cursor": "id",
        "max_window": 100}}}))
    monkeypatch.setenv("ETL_ASSETS_SPEC", str(path))
    return path


def test_add_partitions_prints_new_keys_once(pg: PgSchema, spec_file: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["add-partitions", "readings"]) == 0
    out = capsys.readouterr()
    assert out.out.split() == ["0..100", "100..200", "200..300"]
    assert "3 new partition(s)" in out.err
    with DagsterInstance.get() as instance:
        assert sorted(instance.get_dynamic_partitions("readings_windows")) == [
            "0..100", "100..200", "200..300"]

    assert main(["add-partitions", "readings"]) == 0
    assert capsys.readouterr().out == ""  # nothing new

    add_pg_readings(pg, pg.table("readings"), 301, 350)
    assert main(["add-partitions", "readings"]) == 0
    assert capsys.readouterr().out.split() == ["300..350"]


def test_errors(spec_file: Path, monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["add-partitions", "nope"]) == 2
    assert "no source 'nope' (sources: readings)" in capsys.readouterr().err
    monkeypatch.delenv("DAGSTER_HOME")
    assert main(["add-partitions", "readings"]) == 2
    assert "set DAGSTER_HOME" in capsys.readouterr().err
    spec_file.write_text("sources: {readings: {table: t}}")
    assert main(["check"]) == 2
    assert f"{spec_file}: source 'readings': field 'connection': Field required" in \
        capsys.readouterr().err


def test_check_lists_pipelines(spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 0
    assert "source readings:" in capsys.readouterr().out


@pytest.mark.parametrize(("sink", "error"), [
    ({"kind": "parquet", "path": "/tmp/x", "mode": "update", "primary_key": []},
     "sink 'out': mode update needs a primary_key"),
    ({"kind": "parquet", "path": "/tmp/x", "transform": "no_such_module:f"},
     "sink 'out': transform no_such_module:f: cannot import no_such_module"),
])
def test_check_refuses_what_loading_refuses_in_one_line(
        spec_file: Path, capsys: pytest.CaptureFixture[str], sink: dict, error: str) -> None:
    spec = yaml.safe_load(spec_file.read_text())
    spec["sinks"] = {"out": {"source": "readings", **sink}}
    spec_file.write_text(yaml.safe_dump(spec))
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"etl-assets: {spec_file}: {error}") and err.count("\n") == 1, err


def test_check_lists_the_environment_variables_the_spec_names_that_are_unset(
        spec_file: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    spec = yaml.safe_load(spec_file.read_text())
    spec["sinks"] = {
        "out": {"kind": "parquet", "source": "readings", "path": "${LAKE_ROOT}/readings"},
        "api": {"kind": "http", "source": "readings", "url": "http://127.0.0.1:9/{id}",
                "headers_from_env": {"Authorization": "API_TOKEN"}}}
    spec_file.write_text(yaml.safe_dump(spec))
    monkeypatch.delenv("LAKE_ROOT", raising=False)
    monkeypatch.delenv("API_TOKEN", raising=False)
    assert main(["check"]) == 0  # the runs may have them: listed, not refused
    out = capsys.readouterr().out
    assert "unset: $API_TOKEN (sink 'api' field 'headers_from_env.Authorization')" in out
    assert "unset: $LAKE_ROOT (sink 'out' field 'path')" in out
    assert "TEST_SOURCE_URL" not in out  # set by the fixture
    assert main(["check", "--require-env"]) == 2
    capsys.readouterr()
    monkeypatch.setenv("LAKE_ROOT", "/tmp/lake")
    monkeypatch.setenv("API_TOKEN", "Bearer x")
    assert main(["check", "--require-env"]) == 0
    assert "unset" not in capsys.readouterr().out


def test_loading_the_code_location_refuses_what_check_refuses_naming_the_file(
        spec_file: Path) -> None:
    from etl_assets.code_location import load_definitions
    from etl_assets.spec import SpecError

    spec = yaml.safe_load(spec_file.read_text())
    spec["sinks"] = {"out": {"kind": "parquet", "source": "readings", "path": "/tmp/x",
                             "transform": "no_such_module:f"}}
    spec_file.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match=rf"^{spec_file}: sink 'out': transform no_such_module:f"):
        load_definitions()
