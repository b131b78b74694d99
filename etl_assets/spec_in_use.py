"""The spec in use: the file named by ``$ETL_ASSETS_SPEC``, or the bundled demo's."""

from __future__ import annotations

import os
from pathlib import Path

from etl_assets.secrets import mask_parameters
from etl_assets.spec import PipelineSpec, load_spec

SPEC_ENV = "ETL_ASSETS_SPEC"


def is_demo() -> bool:
    """Whether the spec in use is the bundled demo's (``$ETL_ASSETS_SPEC`` unset or empty)."""
    return not os.environ.get(SPEC_ENV)


def spec_path() -> Path:
    """The spec file in use: ``$ETL_ASSETS_SPEC``, else the demo spec."""
    from etl_assets.demo import DEMO_SPEC

    return Path(os.environ.get(SPEC_ENV) or DEMO_SPEC)


def load_pipeline_spec() -> PipelineSpec:
    """Load the spec in use; the demo's sample source database is made on first use."""
    spec = load_spec(spec_path())
    mask_parameters(spec.masked_parameters)
    if is_demo():
        from etl_assets.demo.sample_source import ensure_demo_source

        ensure_demo_source(spec)
    return spec
