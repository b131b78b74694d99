"""The layout the architecture document promises: one package a kind, found by registry,
and no import cycle between the package's modules."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from etl_assets.sinks.base import SinkIOManager, SinkSpecBase
from etl_assets.sinks.registry import SINK_KINDS, kind_of
from etl_assets.sources.base import SourceSpecBase
from etl_assets.sources.registry import SOURCE_KINDS

PACKAGE = Path(__file__).resolve().parent.parent / "etl_assets"


def _imports(path: Path) -> set[str]:
    """The etl_assets modules ``path`` imports, at top level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("etl_assets.")}


def test_no_module_imports_itself_back() -> None:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        graph[name.removesuffix(".__init__")] = _imports(path)
    cycles = []

    def walk(module: str, path: list[str], seen: set[str]) -> None:
        for imported in sorted(graph.get(module, ())):
            if imported == path[0]:
                cycles.append(" -> ".join([*path, imported]))
            elif imported in graph and imported not in seen:
                seen.add(imported)
                walk(imported, [*path, imported], seen)

    for module in sorted(graph):
        walk(module, [module], set())
    assert cycles == []


@pytest.mark.parametrize("kind", sorted(SINK_KINDS))
def test_each_sink_kind_is_one_package_with_its_spec_and_io_manager(kind: str) -> None:
    entry = SINK_KINDS[kind]
    assert kind_of(entry.spec) == kind
    assert issubclass(entry.spec, SinkSpecBase)
    package = entry.spec.__module__.rsplit(".", 1)[0]
    assert entry.io_manager.startswith(f"{package}.")  # the IO manager lives beside its spec
    module, _, name = entry.io_manager.partition(":")
    if entry.extra:
        pytest.importorskip("google.cloud.bigquery" if entry.extra == "bigquery" else entry.extra)
    assert issubclass(getattr(importlib.import_module(module), name), SinkIOManager)


@pytest.mark.parametrize("kind", sorted(SOURCE_KINDS))
def test_each_source_kind_is_one_package_with_its_spec_and_opener(kind: str) -> None:
    entry = SOURCE_KINDS[kind]
    assert issubclass(entry.spec, SourceSpecBase)
    assert entry.spec.model_fields["kind"].default == kind
    package = entry.spec.__module__.rsplit(".", 1)[0]
    module, _, function = entry.opener.partition(":")
    assert module.startswith(f"{package}.")
    assert callable(getattr(importlib.import_module(module), function))
