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
    assert err.startswith(f"etl-assets: check: {error}") and err.count("\n") == 1, err
