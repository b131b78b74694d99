"""What the SQL table writers (PostgreSQL, MySQL) share: the retry of a batch on a new
connection, the newest-wins column, the note of a table without a key, how an error shows a
row (its key values, else the whole row), and the name of a run's temporary table."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.batches import last_row_per_key
from etl_assets.errors import EtlAssetsError
from etl_assets.logs import Log
from etl_assets.newest_wins import missing_cursor
from etl_assets.retries import RetryPolicy, describe, is_transient
from etl_assets.settings import Conflict
from etl_assets.sinks.comment_watermark import WatermarkTarget

T = TypeVar("T")


class SqlTableWriter:
    """The part of a SQL table writer that does not depend on the database. A subclass sets
    the attributes below and ``error`` (its terminal error) and implements ``_connect``."""

    error: ClassVar[type[EtlAssetsError]] = EtlAssetsError
    display: str
    primary_key: list[str]
    retry: RetryPolicy
    log: Log
    conflict: Conflict
    cursor_column: str | None
    watermark: WatermarkTarget | None
    _slice_delete: Any
    _finished: bool
    _columns: list[str]
    _newest_by: str | None

    def _connect(self) -> None:
        """(Re)open the connection and what lives in its session."""
        raise NotImplementedError

    def _table_column_names(self) -> list[str] | None:
        """The target's column names now (None: no table yet), read in its own transaction."""
        raise NotImplementedError

    def _slice_statement(self, columns: list[str]) -> object:
        """The statement deleting the partition's slice of a keyless table, or None."""
        raise NotImplementedError

    def _prepare_without_columns(self) -> list[str]:
        """A partition without rows whose source could not tell its columns (a query or a
        function that gave nothing): the table is neither created nor changed; when it
        exists, ``finish`` clears the window's slice (no key) and advances the watermark over
        the window, as for any window without rows."""
        names = self._table_column_names()
        if names is None:
            self._finished = True  # no table: no slice to clear, no watermark to keep
            return ["no rows and no columns in this partition: the table is not created"]
        self._slice_delete = self._slice_statement(names)
        return []

    def _check_key_columns(self, schema: pa.Schema) -> None:
        """Refuse data that lacks a primary key column, naming it and the data's columns."""
        missing = [k for k in self.primary_key if k not in schema.names]
        if missing:
            raise self.error(f"{self.display}: primary key column(s) {', '.join(missing)} "
                             f"not in the data (columns: {', '.join(schema.names)})")

    def _retrying(self, what: str, attempt: Callable[[], T], *, reconnect: bool = True) -> T:
        """``attempt()`` under the retry policy: after a transient error (connection lost,
        server restarting, deadlock...) it runs again on a new connection, in a new
        transaction; when the retries are spent, one error names the table and the cause."""
        try:
            return self.retry.call(attempt, what=f"{self.display}: {what}", log=self.log,
                                   before_retry=(lambda _: self._connect()) if reconnect
                                   else None)
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise self.error(f"{self.display}: {what} failed after {self.retry.retries + 1} "
                             f"attempt(s): {describe(exc)}") from None

    def _newest_column(self, schema: pa.Schema) -> str | None:
        """The column the newest-wins rule compares, when it applies: a keyed table whose key
        does not hold the cursor, under ``conflict: newest``."""
        if self.conflict != "newest" or not self.primary_key or self.cursor_column is None \
                or self.cursor_column in self.primary_key:
            return None
        if self.cursor_column not in schema.names:
            raise self.error(missing_cursor(self.display, self.cursor_column, schema.names))
        return self.cursor_column

    def _append_mode_note(self) -> str:
        if self._slice_delete is not None:
            assert self.watermark is not None
            return (f"no primary key: replacing the slice {self.watermark.cursor} in "
                    f"{self.watermark.window} of {self.display}")
        return (f"no primary key and no partition column in the data: appending to "
                f"{self.display}; a re-run of this partition adds its rows again")

    def _one_row_per_key(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """``batch``'s columns the table is written, one row a key (the newest); a NULL key
        is refused."""
        batch = batch.select(self._columns)
        if not self.primary_key:
            return batch
        self._check_keys_present(batch)
        return last_row_per_key(batch, self.primary_key, self._newest_by)

    def _check_keys_present(self, batch: pa.RecordBatch) -> None:
        """Refuse a batch with a NULL in a key column, naming the first such row."""
        for key in self.primary_key:
            column = batch.column(key)
            if column.null_count:
                row = pc.index(pc.is_null(column), True).as_py()
                raise self.error(f"{self.display}: primary key column {key} is NULL in batch "
                                 f"row {row}: {self._row_text(batch, row)}")

    def _row_text(self, batch: pa.RecordBatch, row: int) -> str:
        """Row ``row`` of ``batch`` for an error: ``k=v`` of its key, or of every column when
        it has no (complete) key."""
        values = batch.slice(row, 1).to_pylist()[0]
        shown = {k: values[k] for k in self.primary_key} if self.primary_key and all(
            values.get(k) is not None for k in self.primary_key) else values
        return ", ".join(f"{k}={v!r}" for k, v in shown.items())


def staging_table_name(asset: str, partition: str | None, run_id: str) -> str:
    """A temporary table name unique to one asset, partition and run (26 characters)."""
    digest = hashlib.sha1(f"{asset}|{partition}|{run_id}".encode()).hexdigest()[:16]
    return f"etl_stage_{digest}"
