"""etl_assets: incremental SQL -> PostgreSQL / HTTP / BigQuery / parquet pipelines as
partitioned Dagster assets. The code location's ``defs`` are in :mod:`etl_assets.definitions`;
``etl_assets.EtlAssetsComponent`` (:mod:`etl_assets.component`) is the Dagster Component, found
by ``dg`` through the ``dagster_dg_cli.registry_modules`` entry point, which names this module.
"""

from __future__ import annotations

from typing import Any

# Imported on first use: `import etl_assets.errors` (and the CLI) need not import Dagster's
# component machinery.
_LAZY = {"EtlAssetsComponent": "etl_assets.component"}


def __getattr__(name: str) -> Any:  # noqa: ANN401 (whatever the named module holds)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'etl_assets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
