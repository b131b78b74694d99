"""The declarative pipeline spec: the YAML loader and ``PipelineSpec``, which holds the sources
and sinks of every kind in :mod:`etl_assets.sources.registry` and
:mod:`etl_assets.sinks.registry`.

A spec names sources (rows read incrementally by a cursor column) and sinks (where a source's
rows go). Every rule is checked here, when the spec is validated, so that ``etl-assets check``
and loading the code location agree; every error names the file, the pipeline and the field.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

import yaml
from pydantic import Discriminator, Field, Tag, ValidationError, model_validator
from pydantic_core import ErrorDetails

from etl_assets.code_versions import NotData
from etl_assets.errors import ConfigurationError
from etl_assets.executors import ExecutorSpec
from etl_assets.settings import NAME_PATTERN, StrictModel, env_var_names, refuse_secrets
from etl_assets.sinks.base import SinkSetup, SinkSpecBase
from etl_assets.sinks.registry import SINK_KINDS
from etl_assets.sources.base import SourceSpecBase
from etl_assets.sources.registry import DEFAULT_SOURCE_KIND, SOURCE_KINDS
from etl_assets.staging.spec import StagingSpec
from etl_assets.storage import StorageLocation


class SpecError(ConfigurationError, ValueError):
    """A spec that cannot be used; the message names the file, the pipeline and the field."""


def _kind_of(value: object, default: str | None) -> str | None:
    kind = value.get("kind", default) if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if isinstance(kind, str) else None


def _tagged_union(models: dict[str, type[Any]], default: str | None) -> Any:  # noqa: ANN401 (a typing form)
    """The models as one union that ``kind`` picks from (``default`` when it is missing)."""
    if len(models) == 1:
        return next(iter(models.values()))  # its `kind` literal refuses any other kind
    if default is None:
        return Annotated[Union[tuple(models.values())], Field(discriminator="kind")]  # noqa: UP007
    tagged = tuple(Annotated[model, Tag(kind)] for kind, model in models.items())
    return Annotated[Union[tagged], Discriminator(  # noqa: UP007
        lambda v: _kind_of(v, default), custom_error_type="kind_invalid",
        custom_error_message=f"`kind` must be one of {', '.join(models)}")]


if TYPE_CHECKING:
    SourceSpec = SourceSpecBase
    SinkSpec = SinkSpecBase
else:
    SourceSpec = _tagged_union({kind: k.spec for kind, k in SOURCE_KINDS.items()},
                               DEFAULT_SOURCE_KIND)
    SinkSpec = _tagged_union({kind: k.spec for kind, k in SINK_KINDS.items()}, None)


class DeadLetterSpec(StorageLocation):
    """Where undelivered rows are kept until a replay delivers them: a local folder, or an
    object store when runs do not share a disk."""

    root: NotData[str] = Field("${ETL_ASSETS_HOME}/dead_letters", description=(
        "a local folder (${VAR} expanded) or an fsspec URL such as s3://bucket/dead_letters"))


class PipelineSpec(StrictModel):
    sources: dict[str, SourceSpec]
    sinks: dict[str, SinkSpec] = Field(default_factory=dict)
    staging: StagingSpec = Field(default_factory=StagingSpec)
    dead_letters: DeadLetterSpec = Field(default_factory=DeadLetterSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    masked_parameters: list[str] = Field(
        default_factory=list, description="more URL parameter names whose values are secrets "
                                          "(e.g. sig, X-Amz-Signature), masked in every log, "
                                          "error and metadata like password and token")

    @model_validator(mode="after")
    def _no_secret_parameters(self) -> PipelineSpec:
        for section, models in (("source", self.sources), ("sink", self.sinks)):
            for name, model in models.items():
                connection = getattr(model, "connection", None)
                if connection is None or not connection.url:
                    continue
                try:
                    refuse_secrets(connection.url, self.masked_parameters)
                except ValueError as exc:
                    raise ValueError(f"{section} {name!r}: field 'connection.url': "
                                     f"{exc}") from None
        return self

    @model_validator(mode="after")
    def _references(self) -> PipelineSpec:
        clash = set(self.sources) & set(self.sinks)
        if clash:
            raise ValueError(f"names used for both a source and a sink: {', '.join(sorted(clash))}")
        for name, sink in self.sinks.items():
            if sink.source not in self.sources:
                raise ValueError(
                    f"sink {name!r}: source {sink.source!r} is not defined "
                    f"(sources: {', '.join(sorted(self.sources))})"
                )
            try:
                sink.check_in_pipeline(self.sink_setup(name))
            except ValueError as exc:
                raise ValueError(f"sink {name!r}: {exc}") from None
        unknown = sorted(set(self.executor.queues) - set(self.sources) - set(self.sinks))
        if unknown:
            raise ValueError(f"executor.queues: no source or sink {', '.join(unknown)} "
                             f"(sources and sinks: {', '.join([*self.sources, *self.sinks])})")
        return self

    def sink_setup(self, sink_name: str) -> SinkSetup[Any]:
        """Sink ``sink_name``'s spec with what it takes from this pipeline."""
        sink = self.sinks[sink_name]
        source = self.sources[sink.source]
        return SinkSetup.of(sink_name, sink, source_primary_key=source.primary_key,
                            source_cursor=source.cursor, dead_letter_root=self.dead_letters.root,
                            dead_letter_options=self.dead_letters.storage_options)

    def sinks_of(self, source_name: str) -> list[str]:
        """The names of the sinks fed by ``source_name``, in spec order."""
        return [name for name, sink in self.sinks.items() if sink.source == source_name]

    def environment_variables(self) -> dict[str, list[str]]:
        """Every environment variable the spec names -> where (``source 'x' field 'y'``)."""
        found: dict[str, list[str]] = {}
        for section, models in (("source", self.sources), ("sink", self.sinks)):
            for name, model in models.items():
                for field, variable in env_var_names(model):
                    found.setdefault(variable, []).append(f"{section} {name!r} field {field!r}")
        for field, variable in [*env_var_names(self.staging, "staging"),
                                *env_var_names(self.dead_letters, "dead_letters"),
                                *self.executor.environment_variables()]:
            found.setdefault(variable, []).append(f"field {field!r}")
        return found


def _format_error(origin: str, error: ErrorDetails) -> str:
    loc = [str(part) for part in error["loc"]]
    where = []
    if len(loc) >= 2 and loc[0] in ("sources", "sinks"):
        where.append(f"{loc[0][:-1]} {loc[1]!r}")
        loc = loc[2:]
        if loc and loc[0] in (*SINK_KINDS, *SOURCE_KINDS):  # pydantic's tag of the kind
            loc = loc[1:]
    if loc:
        where.append(f"field {'.'.join(loc)!r}")
    message = error["msg"].removeprefix("Value error, ")
    return f"{origin}: {': '.join([*where, message])}"


def parse_spec(data: object, origin: str = "<spec>") -> PipelineSpec:
    """Validate a spec given as plain data; ``origin`` names it in errors."""
    for section in ("sources", "sinks"):
        for name in (data.get(section) or {}) if isinstance(data, dict) else {}:
            if not re.match(NAME_PATTERN, str(name)):
                raise SpecError(
                    f"{origin}: {section[:-1]} {name!r}: a name must be letters, digits and _ "
                    f"and must not start with a digit"
                )
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError("\n".join(_format_error(origin, e) for e in exc.errors())) from None


def load_spec(path: str | os.PathLike[str]) -> PipelineSpec:
    """Read and validate a YAML spec file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec is a mapping with `sources` and `sinks`")
    return parse_spec(data, str(path))
