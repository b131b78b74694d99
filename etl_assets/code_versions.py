"""Code versions: an asset's version is a hash of only what changes the rows a partition gets,
so that Dagster marks a partition changed when (and only when) running it again would write
other rows.

What changes a partition's rows: which source is read and how (connection, table or query,
cursor; a python source's function and its code), the transform's code, and the sink's
target and write semantics (table, mode, key, conflict rule). What does not: how windows
are cut (they decide which partitions exist, not what one holds), the sensor, batch and
chunk sizes, retries, timeouts, concurrency and governance (owners, tags, group...). A
field that does not change the data is declared ``NotData[...]``, once, where it is
declared; every other field does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import BaseModel

from etl_assets.transforms import code_of


class _NotDataMarker:
    """The ``Annotated`` metadata of ``NotData``."""

    def __repr__(self) -> str:
        return "NotData"


NOT_DATA = _NotDataMarker()
T = TypeVar("T")
NotData = Annotated[T, NOT_DATA]
"""A setting that does not change the rows a partition gets (left out of code versions)."""


def changes_data(model: type[BaseModel], field: str) -> bool:
    """False when ``field`` of ``model`` is declared ``NotData``."""
    return NOT_DATA not in model.model_fields[field].metadata


def data_settings(model: BaseModel) -> dict[str, Any]:
    """``model``'s fields that change the data, nested models likewise, as plain values."""
    return {field: _data(getattr(model, field)) for field in type(model).model_fields
            if changes_data(type(model), field)}


def _data(value: object) -> object:
    if isinstance(value, BaseModel):
        return data_settings(value)
    if isinstance(value, list | tuple):
        return [_data(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _data(item) for key, item in value.items()}
    return value


def version_of(*parts: object) -> str:
    """A short stable hash of ``parts`` (JSON-able values; others by ``str``)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class SinkSettings(Protocol):
    """What a sink's version is made of: ``etl_assets.sinks.base.SinkSetup`` (named only
    structurally: the spec models import this module)."""

    @property
    def spec(self) -> BaseModel: ...
    @property
    def primary_key(self) -> list[str]: ...
    @property
    def cursor_column(self) -> str: ...


def source_code_version(spec: BaseModel, code: Sequence[str] = ()) -> str:
    """The code version of a source asset (``spec``: its ``SourceSpecBase``): its settings
    that change the staged rows, and the code of the functions that make them (``code``:
    ``SourceSpecBase.code_of_functions``, e.g. a python source's function)."""
    return version_of(data_settings(spec), *code)


def sink_code_version(setup: SinkSettings, transform: Callable[..., Any] | None) -> str:
    """The code version of a sink asset (``setup``: its ``SinkSetup``, from
    ``PipelineSpec.sink_setup``): its settings that change the written rows, the key
    and cursor column it takes from its pipeline (they decide which row wins), and the code
    of its transform with the module-level functions it calls (``transforms.code_of``)."""
    return version_of(data_settings(setup.spec), setup.primary_key, setup.cursor_column,
                      code_of(transform) if transform else None)
