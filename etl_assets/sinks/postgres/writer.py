"""The PostgreSQL upsert writer: COPY each batch into a staging table, then upsert.

Per batch, in one transaction: in-batch duplicate keys are resolved (last row wins), the
batch is written by COPY (CSV made by pyarrow) into a temporary table named for the partition
and run, and ``INSERT .. ON CONFLICT (primary key) DO UPDATE`` moves it into the target,
leaving unchanged rows untouched; the table's high watermark (its COMMENT) advances in the same
transaction. Re-running a partition therefore gives the same table.

A table without a primary key is appended to by COPY; when the partition's column (the
source's cursor) is in the data, the partition's slice ``lo < column <= hi`` is deleted in the
first batch's transaction, so a re-run replaces the slice instead of duplicating it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Sequence
from typing import Any, TypeVar

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from psycopg import sql

from etl_assets.batches import with_last
from etl_assets.logs import Log
from etl_assets.retries import RetryPolicy, describe, is_transient
from etl_assets.secrets import mask_url
from etl_assets.settings import Conflict
from etl_assets.sinks.postgres.column_types import csv_ready, postgres_type
from etl_assets.sinks.postgres.declared import (
    resolve_declared_table,
)
from etl_assets.sinks.postgres.delete_all import (
    ReplaceAll,
    drop_stale_replacements,
)
from etl_assets.sinks.postgres.errors import PostgresSinkError
from etl_assets.sinks.postgres.migrations import migrate
from etl_assets.sinks.postgres.spec import DeleteMode
from etl_assets.sinks.postgres.table import ColumnDef, TableDef, existing_table
from etl_assets.sinks.postgres.watermark import WatermarkTarget, record_watermark
from etl_assets.sinks.table_writer import SqlTableWriter, staging_table_name
from etl_assets.table_names import TableName

__all__ = ["PostgresSinkError", "PostgresUpsertWriter", "staging_table_name", "with_last"]

T = TypeVar("T")

# Types without an equality operator: compared as text when skipping unchanged rows.
_NO_EQUALITY = {"json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle"}


class PostgresUpsertWriter(SqlTableWriter):
    """Writes record batches into one PostgreSQL table by COPY + upsert, a batch a transaction."""

    error = PostgresSinkError

    def __init__(self, conninfo: str, table: str | TableName, primary_key: Sequence[str],
                 staging_name: str, *, watermark: WatermarkTarget | None = None,
                 replace_slice: bool = True, declared_table: sa.Table | None = None,
                 declared_reference: str = "", delete: DeleteMode = "off", log: Log | None = None,
                 terminate_blockers_after_s: float | None = None, conflict: Conflict = "newest",
                 cursor_column: str | None = None, retry: RetryPolicy | None = None) -> None:
        self.conninfo = conninfo
        name = (table if isinstance(table, TableName) else TableName.parse(table)
                ).in_schema("public")
        assert name.schema is not None
        self.schema_name, self.table_name = name.schema, name.name
        self.display = name.display
        self.target = sql.Identifier(self.schema_name, self.table_name)
        self.primary_key = list(primary_key)
        self.staging = sql.Identifier(staging_name)
        self.conn: psycopg.Connection[Any] | None = None
        self._columns: list[str] = []
        self._upsert: sql.Composed | None = None
        # Without a primary key: the partition's slice to delete before the first batch.
        self.watermark = watermark
        self.declared_table = declared_table
        self.declared_reference = declared_reference or (
            declared_table.fullname if declared_table is not None else "")
        self.replace_slice = replace_slice
        self._slice_delete: sql.Composed | None = None
        self._finished = False
        # migrations (migrations.py) and delete mode ALL (delete_all.py).
        self.delete = delete
        self.log: Log = log or logging.getLogger(__name__)
        self.terminate_blockers_after_s = terminate_blockers_after_s
        self._replace: ReplaceAll | None = None
        self._replace_loaded = False  # a batch has committed into the replacement
        self._write_target = self.target  # the replacement table until it is swapped in
        self.conflict = conflict
        # The column newest-wins compares: the given one, else the watermark's (the cursor).
        self.cursor_column = cursor_column or (watermark.cursor if watermark else None)
        self._newest_by: str | None = None  # set by prepare() when the rule applies
        self.retry = retry or RetryPolicy(retries=0)
        self._session_ready = False  # the temporary staging table exists on this connection
        # COPY straight into the target, no temporary table and INSERT .. SELECT: without a
        # key always; with one while no batch has met a key the table holds (set by prepare)
        self._copy_directly = False

    def __enter__(self) -> PostgresUpsertWriter:
        self._retrying(f"connecting to {mask_url(self.conninfo)}", self._connect,
                       reconnect=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._replace is not None:
            with contextlib.suppress(psycopg.Error):
                self._replace.abandon()  # a run that failed before the swap
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _connect(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
        self.conn = None
        self._session_ready = False
        try:
            self.conn = psycopg.connect(self.conninfo, application_name="etl_assets",
                                        connect_timeout=30)
        except psycopg.OperationalError as exc:
            if is_transient(exc):
                raise
            raise PostgresSinkError(f"{self.display}: cannot connect to "
                                    f"{mask_url(self.conninfo)}: {describe(exc)}") from None
        if self._replace is not None and not self._replace.hold(self.conn):
            # another run took the replacement for a dead run's and dropped it meanwhile
            if self._replace_loaded:
                raise PostgresSinkError(
                    f"{self.display}: delete all: {self._replace.swap.new_name}, loaded by "
                    f"this run, was dropped by another run while this run's connection was "
                    f"lost; run the partition again")
            self._replace.start()

    # -- table ---------------------------------------------------------------------------

    def prepare(self, schema: pa.Schema) -> list[str]:
        """Create or migrate the target table (``migrate``: columns added in place, a declared
        type, nullability or key change rebuilt beside it and swapped in; without a declared
        table the existing columns' types win), and with delete mode ALL build the replacement
        the first batch loads into; returns actions taken. Retried on transient errors."""
        def attempt() -> list[str]:
            if self._replace is not None:  # an attempt that failed after building it
                self._replace.abandon()
                self._replace = None
                self._write_target = self.target
            return self._prepare(schema)

        return self._retrying("preparing the table", attempt)

    def _prepare(self, schema: pa.Schema) -> list[str]:
        assert self.conn is not None
        if not schema.names:
            return self._prepare_without_columns()
        desired = self._desired_columns(schema)
        self._check_key_columns(schema)
        drop_stale_replacements(self.conn, self.schema_name, self.table_name, log=self.log)
        actions = migrate(self.conn, self._desired_table(desired), log=self.log,
                          terminate_blockers_after_s=self.terminate_blockers_after_s)
        with self.conn.transaction():
            # Serialise DDL on this table across concurrent runs.
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.display,))
            existing = self._existing_columns()
            assert existing is not None
            if self.primary_key:
                self._check_key()
            self._columns = list(schema.names)
            self._newest_by = self._newest_column(schema)
            if self.delete == "all":
                self._replace = ReplaceAll(self.conn, self.schema_name, self.table_name,
                                           log=self.log, terminate_blockers_after_s=(
                                               self.terminate_blockers_after_s))
        if self._replace is not None:
            actions.append(self._replace.start())
            self._write_target = self._replace.replacement
        with self.conn.transaction():
            self._upsert = self._upsert_statement(existing)
            self._copy_directly = self._replace is None and (
                not self.primary_key or self._target_is_empty())
            self._slice_delete = None if self._replace else self._slice_statement(schema.names)
            if not self.primary_key:
                actions.append(self._append_mode_note())
            self._ensure_session()
        return actions

    def _table_column_names(self) -> list[str] | None:
        assert self.conn is not None
        with self.conn.transaction():
            existing = self._existing_columns()
        return None if existing is None else list(existing)

    def _target_is_empty(self) -> bool:
        assert self.conn is not None
        row = self.conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT FROM {})").format(
            self.target)).fetchone()
        return bool(row and row[0])

    def _ensure_session(self) -> None:
        """The connection's temporary staging table (gone with a lost connection)."""
        assert self.conn is not None
        if self._session_ready:
            return
        with self.conn.transaction():
            self.conn.execute(sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS "
                "SELECT {} FROM {} WITH NO DATA").format(
                    self.staging, sql.SQL(", ").join(map(sql.Identifier, self._columns)),
                    self.target))
        self._session_ready = True

    def _desired_columns(self, schema: pa.Schema) -> tuple[ColumnDef, ...]:
        """The target's columns: the declared table's (its primary key wins), else derived
        from the data's Arrow types."""
        assert self.conn is not None
        if self.declared_table is None:
            return tuple(ColumnDef(f.name, postgres_type(f), f.name not in self.primary_key)
                         for f in schema)
        try:
            declared = resolve_declared_table(self.conn, self.declared_table,
                                              self.declared_reference)
        except ValueError as exc:
            raise PostgresSinkError(f"{self.display}: declared table {exc}") from None
        undeclared = [n for n in schema.names if declared.column(n) is None]
        if undeclared:
            raise PostgresSinkError(
                f"{self.display}: column(s) {', '.join(undeclared)} of the data are not in the "
                f"declared table {declared.reference} (declared: "
                f"{', '.join(c.name for c in declared.columns)}); add them there or drop them "
                f"in the sink's transform")
        self.primary_key = list(declared.primary_key)
        return declared.columns

    def _desired_table(self, desired: tuple[ColumnDef, ...]) -> TableDef:
        """What ``migrate`` brings the table to. A declared table: its columns, types and key.
        Derived from the data: the existing columns as they are (COPY casts to their types),
        new columns nullable, the existing key kept."""
        assert self.conn is not None
        columns = desired
        key = tuple(self.primary_key)
        if self.declared_table is None:
            with self.conn.transaction():
                live = existing_table(self.conn, self.schema_name, self.table_name)
            if live is not None:
                columns = tuple(live.column(c.name) or ColumnDef(c.name, c.type)
                                for c in columns)
                key = ()
        return TableDef(self.schema_name, self.table_name, columns, key)

    def _existing_columns(self) -> dict[str, str] | None:
        assert self.conn is not None
        regclass = self.conn.execute("SELECT to_regclass(%s)", (self._qualified(),)).fetchone()
        if regclass is None or regclass[0] is None:
            return None
        rows = self.conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (self._qualified(),)).fetchall()
        return dict(rows)

    def _qualified(self) -> str:
        assert self.conn is not None
        return self.target.as_string(self.conn)

    def _check_key(self) -> None:
        assert self.conn is not None
        found = self.conn.execute(
            """SELECT 1 FROM pg_index i WHERE i.indrelid = %s::regclass AND i.indisunique
               AND i.indpred IS NULL AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                   FROM pg_attribute a WHERE a.attrelid = i.indrelid
                   AND a.attnum = ANY(i.indkey)) = %s::text[]""",
            (self._qualified(), sorted(self.primary_key))).fetchone()
        if not found:
            raise PostgresSinkError(
                f"{self.display}: the table has no primary key or unique index on exactly "
                f"({', '.join(self.primary_key)}), which an upsert needs")

    def _slice_statement(self, columns: list[str]) -> sql.Composed | None:
        if self.primary_key or not self.replace_slice or self.watermark is None \
                or self.watermark.cursor not in columns:
            return None
        window = self.watermark.window
        return sql.SQL("DELETE FROM {} WHERE {} > {} AND {} <= {}").format(
            self.target, sql.Identifier(self.watermark.cursor), sql.Literal(window.lo),
            sql.Identifier(self.watermark.cursor), sql.Literal(window.hi))

    def _upsert_statement(self, target_types: dict[str, str]) -> sql.Composed:
        cols = sql.SQL(", ").join(map(sql.Identifier, self._columns))
        if not self.primary_key:
            return sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                self._write_target, cols, cols, self.staging)
        insert = sql.SQL("INSERT INTO {} AS t ({}) SELECT {} FROM {} ON CONFLICT ({}) ").format(
            self._write_target, cols, cols, self.staging,
            sql.SQL(", ").join(map(sql.Identifier, self.primary_key)))
        updates = [c for c in self._columns if c not in self.primary_key]
        if not updates:
            return insert + sql.SQL("DO NOTHING")

        def compared(prefix: str, column: str) -> sql.Composable:
            ref = sql.SQL("{}.{}").format(sql.SQL(prefix), sql.Identifier(column))
            base_type = re.sub(r"\(.*\)|\[\]", "", target_types.get(column, "")).strip()
            return sql.SQL("{}::text").format(ref) if base_type in _NO_EQUALITY else ref

        # newest wins: a stored row is replaced only by one whose cursor is not older (a
        # stored NULL is the oldest), so partitions give the same table in any order.
        newest: sql.Composable = sql.SQL("")
        if self._newest_by is not None:
            newest = sql.SQL("(t.{0} IS NULL OR t.{0} <= EXCLUDED.{0}) AND ").format(
                sql.Identifier(self._newest_by))
        return insert + sql.SQL("DO UPDATE SET {} WHERE {}({}) IS DISTINCT FROM ({})").format(
            sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c),
                                                                  sql.Identifier(c))
                               for c in updates),
            newest,
            sql.SQL(", ").join(compared("t", c) for c in updates),
            sql.SQL(", ").join(compared("EXCLUDED", c) for c in updates))

    # -- batches -------------------------------------------------------------------------

    def write(self, batch: pa.RecordBatch, *, final: bool = False) -> int:
        """Upsert one batch in its own transaction; returns the rows inserted or changed.
        ``final``: the partition's last batch, after which the watermark is the window's hi.
        A transient error rolls the batch back and it is written again on a new connection
        (the upsert and the watermark make that exactly-once)."""
        assert self._upsert is not None
        if not batch.num_rows:  # e.g. a transform kept no row: nothing to load or swap in
            return 0
        batch = self._one_row_per_key(batch)
        data = self._csv(batch)
        changed = self._retrying(f"writing a batch of {batch.num_rows:,} rows",
                                 lambda: self._write_once(batch, data, final))
        if self._replace is not None:  # delete ALL, the first batch committed
            self._retrying("swapping in the new table", self._swap_in)
        return changed

    def _write_once(self, batch: pa.RecordBatch, data: bytes, final: bool) -> int:
        assert self.conn is not None and self._upsert is not None
        self._ensure_session()
        with self.conn.transaction(), self.conn.cursor() as cur:
            self._before_first_batch(cur)
            changed = self._copied_directly(cur, batch, data)
            if changed is None:
                self._copy(cur, self.staging, batch, data)
                try:
                    cur.execute(self._upsert)
                except psycopg.Error as exc:
                    if is_transient(exc):
                        raise
                    raise PostgresSinkError(self._describe_insert(exc)) from None
                changed = cur.rowcount
            if self.watermark is not None:
                record_watermark(self.conn, self._write_target, self.watermark,
                                 self.watermark.after_batch(batch, final))
        self._slice_delete = None  # committed: the slice stays deleted
        self._finished = final
        self._replace_loaded = self._replace is not None
        return changed

    def _copied_directly(self, cur: psycopg.Cursor[Any], batch: pa.RecordBatch,
                         data: bytes) -> int | None:
        """The rows COPYed straight into the target, or None when the batch must be upserted
        from the temporary table. A batch holding a key the table already has (another
        partition's run got there first) is rolled back to a savepoint and upserted, and so
        are the partition's later batches: the upsert's newest-wins rule decides."""
        if not self._copy_directly:
            return None
        assert self.conn is not None
        if not self.primary_key:
            self._copy(cur, self._write_target, batch, data)
            return cur.rowcount
        try:
            with self.conn.transaction():  # a savepoint
                self._copy(cur, self._write_target, batch, data, meets_stored_keys=True)
        except psycopg.errors.UniqueViolation:
            self._copy_directly = False
            self.log.info(f"{self.display}: a key of this partition is in the table already; "
                          f"upserting from here on")
            return None
        return cur.rowcount

    def _copy(self, cur: psycopg.Cursor[Any], into: sql.Composable, batch: pa.RecordBatch,
              data: bytes, *, meets_stored_keys: bool = False) -> None:
        """COPY ``data`` (``batch`` as CSV) into ``into``; a value the table refuses fails
        naming the row. ``meets_stored_keys``: a unique violation (a key the table holds) is
        left to the caller, which upserts the batch instead."""
        try:
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
                    into, sql.SQL(", ").join(map(sql.Identifier, self._columns)))) as copy:
                copy.write(data)
        except psycopg.Error as exc:
            if is_transient(exc) or (meets_stored_keys
                                     and isinstance(exc, psycopg.errors.UniqueViolation)):
                raise
            raise PostgresSinkError(self._describe(exc, batch)) from None

    def _swap_in(self) -> None:
        assert self.conn is not None and self._replace is not None
        self._replace.swap_in()
        self._replace = None
        self._write_target = self.target
        with self.conn.transaction():
            self._upsert = self._upsert_statement(self._existing_columns() or {})

    def finish(self) -> None:
        """After the last batch: when the partition had no rows (or its last batch was not
        written with ``final``), clear its slice and advance the watermark to the window's hi."""
        if self._replace is not None:  # delete ALL without rows: table as it is
            self.log.info(f"{self.display}: delete all: no rows in this run, table left as is")
            self._retrying("dropping the unused new table", self._replace.abandon)
            self._replace = None
        if self._finished:
            return
        self._retrying("recording the watermark", self._finish_once)
        self._finished = True

    def _finish_once(self) -> None:
        assert self.conn is not None
        with self.conn.transaction(), self.conn.cursor() as cur:
            self._before_first_batch(cur)
            if self.watermark is not None:
                record_watermark(self.conn, self.target, self.watermark, self.watermark.window.hi)
        self._slice_delete = None

    def _before_first_batch(self, cur: psycopg.Cursor[Any]) -> None:
        """The partition's slice delete (no primary key), in the first batch's transaction;
        it is done once that commits."""
        if self._slice_delete is not None:
            cur.execute(self._slice_delete)

    def _describe_insert(self, exc: psycopg.Error) -> str:
        """A failed INSERT from staging: a constraint of the target (NOT NULL, CHECK...)."""
        diag = exc.diag
        column = f": column {diag.column_name}" if diag.column_name else ""
        detail = f" ({diag.message_detail})" if diag.message_detail else ""
        return f"{self.display}{column}: {diag.message_primary or exc}{detail}"

    def _csv(self, batch: pa.RecordBatch) -> bytes:
        arrays = [csv_ready(batch.column(i), batch.schema.field(i))
                  for i in range(batch.num_columns)]
        ready = pa.Table.from_arrays(arrays, names=batch.schema.names)
        sink = io.BytesIO()
        pacsv.write_csv(ready, sink, pacsv.WriteOptions(include_header=False,
                                                         quoting_style="all_valid"))
        return sink.getvalue()

    def _describe(self, exc: psycopg.Error, batch: pa.RecordBatch) -> str:
        message = exc.diag.message_primary or str(exc)
        context = exc.diag.context or ""
        match = re.search(r"line (\d+)(?:, column (\w+))?", context)
        if not match:
            return f"{self.display}: COPY failed: {message}"
        row = int(match.group(1)) - 1
        column = f" column {match.group(2)}" if match.group(2) else ""
        where = (self._row_text(batch, row) if 0 <= row < batch.num_rows
                 else f"row {row}")
        return f"{self.display}:{column} row {where}: {message}"
