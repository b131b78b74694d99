"""Every source kind: its ``kind``, its spec model and the function that opens it. Adding a
kind is a package under ``etl_assets/sources/`` and one line here."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from etl_assets.sources.base import Source, SourceSpecBase
from etl_assets.sources.http.spec import HttpSourceSpec
from etl_assets.sources.python.spec import PythonSourceSpec
from etl_assets.sources.sql.spec import SqlSourceSpec

DEFAULT_SOURCE_KIND = "sql"
"""The kind of a source whose spec gives none."""


@dataclass(frozen=True)
class SourceKind:
    """A source kind: ``spec`` validates it, ``opener`` (``module:function`` taking the
    source's name and spec) opens it; imported only when a source of the kind is read."""

    spec: type[SourceSpecBase]
    opener: str

    def open(self, name: str, spec: SourceSpecBase) -> Source:
        module, _, function = self.opener.partition(":")
        open_source: Callable[[str, Any], Source] = getattr(importlib.import_module(module),
                                                            function)
        return open_source(name, spec)


SOURCE_KINDS: dict[str, SourceKind] = {
    "sql": SourceKind(SqlSourceSpec, "etl_assets.sources.sql.source:open_sql_source"),
    "http": SourceKind(HttpSourceSpec, "etl_assets.sources.http.source:open_http_source"),
    "python": SourceKind(PythonSourceSpec, "etl_assets.sources.python.source:open_python_source"),
}


def open_source(name: str, spec: SourceSpecBase) -> Source:
    """Source ``name``, ready to read (its connection resolved now); ``dispose()`` it."""
    return SOURCE_KINDS[spec.kind].open(name, spec)
