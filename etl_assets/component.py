"""``EtlAssetsComponent``: a Dagster Component whose YAML ``attributes:`` are a pipeline spec.

In any ``dg`` project with etl_assets installed, ``defs/<name>/defs.yaml``::

    type: etl_assets.EtlAssetsComponent
    attributes:
      sources: {...}      # exactly the keys of a spec file (etl_assets.spec.PipelineSpec)
      sinks: {...}

loads the pipelines next to the project's other components. The attributes are validated by
the spec's own models (:func:`etl_assets.spec.parse_spec`), so an error is the same one line
as ``etl-assets check`` gives, naming the defs.yaml file, the pipeline and the field; the
definitions are built as the code location builds them (:func:`code_location.definitions_of`).
Dagster's ``{{ }}`` templates are not rendered: a spec names environment variables with
``${VAR}`` (and ``connection: {env: VAR}``), resolved when a run reads or writes.

One EtlAssetsComponent per code location: the resources of two (``staging_io_manager``...)
would share keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import Component, ComponentLoadContext, Definitions
from pydantic import BaseModel, ConfigDict, RootModel
from typing_extensions import Self

from etl_assets.code_location import definitions_of
from etl_assets.secrets import mask_parameters
from etl_assets.spec import PipelineSpec, parse_spec


class SpecAttributes(RootModel[dict[str, Any]]):
    """The attributes as written: the spec's models validate them (in ``load``), not Dagster,
    so that the errors are the spec's."""

    model_config = ConfigDict(
        json_schema_extra={"description": "an etl_assets pipeline spec: sources, sinks, staging, "
                                          "dead_letters, masked_parameters"})


class EtlAssetsComponent(Component):
    """Incremental SQL -> PostgreSQL / files / BigQuery / HTTP pipelines (etl_assets): the
    attributes are a pipeline spec (sources, sinks, staging, dead_letters, masked_parameters)."""

    def __init__(self, spec: PipelineSpec, origin: Path) -> None:
        self.spec = spec
        self.origin = origin

    @classmethod
    def get_model_cls(cls) -> type[BaseModel]:
        return SpecAttributes

    @classmethod
    def load(cls, attributes: BaseModel | None, context: ComponentLoadContext) -> Self:
        origin = yaml_file_of(context)
        data = attributes.model_dump() if attributes is not None else {}
        spec = parse_spec(data, str(origin))
        mask_parameters(spec.masked_parameters)
        return cls(spec, origin)

    def build_defs(self, context: ComponentLoadContext) -> Definitions:
        return definitions_of(self.spec, self.origin)


def yaml_file_of(context: ComponentLoadContext) -> Path:
    """The defs.yaml (or defs.yml, component.yaml) the component is declared in."""
    tree = context.resolution_context.source_position_tree
    if tree is not None:
        return Path(tree.position.filename)
    return context.path / "defs.yaml"
