"""The code location: the spec named by ``$ETL_ASSETS_SPEC``, or the bundled demo."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import Definitions

from etl_assets.errors import EtlAssetsError
from etl_assets.factory import build_definitions
from etl_assets.secrets import mask_parameters, mask_text
from etl_assets.spec import PipelineSpec, SpecError, load_spec

SPEC_ENV = "ETL_ASSETS_SPEC"


def spec_path() -> Path:
    """The spec file in use: ``$ETL_ASSETS_SPEC``, else the demo spec."""
    from etl_assets.demo import DEMO_SPEC

    return Path(os.environ.get(SPEC_ENV) or DEMO_SPEC)


def load_pipeline_spec() -> PipelineSpec:
    """Load the spec in use; the demo's sample source database is made on first use."""
    path = spec_path()
    spec = load_spec(path)
    mask_parameters(spec.masked_parameters)
    if SPEC_ENV not in os.environ or not os.environ[SPEC_ENV]:
        from etl_assets.demo.sample_source import ensure_demo_source

        ensure_demo_source(spec)
    return spec


def definitions_of(spec: PipelineSpec, path: Path) -> Definitions:
    """``build_definitions(spec)``; an error it meets (a transform or table definition that does
    not import, a sink kind whose extra is missing) raises SpecError naming ``path``."""
    try:
        return build_definitions(spec)
    except (EtlAssetsError, ValueError, ImportError) as exc:
        raise SpecError(f"{path}: {mask_text(str(exc))}") from exc


def load_definitions() -> Definitions:
    """The Definitions of the code location."""
    spec = load_pipeline_spec()
    definitions = definitions_of(spec, spec_path())
    if SPEC_ENV not in os.environ or not os.environ[SPEC_ENV]:
        from etl_assets.demo.jobs import demo_definitions

        definitions = Definitions.merge(definitions, demo_definitions())
    return definitions
