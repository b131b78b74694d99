"""A MariaDB database of the test session, as the MySQL sink tests use it."""

from __future__ import annotations

import uuid
from typing import Any

import pymysql


class MariaDb:
    """The session database behind ``url``, and a fresh table name per test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.database = url.rsplit("/", 1)[1].split("?")[0]
        self.name = f"t_{uuid.uuid4().hex[:8]}"

    def connect(self) -> Any:
        return pymysql.connect(host="127.0.0.1", user="root", database=self.database,
                               autocommit=True)

    def query(self, statement: str, args: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(statement, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def rows(self, table: str | None = None, order: str = "id") -> list[tuple[Any, ...]]:
        return self.query(f"SELECT * FROM `{table or self.name}` ORDER BY {order}")

    def columns(self, table: str | None = None) -> dict[str, str]:
        return {name: kind for name, kind, *_ in self.query(f"SHOW COLUMNS FROM "
                                                             f"`{table or self.name}`")}

    def comment(self, table: str | None = None) -> str:
        return self.query("SELECT TABLE_COMMENT FROM information_schema.TABLES WHERE "
                          "TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                          (self.database, table or self.name))[0][0]

    def tables(self) -> list[str]:
        return [t for (t,) in self.query(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME LIKE %s ORDER BY 1", (self.database, self.name + "%"))]
