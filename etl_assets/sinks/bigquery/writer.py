"""Writes Arrow tables into one BigQuery table by parquet load jobs, in one of four modes.

- ``append``: each chunk is loaded into the table.
- ``replace_partition``: the partition's slice of the source's cursor (``lo < cursor <= hi``)
  is deleted first, then chunks are appended, so a re-run replaces the slice.
- ``replace_table``: chunks are loaded into a staging table that a copy job then swaps in for
  the table's whole content (WRITE_TRUNCATE: readers see the old rows or the new ones).
- ``merge``: each chunk (one row per key) is loaded into a staging table and MERGEd on the
  primary key: matched rows updated, new ones inserted. With ``newest_by`` (``conflict:
  newest``) a matched row is updated only when the new row's cursor is not older (``WHEN
  MATCHED AND``), so partitions merged in any order give the same table.

Staging tables are named for the asset, partition and run, and dropped at the end. Every API
call is retried on transient errors (connection errors, 5xx, 429) by the shared policy
(:mod:`etl_assets.retries`); what still fails raises :class:`BigQueryLoadFailed` for the
caller to keep.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from google.api_core import exceptions as api_errors
from google.api_core.retry import Retry
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_RETRY

from etl_assets.batches import last_row_per_key
from etl_assets.errors import ConfigurationError, EtlAssetsError
from etl_assets.logs import Log
from etl_assets.newest_wins import missing_cursor
from etl_assets.retries import RetryPolicy, describe, is_transient
from etl_assets.secrets import mask_text
from etl_assets.sinks.bigquery.column_types import bigquery_schema, loadable
from etl_assets.sinks.bigquery.spec import WriteMode
from etl_assets.watermark import Bound, Window

T = TypeVar("T")


class BigQuerySinkError(ConfigurationError):
    """A BigQuery sink that cannot run as configured (named in the message)."""


class BigQueryLoadFailed(EtlAssetsError):
    """A call that failed for good; ``reason`` says why, ``transient``: BigQuery could not be
    reached or was overloaded (worth keeping the rows to try later)."""

    def __init__(self, reason: str, transient: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


@dataclass(frozen=True)
class BigQueryTarget:
    """``project.dataset.table`` and where the dataset lives (``location``, e.g. EU)."""

    project: str
    dataset: str
    table: str
    location: str | None = None

    @property
    def table_id(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"

    def staging_id(self, asset: str, partition: str | None, run_id: str) -> str:
        digest = hashlib.sha1(f"{asset}|{partition}|{run_id}".encode()).hexdigest()[:16]
        return f"{self.project}.{self.dataset}._etl_stage_{self.table}_{digest}"


def quoted(name: str) -> str:
    """A BigQuery identifier in backticks."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class BigQueryTableWriter:
    """Loads chunks into ``target`` in mode ``mode`` (see the module docstring)."""

    def __init__(self, client: bigquery.Client, target: BigQueryTarget, mode: WriteMode,
                 primary_key: Sequence[str], *, staging_id: str,
                 slice_column: str | None = None, window: Window | None = None,
                 newest_by: str | None = None, retry: RetryPolicy | None = None,
                 request_timeout_s: float = 300.0, log: Log | None = None) -> None:
        self.client = client
        self.target = target
        self.mode = mode
        self.primary_key = list(primary_key)
        self.staging_id = staging_id
        self.slice_column = slice_column
        self.window = window
        self.newest_by = newest_by if mode == "merge" and newest_by not in primary_key else None
        self.retry = retry or RetryPolicy()
        self.timeout = request_timeout_s
        self.log: Log = log or logging.getLogger(__name__)
        self.columns: list[str] = []
        self._staging_made = False
        self._staged_rows = 0

    # -- table ---------------------------------------------------------------------------

    def prepare(self, schema: pa.Schema) -> list[str]:
        """Create the dataset and table when missing, add new columns (NULLABLE) through
        update_table, and for replace_partition delete the partition's slice; returns the
        actions taken."""
        missing = [k for k in self.primary_key if k not in schema.names]
        if missing and self.mode == "merge":
            raise BigQuerySinkError(f"{self.target.table_id}: primary key column(s) "
                                    f"{', '.join(missing)} not in the data "
                                    f"(columns: {', '.join(schema.names)})")
        if self.newest_by is not None and self.newest_by not in schema.names:
            raise BigQuerySinkError(missing_cursor(self.target.table_id, self.newest_by,
                                                   schema.names))
        if self.mode == "replace_partition" and self.slice_column not in schema.names:
            raise BigQuerySinkError(f"{self.target.table_id}: write mode replace_partition "
                                    f"needs the cursor column {self.slice_column} in the data "
                                    f"(columns: {', '.join(schema.names)})")
        actions: list[str] = []
        self.columns = list(schema.names)
        wanted = bigquery_schema(schema)
        dataset = bigquery.Dataset(f"{self.target.project}.{self.target.dataset}")
        if self.target.location:
            dataset.location = self.target.location
        self._call("create the dataset", lambda: self.client.create_dataset(
            dataset, exists_ok=True, retry=self._retry(), timeout=self.timeout))
        table = self._call("read the table", self._existing_table)
        if table is None:
            self._call("create the table", lambda: self.client.create_table(
                bigquery.Table(self.target.table_id, schema=wanted), exists_ok=True,
                retry=self._retry(), timeout=self.timeout))
            actions.append(f"created {self.target.table_id} "
                           f"({', '.join(f'{f.name} {f.field_type}' for f in wanted)})")
        else:
            have = {f.name for f in table.schema}
            added = [f for f in wanted if f.name not in have]
            if added:
                self._add_columns(added)
                actions.append(f"added column(s) to {self.target.table_id}: "
                               f"{', '.join(f'{f.name} {f.field_type}' for f in added)}")
        if self.mode == "replace_partition":
            assert self.window is not None and self.slice_column is not None
            column = quoted(self.slice_column)
            deleted = self._query(
                f"DELETE FROM {quoted(self.target.table_id)} WHERE {column} > @lo "
                f"AND {column} <= @hi", self._bounds(schema))
            actions.append(f"replace_partition: deleted {deleted or 0} row(s) with "
                           f"{self.slice_column} in {self.window}")
        return actions

    def _add_columns(self, added: list[bigquery.SchemaField]) -> None:
        """Add NULLABLE columns: DDL first, then update_table for what the table's schema does
        not show yet. BigQuery applies either; emulators (bqemulator) apply the DDL to the
        stored rows and update_table only to the schema they report."""
        for column in added:  # one a statement: bqemulator takes one ADD COLUMN an ALTER
            self._query(f"ALTER TABLE {quoted(self.target.table_id)} ADD COLUMN IF NOT EXISTS "
                        f"{quoted(column.name)} {column.field_type}")
        table = self._call("read the table", self._existing_table)
        assert table is not None
        have = {f.name for f in table.schema}
        missing = [f for f in added if f.name not in have]
        if missing:
            table.schema = [*table.schema, *missing]
            self._call("add columns", lambda: self.client.update_table(
                table, ["schema"], retry=self._retry(), timeout=self.timeout))

    def _existing_table(self) -> bigquery.Table | None:
        try:
            return self.client.get_table(self.target.table_id, retry=self._retry(),
                                         timeout=self.timeout)
        except api_errors.NotFound:
            return None

    def _bounds(self, schema: pa.Schema) -> list[bigquery.ScalarQueryParameter]:
        assert self.window is not None and self.slice_column is not None
        field = schema.field(self.slice_column)  # prepare() checked it is in the data
        naive = pa.types.is_timestamp(field.type) and not field.type.tz
        return window_parameters(self.window, "DATETIME" if naive else "TIMESTAMP")

    # -- chunks --------------------------------------------------------------------------

    def load(self, chunk: pa.Table) -> int:
        """Load one chunk in this writer's mode; returns its rows. Raises
        :class:`BigQueryLoadFailed` when it still fails after the retries."""
        if chunk.num_rows == 0:
            return 0
        chunk = chunk.select(self.columns)
        if self.mode == "merge":
            chunk = pa.Table.from_batches([last_row_per_key(b, self.primary_key, self.newest_by)
                                           for b in chunk.combine_chunks().to_batches()])
        try:
            data = parquet_bytes(loadable(chunk))
        except (ValueError, pa.ArrowInvalid) as exc:
            raise BigQueryLoadFailed(f"{self.target.table_id}: {mask_text(str(exc))}") from None
        if self.mode in ("append", "replace_partition"):
            self._load_file(data, self.target.table_id, "WRITE_APPEND")
        elif self.mode == "replace_table":
            self._ensure_staging()
            self._load_file(data, self.staging_id, "WRITE_APPEND")
            self._staged_rows += chunk.num_rows
        else:
            self._ensure_staging()
            self._load_file(data, self.staging_id, "WRITE_TRUNCATE")
            self._query(self._merge_statement())
        return chunk.num_rows

    def finish(self) -> str | None:
        """replace_table: swap the staged rows in (a run without rows leaves the table as
        it is). Drops the staging table. Returns what was done, if anything."""
        done = None
        if self.mode == "replace_table" and self._staged_rows:
            self._call("swap in the new rows", lambda: self.client.copy_table(
                self.staging_id, self.target.table_id, job_config=bigquery.CopyJobConfig(
                    write_disposition="WRITE_TRUNCATE"), retry=self._retry(),
                timeout=self.timeout).result(retry=self._retry(), timeout=self.timeout))
            done = f"replace_table: {self._staged_rows:,} row(s) swapped in"
        elif self.mode == "replace_table":
            done = "replace_table: no rows in this run, table left as it is"
        self.drop_staging()
        return done

    def drop_staging(self) -> None:
        if self._staging_made:
            self.client.delete_table(self.staging_id, not_found_ok=True, retry=self._retry(),
                                     timeout=self.timeout)
            self._staging_made = False

    def _ensure_staging(self) -> None:
        if self._staging_made:
            return
        target = self._call("read the table", self._existing_table)
        assert target is not None
        wanted = [f for f in target.schema if f.name in self.columns]
        staging = bigquery.Table(self.staging_id, schema=[
            bigquery.SchemaField(f.name, f.field_type, mode="NULLABLE") for f in wanted])
        self._call("create the staging table", lambda: self.client.create_table(
            staging, exists_ok=True, retry=self._retry(), timeout=self.timeout))
        self._staging_made = True

    def _merge_statement(self) -> str:
        on = " AND ".join(f"T.{quoted(k)} = S.{quoted(k)}" for k in self.primary_key)
        updates = [c for c in self.columns if c not in self.primary_key]
        names = ", ".join(quoted(c) for c in self.columns)
        values = ", ".join(f"S.{quoted(c)}" for c in self.columns)
        # newest wins: a stored row is replaced only by one whose cursor is not older (a
        # stored NULL is the oldest).
        newest = (f" AND (T.{quoted(self.newest_by)} IS NULL OR T.{quoted(self.newest_by)} <= "
                  f"S.{quoted(self.newest_by)})" if self.newest_by else "")
        update = (f" WHEN MATCHED{newest} THEN UPDATE SET "
                  f"{', '.join(f'{quoted(c)} = S.{quoted(c)}' for c in updates)}"
                  if updates else "")
        return (f"MERGE {quoted(self.target.table_id)} T USING {quoted(self.staging_id)} S "
                f"ON {on}{update} WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values})")

    # -- calls ---------------------------------------------------------------------------

    def _load_file(self, data: bytes, table_id: str, disposition: str) -> None:
        config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET,
                                        write_disposition=disposition)

        def load() -> None:
            # size=None makes the client use a resumable upload (emulators refuse multipart).
            job = self.client.load_table_from_file(
                io.BytesIO(data), table_id, job_config=config, num_retries=0,
                timeout=self.timeout)
            job.result(retry=self._retry(), timeout=self.timeout)

        self._call(f"load {len(data):,} bytes into {table_id}", load)

    def _query(self, statement: str,
               parameters: list[bigquery.ScalarQueryParameter] | None = None) -> int | None:
        config = bigquery.QueryJobConfig(query_parameters=parameters or [])

        def run() -> int | None:
            job = self.client.query(statement, job_config=config, retry=self._retry(),
                                    job_retry=None, timeout=self.timeout)
            job.result(retry=self._retry(), timeout=self.timeout)
            return job.num_dml_affected_rows

        return self._call(statement.split(" ", 1)[0], run)

    def _retry(self) -> Retry:
        return DEFAULT_RETRY.with_deadline(self.timeout)

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """``call()`` under the retry policy (transient errors: connection errors, 5xx, 429);
        raises BigQueryLoadFailed naming the table with the last error."""
        try:
            return self.retry.call(call, what=f"{self.target.table_id}: {what}", log=self.log)
        except Exception as exc:  # sorted here: the caller keeps the rows of transient ones
            reason = f"{self.target.table_id}: {what} failed: {_short(exc)}"
            if not is_transient(exc):
                raise BigQueryLoadFailed(reason) from exc
            raise BigQueryLoadFailed(f"{reason} (after {self.retry.retries + 1} attempts)",
                                     transient=True) from exc


def window_parameters(window: Window, column_type: str) -> list[bigquery.ScalarQueryParameter]:
    """``@lo`` and ``@hi`` of ``window`` for a cursor column of BigQuery type
    ``column_type``: an integer window as INT64; a timestamp window as DATETIME for a
    DATETIME column (wall time, the zone dropped), else as TIMESTAMP."""
    if isinstance(window.lo, int):
        kind = "INT64"
    else:
        kind = "DATETIME" if column_type == "DATETIME" else "TIMESTAMP"

    def value(bound: Bound) -> Bound:
        if kind == "DATETIME" and isinstance(bound, datetime):
            return bound.replace(tzinfo=None)
        return bound

    return [bigquery.ScalarQueryParameter("lo", kind, value(window.lo)),
            bigquery.ScalarQueryParameter("hi", kind, value(window.hi))]


def parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as a parquet file a load job takes."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue()


def _short(error: BaseException) -> str:
    text = getattr(error, "message", None)
    return mask_text(" ".join(str(text).split()))[:500] if text else describe(error)
