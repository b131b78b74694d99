"""What the SQL table sinks' IO managers (PostgreSQL, MySQL) share: a declared table loaded
when the definitions are built and shown before any run, the table's metadata under
Dagster's keys, and a window counted through ``count_windows``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import pyarrow as pa
import sqlalchemy as sa
from dagster import TableSchema

from etl_assets.settings import SqlTableSinkSettings
from etl_assets.sinks.base import Metadata, SinkIOManager, SinkSetup, SinkSpecBase, WindowCount
from etl_assets.sinks.column_schema import TargetColumn, column_schema
from etl_assets.sinks.declared_table import load_declared_table
from etl_assets.watermark import Window


class SqlTableSinkSpec(SinkSpecBase, SqlTableSinkSettings):
    """The spec of a SQL table sink (for typing; each kind's model subclasses both)."""


S = TypeVar("S", bound=SqlTableSinkSpec)


class SqlTableIOManager(SinkIOManager[S]):
    """A SQL table sink's IO manager; a kind adds ``write``, ``count_windows``,
    ``target_columns``, ``committed_watermark``, ``status`` and ``compiled_type``."""

    keeps_watermark = True
    counts_windows = True
    has_columns = True
    # A partition without columns advances the watermark over its window (the writers'
    # ``prepare`` neither creates nor changes the table for it).
    writes_without_columns = True

    def __init__(self, setup: SinkSetup[S]) -> None:
        super().__init__(setup)
        reference = self.spec.table_definition
        # A wrong reference fails when the code location loads, not in a run.
        self.declared = load_declared_table(reference, setup.where) if reference else None

    @staticmethod
    def compiled_type(column: sa.Column[Any]) -> str:
        """A declared column's type as the database's DDL spells it."""
        raise NotImplementedError

    def declared_column_schema(self) -> TableSchema | None:
        """The declared table's columns (``table_definition``), types as its DDL spells them
        (the catalog's spelling shows in ``target_metadata`` after a run)."""
        if self.declared is None:
            return None
        key = [c.name for c in self.declared.primary_key.columns]
        return column_schema((TargetColumn(c.name, self.compiled_type(c),
                                           bool(c.nullable) and c.name not in key)
                              for c in self.declared.columns), key)

    def count_window(self, window: Window, keys: pa.Table | None) -> WindowCount:
        """What the table holds of ``window`` (see ``WindowCount``): the given keys looked up
        by the table's key, or the window's rows counted by cursor without keys."""
        return self.count_windows([(window, keys)])[0]


def table_metadata(name: str, columns: Sequence[TargetColumn], key: Sequence[str],
                   rows: int | None, estimated_rows: int) -> Metadata:
    """``dagster/table_name``, ``dagster/column_schema`` and ``dagster/row_count`` (exact),
    or ``row_count_estimate`` when only the database's estimate is known."""
    metadata: dict[str, object] = {"dagster/table_name": name,
                                   "dagster/column_schema": column_schema(columns, key)}
    if rows is not None:
        metadata["dagster/row_count"] = rows
    else:
        metadata["row_count_estimate"] = estimated_rows
    return metadata
