"""The spec in use: a spec file or a dg defs.yaml declaring an EtlAssetsComponent; --spec; the
bundled demo when $ETL_ASSETS_SPEC is unset, empty or `demo`."""

from pathlib import Path

import pytest
import yaml

from etl_assets.demo import DEMO_SPEC
from etl_assets.spec import SpecError
from etl_assets.spec_in_use import (
    SPEC_ENV,
    is_demo,
    load_pipeline_spec,
    read_spec,
    spec_path,
    use_spec,
)

SPEC = {"sources": {"readings": {"connection": {"url": "sqlite://"}, "table": "t",
                                 "cursor": "id"}},
        "sinks": {"lake": {"source": "readings", "kind": "parquet", "path": "/tmp/lake"}}}


def test_a_defs_yaml_of_the_component_is_a_spec(tmp_path: Path) -> None:
    defs = tmp_path / "defs.yaml"
    defs.write_text(yaml.safe_dump({"type": "etl_assets.EtlAssetsComponent", "attributes": SPEC}))
    plain = tmp_path / "spec.yaml"
    plain.write_text(yaml.safe_dump(SPEC))
    assert read_spec(defs) == read_spec(plain)
    assert list(read_spec(defs).sinks) == ["lake"]


def test_a_defs_yaml_among_other_components_and_its_errors(tmp_path: Path) -> None:
    defs = tmp_path / "defs.yaml"
    other = {"type": "dagster.DefsFolderComponent", "attributes": {}}
    ours = {"type": "etl_assets.EtlAssetsComponent", "attributes": SPEC}
    defs.write_text(yaml.safe_dump_all([other, ours]))
    assert list(read_spec(defs).sources) == ["readings"]

    defs.write_text(yaml.safe_dump_all([ours, ours]))
    with pytest.raises(SpecError, match=rf"^{defs}: declares 2 EtlAssetsComponents"):
        read_spec(defs)

    wrong = {**SPEC, "sinks": {"lake": {**SPEC["sinks"]["lake"], "mdoe": "update"}}}
    defs.write_text(yaml.safe_dump({"type": "etl_assets.EtlAssetsComponent",
                                    "attributes": wrong}))
    with pytest.raises(SpecError) as raised:
        read_spec(defs)
    assert str(raised.value) == (f"{defs}: sink 'lake': field 'mdoe': Extra inputs are not "
                                 f"permitted")

    defs.write_text(yaml.safe_dump({"type": "dagster.DefsFolderComponent", "attributes": {}}))
    with pytest.raises(SpecError) as raised:
        read_spec(defs)  # no component of ours: read as a spec, and refused as one
    assert f"{defs}: field 'type': Extra inputs are not permitted" in str(raised.value)


def test_use_spec_makes_a_file_the_spec_in_use(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tmp_path / "spec.yaml"
    plain.write_text(yaml.safe_dump(SPEC))
    monkeypatch.setenv(SPEC_ENV, "/no/such/spec.yaml")
    monkeypatch.chdir(tmp_path)
    use_spec("spec.yaml")  # relative: made absolute, for the processes it starts elsewhere
    assert spec_path() == plain
    assert list(load_pipeline_spec().sources) == ["readings"]


@pytest.mark.parametrize("value", ["demo", "", None])
def test_demo_empty_or_unset_is_the_bundled_demo(value: str | None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # `demo` is how the production compose, which refuses an empty value, asks for the demo;
    # empty or unset stays the demo for local use (`make demo`)
    if value is None:
        monkeypatch.delenv(SPEC_ENV, raising=False)
    else:
        monkeypatch.setenv(SPEC_ENV, value)
    assert is_demo()
    assert spec_path() == DEMO_SPEC
    spec = load_pipeline_spec()
    assert list(spec.sources) == ["sensors"]
    assert spec == read_spec(DEMO_SPEC)


def test_a_file_named_demo_is_a_spec_like_any_other(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    named_demo = tmp_path / "demo"
    named_demo.write_text(yaml.safe_dump(SPEC))
    monkeypatch.chdir(tmp_path)
    use_spec("demo")  # --spec demo: a path, made absolute, so not the bundled demo
    assert not is_demo()
    assert spec_path() == named_demo
    assert list(load_pipeline_spec().sources) == ["readings"]
