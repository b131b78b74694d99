"""The spec in use: the file named by ``$ETL_ASSETS_SPEC`` (which ``etl-assets --spec PATH`` sets),
or the bundled demo's when it is unset, empty or ``demo``. The file is a spec, or a ``dg``
defs.yaml that declares an ``etl_assets.EtlAssetsComponent`` (its ``attributes:`` are the spec)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from etl_assets.secrets import mask_parameters
from etl_assets.spec import PipelineSpec, SpecError, load_spec, parse_spec

SPEC_ENV = "ETL_ASSETS_SPEC"
# The value that asks for the bundled demo where an empty one is refused (docker-compose.yml).
DEMO = "demo"
COMPONENT_TYPES = frozenset({"etl_assets.EtlAssetsComponent",
                             "etl_assets.component.EtlAssetsComponent"})


def is_demo() -> bool:
    """Whether the spec in use is the bundled demo's: ``$ETL_ASSETS_SPEC`` unset, empty or
    ``demo``."""
    return os.environ.get(SPEC_ENV, "") in ("", DEMO)


def use_spec(path: str | os.PathLike[str]) -> None:
    """Make ``path`` the spec in use, for this process and the processes it starts (a run's,
    a code server's): ``$ETL_ASSETS_SPEC``, absolute."""
    os.environ[SPEC_ENV] = str(Path(path).absolute())


def spec_path() -> Path:
    """The spec file in use: ``$ETL_ASSETS_SPEC``, else (see :func:`is_demo`) the demo spec."""
    from etl_assets.demo import DEMO_SPEC

    return DEMO_SPEC if is_demo() else Path(os.environ[SPEC_ENV])


def read_spec(path: str | os.PathLike[str]) -> PipelineSpec:
    """Read and validate a spec file, or the ``attributes:`` of the EtlAssetsComponent that a
    defs.yaml declares; errors name ``path``."""
    attributes = _component_attributes(Path(path))
    if attributes is None:
        return load_spec(path)
    return parse_spec(attributes, str(path))


def _component_attributes(path: Path) -> object | None:
    """The attributes of the one EtlAssetsComponent ``path`` declares; None when it declares
    none (or cannot be read: :func:`load_spec` says why)."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError):
        return None
    ours = [d for d in documents if isinstance(d, dict) and d.get("type") in COMPONENT_TYPES]
    if not ours:
        return None
    if len(ours) > 1:
        raise SpecError(f"{path}: declares {len(ours)} EtlAssetsComponents; a spec is one of them")
    return ours[0].get("attributes") or {}


def load_pipeline_spec() -> PipelineSpec:
    """Load the spec in use; the demo's sample source database is made on first use."""
    spec = read_spec(spec_path())
    mask_parameters(spec.masked_parameters)
    if is_demo():
        from etl_assets.demo.sample_source import ensure_demo_source

        ensure_demo_source(spec)
    return spec
