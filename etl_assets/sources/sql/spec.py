"""The spec of a SQL source: what ``kind: sql`` (the default kind) accepts."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from etl_assets.code_versions import NotData
from etl_assets.connections import database_kind
from etl_assets.settings import ConnectionSpec, TableSettings, check_table
from etl_assets.sources.base import SourceSpecBase


class SqlSourceSpec(SourceSpecBase, TableSettings):
    """A SQL table (or query) read incrementally by a timestamp or integer cursor column."""

    kind: Literal["sql"] = "sql"
    connection: ConnectionSpec
    table: str | None = Field(None, description="table or schema.table to read; quote a part "
                                                "that holds a dot: '\"my.schema\".\"t.x\"'")
    query: str | None = Field(None, description="SELECT with :lo and :hi bind parameters")
    chunk_rows: NotData[int] = Field(50_000, gt=0, description="rows per extracted batch")
    tinyint1: Literal["boolean", "integer"] = Field(
        "boolean", description="MySQL/MariaDB TINYINT(1) (BOOLEAN there): a boolean (a value "
                               "other than 0 or 1 fails the window), or its integer")
    # Every reader gives the same rows and types (the fast ones refuse a table they cannot
    # read exactly): NotData.
    reader: NotData[Literal["auto", "generic"]] = Field(
        "auto", description="auto: the database's fast reader where it carries every column "
                            "exactly (docs/extraction.md); generic: SQLAlchemy")
    parallel_reads: NotData[int] = Field(
        1, ge=1, le=16, description="connections reading slices of one window's cursor range "
                                    "at once (fast readers only)")

    _table = field_validator("table")(check_table)

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlSourceSpec:
        if bool(self.table) == bool(self.query):
            raise ValueError("give exactly one of `table` or `query`")
        if self.query and self.db_schema:
            raise ValueError("`schema` goes with `table`, not `query`")
        if self.query:
            missing = [p for p in (":lo", ":hi") if not re.search(rf"{p}\b", self.query)]
            if missing:
                raise ValueError(f"`query` must use the bind parameters {', '.join(missing)}")
            if self.cursor_type is None:
                raise ValueError("`cursor_type` (timestamp or integer) is required with `query`")
        return self

    def describe(self) -> str:
        return self.table_name.display if self.table else "a query"

    def asset_kinds(self) -> set[str]:
        """The database the URL names (``postgres``, ``mysql``, ``sqlite``...), ``sql`` when it
        cannot be told without a connection (an env var that is unset where the definitions
        load). Only the URL's scheme is read."""
        return {database_kind(self.connection)}

