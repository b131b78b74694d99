"""Every sink kind: its ``kind``, its spec model and its IO manager. Adding a kind is a package
under ``etl_assets/sinks/`` and one line here.

Spec models are imported here (they are light: pydantic only); an IO manager only when a sink
of its kind is built, so a kind whose optional dependencies are missing fails then, naming the
extra to install.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from etl_assets.errors import ConfigurationError
from etl_assets.sinks.base import SinkIOManager, SinkSetup, SinkSpecBase
from etl_assets.sinks.bigquery.spec import BigQuerySinkSpec
from etl_assets.sinks.files.spec import ParquetSinkSpec
from etl_assets.sinks.http.spec import HttpSinkSpec
from etl_assets.sinks.mysql.spec import MysqlSinkSpec
from etl_assets.sinks.postgres.spec import PostgresSinkSpec


@dataclass(frozen=True)
class SinkKind:
    """A sink kind: ``spec`` validates it, ``io_manager`` (``module:Class``) writes it."""

    spec: type[SinkSpecBase]
    io_manager: str
    extra: str | None = None
    """The pip extra the IO manager's dependencies come with (None: always installed)."""

    def io_manager_class(self, where: str) -> type[SinkIOManager[Any]]:
        module, _, name = self.io_manager.partition(":")
        try:
            found: type[SinkIOManager[Any]] = getattr(importlib.import_module(module), name)
        except ImportError as exc:
            raise ConfigurationError(
                f"{where}: kind {kind_of(self.spec)} needs the `{self.extra}` extra "
                f"(pip install 'etl_assets[{self.extra}]'): {exc}") from None
        return found


def kind_of(model: type[SinkSpecBase]) -> str:
    """The ``kind`` literal of a sink spec model."""
    # a Literal["<kind>"] annotation, which pydantic types as any type form
    kind: str = model.model_fields["kind"].annotation.__args__[0]  # type: ignore[union-attr]
    return kind


SINK_KINDS: dict[str, SinkKind] = {
    "postgres": SinkKind(PostgresSinkSpec,
                         "etl_assets.sinks.postgres.io_manager:PostgresUpsertIOManager"),
    "parquet": SinkKind(ParquetSinkSpec, "etl_assets.sinks.files.io_manager:ParquetSinkIOManager"),
    "bigquery": SinkKind(BigQuerySinkSpec,
                         "etl_assets.sinks.bigquery.io_manager:BigQuerySinkIOManager",
                         extra="bigquery"),
    "http": SinkKind(HttpSinkSpec, "etl_assets.sinks.http.io_manager:HttpApiIOManager"),
    "mysql": SinkKind(MysqlSinkSpec, "etl_assets.sinks.mysql.io_manager:MysqlUpsertIOManager"),
}


def sink_io_manager(setup: SinkSetup[Any]) -> SinkIOManager[Any]:
    """The IO manager that writes the sink of ``setup``."""
    return SINK_KINDS[setup.spec.kind].io_manager_class(setup.where)(setup)
