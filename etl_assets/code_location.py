"""The code location: the Definitions of the spec in use (see :mod:`etl_assets.spec_in_use`)."""

from __future__ import annotations

from pathlib import Path

from dagster import Definitions

from etl_assets.errors import EtlAssetsError
from etl_assets.factory import build_definitions
from etl_assets.secrets import mask_text
from etl_assets.spec import PipelineSpec, SpecError
from etl_assets.spec_in_use import is_demo, load_pipeline_spec, spec_path


def definitions_of(spec: PipelineSpec, path: Path) -> Definitions:
    """``build_definitions(spec)``; an error it meets (a transform or table definition that does
    not import, a sink kind whose extra is missing) raises SpecError naming ``path``."""
    try:
        return build_definitions(spec)
    except (EtlAssetsError, ValueError, ImportError) as exc:
        raise SpecError(f"{path}: {mask_text(str(exc))}") from exc


def load_definitions() -> Definitions:
    """The Definitions of the code location (with the demo's own job when the demo is in use)."""
    definitions = definitions_of(load_pipeline_spec(), spec_path())
    if is_demo():
        from etl_assets.demo.jobs import demo_definitions

        definitions = Definitions.merge(definitions, demo_definitions())
    return definitions
