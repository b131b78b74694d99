"""The spec of a MySQL/MariaDB sink: what ``kind: mysql`` accepts."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from etl_assets.code_versions import NotData
from etl_assets.settings import ConnectionSpec, RetrySettings, check_table
from etl_assets.sinks.sql_table import SqlTableSinkSpec


class MysqlSinkSpec(SqlTableSinkSpec, RetrySettings):
    """Upsert into a MySQL 8 / MariaDB 10.6+ table: LOAD DATA LOCAL INFILE into a temporary
    table, then INSERT .. ON DUPLICATE KEY UPDATE (``delete: all`` swaps by RENAME TABLE)."""

    kind: Literal["mysql"]
    connection: ConnectionSpec
    table: str = Field(description="table or database.table to write (created when missing, "
                                   "in the URL's database without one)")
    local_infile_refused: NotData[Literal["insert", "fail"]] = Field(
        "insert", description="when the server refuses LOAD DATA LOCAL INFILE: insert: load "
                              "each batch by multi-row INSERTs (slower; warned once a run); "
                              "fail: a one-line error")
    on_error: NotData[Literal["fail", "dead_letter"]] = Field(
        "fail", description="a row the table refuses (strict sql_mode: out of range, too "
                            "long, not a date...): fail the run naming table, column and row; "
                            "or keep it as a dead letter (the run goes on; the sink's replay "
                            "job writes it again)")
    retries: NotData[int] = Field(5, ge=0, description="more attempts of a batch (in a new "
                                  "transaction, on a new connection) after a transient error: "
                                  "connection lost, server gone away, deadlock, lock wait "
                                  "timeout")

    _table = field_validator("table")(check_table)

    @model_validator(mode="after")
    def _a_mysql_connection(self) -> MysqlSinkSpec:
        if self.connection.embedded:
            raise ValueError("connection.embedded: the embedded server is PostgreSQL; give a "
                             "MySQL/MariaDB URL through `env` or `url`")
        url = self.connection.url
        if url and "${" not in url.split("://", 1)[0] and not re.match(
                r"(mysql|mariadb)(\+\w+)?://", url):
            raise ValueError(f"connection.url: {url.split('://', 1)[0]}:// is not a "
                             f"MySQL/MariaDB URL (mysql+pymysql://user@host:3306/database)")
        return self

    def asset_kinds(self) -> set[str]:
        return {"mysql"}
