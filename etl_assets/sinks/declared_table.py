"""A target table declared by the user as a SQLAlchemy ``Table`` (``table_definition``),
whose columns and database types win over the data's (SQL sinks)."""

from __future__ import annotations

import sqlalchemy as sa

from etl_assets.transforms import TransformError, import_reference


def load_declared_table(reference: str, owner: str) -> sa.Table:
    """The SQLAlchemy Table that ``reference`` (``module:attribute``) names; an ORM class
    with a ``__table__`` is accepted too."""
    target = import_reference(reference, owner, "table_definition")
    table = getattr(target, "__table__", target)
    if not isinstance(table, sa.Table):
        raise TransformError(f"{owner}: table_definition {reference} is a "
                             f"{type(target).__name__}, not a SQLAlchemy Table")
    return table
