"""The spec of a Python source: what ``kind: python`` accepts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from etl_assets.code_versions import NotData
from etl_assets.settings import check_reference
from etl_assets.sources.base import CursorType, SourceSpecBase
from etl_assets.sources.records import check_columns, declared_schema
from etl_assets.transforms import TransformError, code_of, import_reference


class PythonSourceSpec(SourceSpecBase):
    """Rows from a Python function, called once a window with the window's bounds."""

    kind: Literal["python"] = "python"
    function: str = Field(
        description="package.module:function called as function(lo, hi) for the window "
                    "lo < cursor <= hi; yields or returns Arrow record batches or tables, "
                    "pandas DataFrames or lists of dicts")
    # The sensor's newest cursor value decides which windows exist, not a window's rows.
    latest: NotData[str | None] = Field(
        None, description="package.module:function called with no arguments: the newest "
                          "cursor value (default for a timestamp cursor: now, UTC)")
    columns: dict[str, str] | None = Field(
        None, description="column name -> Arrow type name (int64, string, float64, bool, "
                          "timestamp[us, tz=UTC], decimal(12,2), json...); columns not "
                          "declared take the first batch's types")

    _references = field_validator("function", "latest")(check_reference)
    _columns = field_validator("columns")(check_columns)

    @model_validator(mode="after")
    def _cursor(self) -> PythonSourceSpec:
        declared = self.declared_cursor_type()
        if self.cursor_type is None and declared is None:
            raise ValueError("`cursor_type` (timestamp or integer) is required unless "
                             "`columns` declares the cursor's type")
        if self.cursor_type and declared and self.cursor_type != declared:
            raise ValueError(f"`cursor_type` is {self.cursor_type} but `columns` declares "
                             f"{self.cursor} {self._declared_type()}")
        if self.resolved_cursor_type == "integer" and not self.latest:
            raise ValueError("an integer cursor needs `latest` (package.module:function "
                             "returning the newest cursor value)")
        return self

    def declared_cursor_type(self) -> CursorType | None:
        """The cursor's type as ``columns`` declares it (None: not declared); ValueError for a
        declared type no cursor can have."""
        schema = declared_schema(self.columns)
        if schema is None or self.cursor not in schema.names:
            return None
        arrow = schema.field(self.cursor).type
        if pa.types.is_timestamp(arrow):
            return "timestamp"
        if pa.types.is_integer(arrow):
            return "integer"
        raise ValueError(f"`columns` declares the cursor {self.cursor} "
                         f"{self._declared_type()}; a cursor is a timestamp or an integer")

    def _declared_type(self) -> str:
        return (self.columns or {}).get(self.cursor, "")

    @property
    def resolved_cursor_type(self) -> CursorType:
        """``cursor_type``, else the cursor's type in ``columns`` (one of them is given)."""
        found = self.cursor_type or self.declared_cursor_type()
        assert found is not None
        return found

    def describe(self) -> str:
        return self.function

    def asset_kinds(self) -> set[str]:
        return {"python"}

    def code_of_functions(self, owner: str) -> list[str]:
        """The code of ``function`` (with what it uses from its module: changing it changes
        the rows), ``latest`` imported too; a reference that does not import raises naming
        ``owner`` and the field."""
        if self.latest:
            load_function(self.latest, owner, "latest")
        return [code_of(load_function(self.function, owner, "function"))]


def load_function(reference: str, owner: str, field: str) -> Callable[..., Any]:
    """The callable ``reference`` names; TransformError naming ``owner`` and ``field``."""
    target = import_reference(reference, owner, field)
    if not callable(target):
        raise TransformError(f"{owner}: {field} {reference} is not callable")
    return target
