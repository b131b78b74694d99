"""The spec of a PostgreSQL sink: what ``kind: postgres`` accepts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from etl_assets.code_versions import NotData
from etl_assets.settings import (
    ConnectionSpec,
    DeleteMode,
    RetrySettings,
    check_table,
)
from etl_assets.sinks.sql_table import SqlTableSinkSpec

__all__ = ["DeleteMode", "PostgresSinkSpec"]


class PostgresSinkSpec(SqlTableSinkSpec, RetrySettings):
    """Upsert into a PostgreSQL table through COPY and a staging table."""

    kind: Literal["postgres"]
    connection: ConnectionSpec
    table: str = Field(description="table or schema.table to write (created when missing, "
                                   "in public without a schema); quote a part that holds a "
                                   "dot: '\"my.schema\".\"t.x\"'")
    terminate_blockers_after_s: NotData[float | None] = Field(
        None, ge=0, description="seconds a migration or swap waits for sessions holding the "
                                "table before terminating them (logged); unset: wait")
    retries: NotData[int] = Field(5, ge=0, description="more attempts of a batch (in a new "
                                  "transaction) after a transient error: connection lost, "
                                  "server restarting, deadlock, serialization failure")

    _table = field_validator("table")(check_table)

    def asset_kinds(self) -> set[str]:
        return {"postgres"}
