"""The spec of a PostgreSQL sink: what ``kind: postgres`` accepts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from etl_assets.code_versions import NotData
from etl_assets.settings import (
    CONFLICT_DESCRIPTION,
    Conflict,
    ConnectionSpec,
    KeyedSinkSettings,
    RetrySettings,
    TableSettings,
    check_reference,
    check_table,
)
from etl_assets.sinks.base import SinkSpecBase

DeleteMode = Literal["off", "all"]


class PostgresSinkSpec(SinkSpecBase, RetrySettings, KeyedSinkSettings, TableSettings):
    """Upsert into a PostgreSQL table through COPY and a staging table."""

    kind: Literal["postgres"]
    connection: ConnectionSpec
    table: str = Field(description="table or schema.table to write (created when missing, "
                                   "in public without a schema); quote a part that holds a "
                                   "dot: '\"my.schema\".\"t.x\"'")
    primary_key: list[str] | None = Field(
        None, description="default: the source's primary key; [] for a table without one")
    table_definition: str | None = Field(
        None, description="module:attribute naming a SQLAlchemy Table whose columns and "
                          "database types the target must have (wins over the data's types)")
    without_key: Literal["replace_window", "append"] = Field(
        "replace_window", description="a table without a primary key: delete the partition's "
                                      "window of the source's cursor, then append (a re-run "
                                      "replaces it), or plain append")
    delete: DeleteMode = Field(
        "off", description="off: keep the table's other rows; all: each run's rows replace the "
                           "table's (loaded into a new table swapped in after the first batch, "
                           "so readers never see it empty; a run without rows leaves it as is)")
    terminate_blockers_after_s: NotData[float | None] = Field(
        None, ge=0, description="seconds a migration or swap waits for sessions holding the "
                                "table before terminating them (logged); unset: wait")
    conflict: Conflict = Field("newest", description=CONFLICT_DESCRIPTION)
    retries: NotData[int] = Field(5, ge=0, description="more attempts of a batch (in a new "
                                  "transaction) after a transient error: connection lost, "
                                  "server restarting, deadlock, serialization failure")

    _definition_ref = field_validator("table_definition")(check_reference)
    _table = field_validator("table")(check_table)

    def describe_target(self) -> str:
        return self.table_name.display

    def asset_kinds(self) -> set[str]:
        return {"postgres"}
