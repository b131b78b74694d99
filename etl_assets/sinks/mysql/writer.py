"""The MySQL/MariaDB upsert writer: each batch by ``LOAD DATA LOCAL INFILE`` into a temporary
table, then ``INSERT .. SELECT .. ON DUPLICATE KEY UPDATE``, one transaction a batch.

Per batch: in-batch duplicate keys are resolved (the newest row wins), the batch is written as
LOAD DATA text by Arrow kernels (``rows_text``) to a file, loaded into a temporary table shaped
like the target, and upserted with the newest-wins rule (a stored row is replaced only by one
whose cursor is not older; a stored NULL is the oldest); the table's watermark (its COMMENT)
advances right after the commit. A table without a primary key is loaded into directly; when
the partition's column (the source's cursor) is in the data, the partition's slice is deleted
in the first batch's transaction, so a re-run replaces it.

The session's sql_mode is strict; LOAD DATA LOCAL turns the server's errors into warnings
(it cannot stop the client's file midway), so any warning fails the batch, naming the table,
column and row. A server that refuses LOCAL INFILE is loaded by multi-row INSERTs instead
(``local_infile_refused: insert``, warned) or fails with a one-line error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import pyarrow as pa
import pymysql
import sqlalchemy as sa

from etl_assets.errors import ConfigurationError, DataError
from etl_assets.logs import Log
from etl_assets.retries import RetryPolicy, describe, is_transient
from etl_assets.secrets import mask_url
from etl_assets.settings import Conflict
from etl_assets.sinks.comment_watermark import WatermarkTarget
from etl_assets.sinks.mysql.column_types import key_chars, mysql_type
from etl_assets.sinks.mysql.connection import (
    LOCAL_INFILE_REFUSED,
    connect_arguments,
    open_session,
    url_database,
)
from etl_assets.sinks.mysql.delete_all import ReplaceAll, drop_stale_replacements
from etl_assets.sinks.mysql.errors import MysqlSinkError, RefusedRows
from etl_assets.sinks.mysql.locks import named_lock, release_lock, take_lock
from etl_assets.sinks.mysql.rows_text import (
    ColumnText,
    insert_tuples,
    load_data_statement,
    load_file_body,
    new_load_file,
    texts,
)
from etl_assets.sinks.mysql.table import (
    ColumnDef,
    Cursor,
    TableDef,
    alterations,
    create_table,
    declared_columns,
    existing_table,
    quoted,
    unique_keys,
)
from etl_assets.sinks.mysql.watermark import record_watermark
from etl_assets.sinks.table_writer import SqlTableWriter
from etl_assets.table_names import TableName

T = TypeVar("T")

_DUPLICATES = re.compile(rb"Duplicates: (\d+)")
_AT_ROW = re.compile(r"at row (\d+)")
_COLUMN = re.compile(r"column (?:`[^`]*`\.)*[`']([^`']+)[`']|^Column '([^']+)'|"
                     r"CONSTRAINT `(?:[^`]*\.)?([^`.]+)` failed")


class MysqlUpsertWriter(SqlTableWriter):
    """Writes record batches into one MySQL table by LOAD DATA + upsert, a batch a
    transaction."""

    error = MysqlSinkError

    def __init__(self, url: str, table: str | TableName, primary_key: Sequence[str],
                 staging_name: str, *, watermark: WatermarkTarget | None = None,
                 replace_slice: bool = True, declared_table: sa.Table | None = None,
                 declared_reference: str = "", delete: Literal["off", "all"] = "off",
                 log: Log | None = None, conflict: Conflict = "newest",
                 cursor_column: str | None = None, retry: RetryPolicy | None = None,
                 local_infile_refused: Literal["insert", "fail"] = "insert",
                 owner: str = "mysql sink") -> None:
        self.url = url
        self.arguments = connect_arguments(url, owner)
        name = table if isinstance(table, TableName) else TableName.parse(table)
        database = name.schema or url_database(url)
        if not database:
            raise ConfigurationError(f"{owner}: name the database of {name.display} in the "
                                     f"table (database.table) or in the URL")
        self.database, self.table_name = database, name.name
        self.display = f"{database}.{name.name}"
        self.target = quoted(database, name.name)
        self.primary_key = list(primary_key)
        self.staging = quoted(staging_name)
        self.watermark = watermark
        self.replace_slice = replace_slice
        self.declared_table = declared_table
        self.declared_reference = declared_reference or (
            declared_table.fullname if declared_table is not None else "")
        self.delete = delete
        self.log: Log = log or logging.getLogger(__name__)
        self.conflict = conflict
        self.cursor_column = cursor_column or (watermark.cursor if watermark else None)
        self.retry = retry or RetryPolicy(retries=0)
        self.local_infile_refused = local_infile_refused
        self.conn: Any = None
        self._columns: list[str] = []
        self._newest_by: str | None = None
        self._upsert = ""
        self._slice_delete: tuple[str, tuple[Any, ...]] | None = None
        self._replace: ReplaceAll | None = None
        self._replace_loaded = False
        self._write_target = self.target
        self._session_ready = False
        self._by_insert = False  # LOCAL INFILE refused: multi-row INSERTs
        self._finished = False
        # the LOAD DATA file of the batch being written (the server asks for it by name)
        self._path = new_load_file()

    # -- connection ----------------------------------------------------------------------

    def __enter__(self) -> MysqlUpsertWriter:
        self._retrying(f"connecting to {mask_url(self.url)}", self._connect, reconnect=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.conn is not None:
            with contextlib.suppress(pymysql.MySQLError, OSError):
                self.conn.rollback()
                if self._replace is not None:  # a run that failed before the swap
                    self._replace.abandon(self.conn.cursor())
            with contextlib.suppress(pymysql.MySQLError, OSError):
                self.conn.close()
            self.conn = None
        with contextlib.suppress(OSError):
            os.unlink(self._path)

    def _connect(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(pymysql.MySQLError, OSError):
                self.conn.close()
        self.conn = None
        self._session_ready = False
        try:
            self.conn = open_session(self.arguments)
        except pymysql.MySQLError as exc:
            if is_transient(exc):
                raise
            raise MysqlSinkError(f"{self.display}: cannot connect to {mask_url(self.url)}: "
                                 f"{describe(exc)}") from None
        if self._replace is not None and not self._replace.hold(self.conn.cursor()):
            if self._replace_loaded:
                raise MysqlSinkError(
                    f"{self.display}: delete all: {self._replace.replacement}, loaded by this "
                    f"run, was dropped by another run while this run's connection was lost; "
                    f"run the partition again")
            self._replace.start(self.conn.cursor())

    def _cursor(self) -> Cursor:
        assert self.conn is not None
        return self.conn.cursor()

    # -- table ---------------------------------------------------------------------------

    def prepare(self, schema: pa.Schema) -> list[str]:
        """Create the table or add the data's new columns (a declared table: also its types,
        nullability and key), and with delete mode ALL create the replacement the first batch
        loads into; returns the actions taken. Retried on transient errors."""
        if not schema.names:
            return self._retrying("reading the table", self._prepare_without_columns)
        self._check_key_columns(schema)

        def attempt() -> list[str]:
            if self._replace is not None:  # an attempt that failed after building it
                with contextlib.suppress(pymysql.MySQLError):
                    self._replace.abandon(self._cursor())
                self._replace = None
                self._write_target = self.target
            return self._prepare(schema)

        return self._retrying("preparing the table", attempt)

    def _prepare(self, schema: pa.Schema) -> list[str]:
        cur = self._cursor()
        actions: list[str] = []
        if self.delete == "all":
            drop_stale_replacements(cur, self.database, self.table_name, log=self.log)
        desired = self._desired_table(cur, schema)
        lock = named_lock("ddl", self.database, self.table_name)
        take_lock(cur, lock, f"{self.display}: preparing the table")
        try:
            existing = existing_table(cur, self.database, self.table_name)
            if existing is None:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS {quoted(self.database)}")
                create_table(cur, desired)
                actions.append(f"created {self.display}")
                existing = desired
            else:
                clauses = alterations(existing, desired,
                                      declared=self.declared_table is not None)
                if clauses:
                    self._alter(cur, clauses)
                    actions.append(f"altered {self.display}: {', '.join(clauses)}")
                    existing = existing_table(cur, self.database, self.table_name) or existing
        finally:
            release_lock(cur, lock)
        if self.primary_key:
            self._check_key(cur, existing)
        self._columns = list(schema.names)
        self._newest_by = self._newest_column(schema)
        if self.delete == "all":
            self._replace = ReplaceAll(self.database, self.table_name, self.log)
            actions.append(self._replace.start(cur))
            self._write_target = self._replace.sql
        self._upsert = self._upsert_statement()
        self._slice_delete = None if self._replace else self._slice_statement(schema.names)
        if not self.primary_key:
            actions.append(self._append_mode_note())
        self._ensure_session()
        return actions

    def _table_column_names(self) -> list[str] | None:
        existing = existing_table(self._cursor(), self.database, self.table_name)
        self.conn.commit()
        return None if existing is None else [c.name for c in existing.columns]

    def _desired_table(self, cur: Cursor, schema: pa.Schema) -> TableDef:
        """The declared table's columns and key; else the data's types."""
        if self.declared_table is None:
            chars = key_chars(schema, self.primary_key)
            try:
                columns = tuple(ColumnDef(f.name, mysql_type(
                    f, key_chars=chars if f.name in self.primary_key else None),
                    f.name not in self.primary_key) for f in schema)
            except DataError as exc:
                raise MysqlSinkError(f"{self.display}: {exc}") from None
            return TableDef(self.database, self.table_name, columns, tuple(self.primary_key))
        try:
            columns = declared_columns(cur, self.declared_table, self.declared_reference)
        except ValueError as exc:
            raise MysqlSinkError(f"{self.display}: declared table {exc}") from None
        names = {c.name.lower() for c in columns}
        undeclared = [n for n in schema.names if n.lower() not in names]
        if undeclared:
            raise MysqlSinkError(
                f"{self.display}: column(s) {', '.join(undeclared)} of the data are not in the "
                f"declared table {self.declared_reference} (declared: "
                f"{', '.join(c.name for c in columns)}); add them there or drop them in the "
                f"sink's transform")
        self.primary_key = [c.name for c in self.declared_table.primary_key.columns]
        return TableDef(self.database, self.table_name, columns, tuple(self.primary_key))

    def _alter(self, cur: Cursor, clauses: list[str]) -> None:
        try:
            cur.execute(f"ALTER TABLE {self.target} {', '.join(clauses)}")
        except pymysql.MySQLError as exc:
            if is_transient(exc):
                raise
            raise MysqlSinkError(f"{self.display}: altering the table ({', '.join(clauses)}) "
                                 f"failed: {describe(exc)}") from None

    def _check_key(self, cur: Cursor, table: TableDef) -> None:
        if {k.lower() for k in self.primary_key} not in unique_keys(cur, table):
            raise MysqlSinkError(
                f"{self.display}: the table has no primary key or unique index on exactly "
                f"({', '.join(self.primary_key)}), which an upsert needs")

    def _ensure_session(self) -> None:
        """The connection's temporary table (gone with a lost connection)."""
        if self._session_ready or not self.primary_key:
            self._session_ready = True
            return
        cur = self._cursor()
        cur.execute(f"DROP TEMPORARY TABLE IF EXISTS {self.staging}")
        cur.execute(f"CREATE TEMPORARY TABLE {self.staging} LIKE {self._write_target}")
        self._session_ready = True

    def _upsert_statement(self) -> str:
        cols = ", ".join(quoted(c) for c in self._columns)
        insert = f"INSERT INTO {self._write_target} ({cols}) SELECT {cols} FROM {self.staging} "
        keys = {k.lower() for k in self.primary_key}
        updates = [c for c in self._columns if c.lower() not in keys]
        if not updates:
            first = f"{self._write_target}.{quoted(self.primary_key[0])}"
            return insert + f"ON DUPLICATE KEY UPDATE {first} = {first}"
        stored = self._write_target  # its columns, qualified: the SELECT's are named alike
        if self._newest_by is None:
            return insert + "ON DUPLICATE KEY UPDATE " + ", ".join(
                f"{stored}.{quoted(c)} = VALUES({quoted(c)})" for c in updates)
        # newest wins; the cursor is assigned last: later assignments see earlier ones
        cursor = f"{stored}.{quoted(self._newest_by)}"
        newer = f"({cursor} IS NULL OR {cursor} <= VALUES({quoted(self._newest_by)}))"
        ordered = [c for c in updates if c != self._newest_by] + [self._newest_by]
        return insert + "ON DUPLICATE KEY UPDATE " + ", ".join(
            f"{stored}.{quoted(c)} = IF({newer}, VALUES({quoted(c)}), {stored}.{quoted(c)})"
            for c in ordered)

    def _slice_statement(self, columns: list[str]) -> tuple[str, tuple[Any, ...]] | None:
        if self.primary_key or not self.replace_slice or self.watermark is None \
                or self.watermark.cursor not in columns:
            return None
        column = quoted(self.watermark.cursor)
        window = self.watermark.window
        return (f"DELETE FROM {self.target} WHERE {column} > %s AND {column} <= %s",
                (window.lo, window.hi))

    # -- batches -------------------------------------------------------------------------

    def write(self, batch: pa.RecordBatch, *, final: bool = False) -> int:
        """Upsert one batch in its own transaction; returns the rows inserted or changed.
        ``final``: the partition's last batch, after which the watermark is the window's hi.
        A value the table refuses raises :class:`RefusedRows` naming its row."""
        if not batch.num_rows:  # e.g. a transform kept no row: nothing to load or swap in
            return 0
        batch = self._one_row_per_key(batch)
        try:
            columns = texts(batch)
        except DataError as exc:
            raise MysqlSinkError(f"{self.display}: {exc}") from None
        with open(self._path, "wb") as file:
            file.write(load_file_body(columns))
        changed = self._retrying(f"writing a batch of {batch.num_rows:,} rows",
                                 lambda: self._write_once(batch, columns))
        if self.watermark is not None:
            target, mark = self.watermark, self.watermark.after_batch(batch, final)
            self._retrying("recording the watermark", lambda: record_watermark(
                self._cursor(), self.database, self._written_table, target, mark))
        if self._replace is not None:  # delete ALL: the first batch committed
            self._retrying("swapping in the new table", self._swap_in)
        self._finished = final
        return changed

    @property
    def _written_table(self) -> str:
        return self._replace.replacement if self._replace is not None else self.table_name

    def _write_once(self, batch: pa.RecordBatch, columns: list[ColumnText]) -> int:
        self._ensure_session()
        cur = self._cursor()
        try:
            if self.primary_key:  # before the transaction: TRUNCATE may commit
                cur.execute(f"TRUNCATE TABLE {self.staging}")
            if self._slice_delete is not None:
                cur.execute(*self._slice_delete)
            into = self.staging if self.primary_key else self._write_target
            loaded = self._load(cur, into, batch, columns)
            changed = loaded if not self.primary_key else self._upserted(cur, batch)
            self.conn.commit()
        except BaseException:
            with contextlib.suppress(pymysql.MySQLError, OSError):
                self.conn.rollback()
            raise
        self._slice_delete = None
        self._replace_loaded = self._replace is not None
        return changed

    def _load(self, cur: Cursor, into: str, batch: pa.RecordBatch,
              columns: list[ColumnText]) -> int:
        """Load the batch into ``into``; the rows loaded. Refused values raise RefusedRows."""
        if not self._by_insert:
            try:
                return self._load_data(cur, into, batch, columns)
            except pymysql.MySQLError as exc:
                if exc.args and exc.args[0] in LOCAL_INFILE_REFUSED:
                    self._local_infile_refused(exc)
                    self.conn.rollback()
                    if self._slice_delete is not None:
                        cur.execute(*self._slice_delete)
                else:
                    raise
        return self._insert(cur, into, batch, columns)

    def _load_data(self, cur: Cursor, into: str, batch: pa.RecordBatch,
                   columns: list[ColumnText]) -> int:
        cur.execute(load_data_statement(self._path, into, [quoted(c) for c in self._columns],
                                        columns))
        loaded = cur.rowcount
        if cur._result.warning_count or loaded != batch.num_rows:
            self._refused(cur, batch, loaded)
        return int(loaded)

    def _insert(self, cur: Cursor, into: str, batch: pa.RecordBatch,
                columns: list[ColumnText]) -> int:
        statement = (f"INSERT INTO {into} ({', '.join(quoted(c) for c in self._columns)}) "
                     f"VALUES ").encode()
        start = 0
        for rows, values in insert_tuples(columns):
            try:
                cur.execute(statement + values)
            except pymysql.MySQLError as exc:
                if is_transient(exc):
                    raise
                raise self._refusal(str(exc.args[-1]), batch, offset=start) from None
            start += rows
        return batch.num_rows

    def _local_infile_refused(self, exc: pymysql.MySQLError) -> None:
        if self.local_infile_refused == "fail":
            raise MysqlSinkError(
                f"{self.display}: the server refuses LOAD DATA LOCAL INFILE ({describe(exc)}): "
                f"enable it (SET GLOBAL local_infile = 1) or set local_infile_refused: insert "
                f"to load by multi-row INSERTs") from None
        self.log.warning(f"{self.display}: the server refuses LOAD DATA LOCAL INFILE; loading "
                         f"by multi-row INSERTs (slower); enable local_infile on the server "
                         f"for the fast path")
        self._by_insert = True

    def _upserted(self, cur: Cursor, batch: pa.RecordBatch) -> int:
        """Move the temporary table into the target; the rows inserted or changed."""
        try:
            cur.execute(self._upsert)
        except pymysql.MySQLError as exc:
            if is_transient(exc):
                raise
            raise self._refusal(str(exc.args[-1]), batch, offset=0) from None
        affected = int(cur.rowcount)
        found = _DUPLICATES.search(cur._result.message or b"")
        # An insert counts 1 affected row, a change 2, an unchanged row 0; "Duplicates" in
        # the server's info (MySQL and MariaDB alike) counts the changed rows.
        return affected - int(found.group(1)) if found else affected

    def _refused(self, cur: Cursor, batch: pa.RecordBatch, loaded: int) -> None:
        """Raise for the warnings of a LOAD DATA (LOCAL makes errors warnings)."""
        cur.execute("SHOW WARNINGS LIMIT 10")
        found = [str(message) for level, _code, message in cur.fetchall()
                 if level in ("Warning", "Error")]
        if not found:
            if loaded == batch.num_rows:
                return  # notes only
            found = [f"{loaded:,} of {batch.num_rows:,} rows loaded"]
        raise self._refusal(found[0], batch, offset=0)

    def _refusal(self, message: str, batch: pa.RecordBatch, *, offset: int) -> RefusedRows:
        """The one-line error of a refused value: table, column, row (its key values)."""
        message = message.replace(self.staging, self.target).replace(
            self.staging.strip("`"), self.display)
        at = _AT_ROW.search(message)
        row = offset + int(at.group(1)) - 1 if at else None
        named = _COLUMN.search(message)
        column = next((g for g in named.groups() if g), None) if named else None
        where = f" column {column}" if column else ""
        if row is not None and 0 <= row < batch.num_rows:
            where += f" row {self._row_text(batch, row)}"
        else:
            row = None
        return RefusedRows(f"{self.display}:{where}: {message}", row)

    def _swap_in(self) -> None:
        assert self._replace is not None
        self._replace.swap_in(self._cursor())
        self._replace = None
        self._write_target = self.target
        self._session_ready = False  # the temporary table was made like the replacement
        self._upsert = self._upsert_statement()

    def finish(self) -> None:
        """After the last batch: when the partition had no rows (or its last batch was not
        written with ``final``), clear its slice and advance the watermark to the window's
        hi. With delete ALL and no rows the table stays as it is."""
        if self._replace is not None:
            self.log.info(f"{self.display}: delete all: no rows in this run, table left as is")
            self._retrying("dropping the unused new table",
                           lambda: self._replace.abandon(self._cursor()) if self._replace
                           else None)
            self._replace = None
        if self._finished:
            return
        if self._slice_delete is not None:
            def clear() -> None:
                assert self._slice_delete is not None
                self._cursor().execute(*self._slice_delete)
                self.conn.commit()
            self._retrying("clearing the window's slice", clear)
            self._slice_delete = None
        if self.watermark is not None:
            target = self.watermark
            self._retrying("recording the watermark", lambda: record_watermark(
                self._cursor(), self.database, self.table_name, target, target.window.hi))
        self._finished = True
