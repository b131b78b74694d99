"""A target's columns as Dagster's ``dagster/column_schema`` shows them, for every sink kind."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from dagster import TableColumn, TableColumnConstraints, TableConstraints, TableSchema


class TargetColumn(NamedTuple):
    """One column of a target: ``type`` as the target itself spells it."""

    name: str
    type: str
    nullable: bool = True


def column_schema(columns: Iterable[TargetColumn], key: Sequence[str] = ()) -> TableSchema:
    """A ``TableSchema`` of ``columns`` (in order); ``key``, when given, is the table's
    constraint ``primary key (a, b)``, and a one-column key's column is ``unique``."""
    unique = key[0] if len(key) == 1 else None
    return TableSchema(
        columns=[TableColumn(c.name, c.type, constraints=TableColumnConstraints(
            nullable=c.nullable, unique=c.name == unique)) for c in columns],
        constraints=TableConstraints(other=[f"primary key ({', '.join(key)})"]) if key else None)
