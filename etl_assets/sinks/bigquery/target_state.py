"""What a BigQuery sink's table holds, for asset metadata and the asset checks: its schema and
row count (the table's own, one ``get_table``), and a window's rows (queries).

Every call goes through the sink's retry policy (:mod:`etl_assets.retries`) and raises what
still fails.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
from google.api_core import exceptions as api_errors
from google.api_core.retry import Retry
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_RETRY

from etl_assets.logs import Log
from etl_assets.retries import RetryPolicy
from etl_assets.sinks.base import WindowCount
from etl_assets.sinks.bigquery.column_types import loadable
from etl_assets.sinks.bigquery.writer import (
    BigQuerySinkError,
    BigQueryTarget,
    parquet_bytes,
    quoted,
    window_parameters,
)
from etl_assets.sinks.column_schema import TargetColumn
from etl_assets.watermark import Window

# A keys table a crashed check leaves behind expires by itself.
_KEYS_EXPIRE_AFTER = timedelta(hours=1)


class TableReader:
    """Reads ``target`` through ``client``: each call retried by ``retry``, each API call
    bounded by ``timeout_s`` seconds."""

    def __init__(self, client: bigquery.Client, target: BigQueryTarget, retry: RetryPolicy,
                 timeout_s: float, log: Log | None = None) -> None:
        self.client = client
        self.target = target
        self.retry = retry
        self.timeout = timeout_s
        self.log = log

    def _api_retry(self) -> Retry:
        return DEFAULT_RETRY.with_deadline(self.timeout)

    def table(self) -> bigquery.Table | None:
        """The table, or None when it does not exist."""
        def get() -> bigquery.Table | None:
            try:
                return self.client.get_table(self.target.table_id, retry=self._api_retry(),
                                             timeout=self.timeout)
            except api_errors.NotFound:
                return None

        return self.retry.call(get, what=f"{self.target.table_id}: read the table",
                               log=self.log)

    def query(self, statement: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """The rows of a query, as ``bigquery.Row`` tuples."""
        config = bigquery.QueryJobConfig(query_parameters=list(parameters))

        def run() -> list[Any]:
            job = self.client.query(statement, job_config=config, retry=self._api_retry(),
                                    job_retry=None, timeout=self.timeout)
            return list(job.result(retry=self._api_retry(), timeout=self.timeout))

        return self.retry.call(run, what=f"{self.target.table_id}: query", log=self.log)

    def count_window(self, cursor: str, key: Sequence[str], window: Window,
                     keys: pa.Table | None) -> WindowCount:
        """What the table holds of ``window`` (see ``WindowCount``): of ``keys``, how many
        distinct ones it holds with a cursor in the window and past ``hi`` (the keys are
        loaded into a table of their own, a load job, expiring within the hour should the
        drop fail, joined and dropped); without ``keys``, its rows with ``lo < cursor <= hi``
        (distinct ``key`` values when ``key`` is given: an append table may hold a key
        twice)."""
        table = self.table()
        if table is None:
            return WindowCount(rows=0)
        types = {f.name: f.field_type for f in table.schema}
        missing = [c for c in [cursor, *key] if c not in types]
        if missing:
            raise BigQuerySinkError(f"{self.target.table_id}: no column(s) {', '.join(missing)}"
                                    f" (columns: {', '.join(types)}); cannot count a window")
        parameters = window_parameters(window, types[cursor])
        column = quoted(cursor)
        where = f"{column} > @lo AND {column} <= @hi"
        names = ", ".join(quoted(k) for k in key)
        inside = (f"SELECT COUNT(*) FROM (SELECT DISTINCT {names} FROM "
                  f"{quoted(self.target.table_id)} WHERE {where})" if key else
                  f"SELECT COUNT(*) FROM {quoted(self.target.table_id)} WHERE {where}")
        if key and keys is not None:  # only the keys given (see WindowCount)
            return self._count_keys(table, cursor, list(key), keys, parameters)
        ((rows,),) = self.query(inside, parameters)
        return WindowCount(rows=int(rows))

    def _count_keys(self, table: bigquery.Table, cursor: str, key: list[str], keys: pa.Table,
                    parameters: list[bigquery.ScalarQueryParameter]) -> WindowCount:
        if not keys.num_rows:
            return WindowCount(rows=0)
        digest = hashlib.sha1(f"{self.target.table_id}|{uuid.uuid4()}".encode()).hexdigest()
        keys_id = f"{self.target.project}.{self.target.dataset}._etl_keys_{self.target.table}" \
                  f"_{digest[:16]}"
        fields = {f.name: f for f in table.schema}
        made = bigquery.Table(keys_id, schema=[
            bigquery.SchemaField(k, fields[k].field_type, mode="NULLABLE") for k in key])
        made.expires = datetime.now(timezone.utc) + _KEYS_EXPIRE_AFTER
        distinct = keys.select(key).group_by(key, use_threads=False).aggregate([])
        data = parquet_bytes(loadable(distinct))
        config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET,
                                        write_disposition="WRITE_TRUNCATE")

        def load() -> None:
            self.client.create_table(made, exists_ok=True, retry=self._api_retry(),
                                     timeout=self.timeout)
            job = self.client.load_table_from_file(io.BytesIO(data), keys_id, job_config=config,
                                                   num_retries=0, timeout=self.timeout)
            job.result(retry=self._api_retry(), timeout=self.timeout)

        try:
            self.retry.call(load, what=f"{self.target.table_id}: load the run's keys",
                            log=self.log)
            match = " AND ".join(f"T.{quoted(k)} = K.{quoted(k)}" for k in key)
            column = f"T.{quoted(cursor)}"
            # per key (an append table may hold a key twice): any row in the window, past it
            ((inside, newer),) = self.query(
                f"SELECT COALESCE(SUM(i), 0), COALESCE(SUM(n * (1 - i)), 0) FROM (SELECT "
                f"MAX(CASE WHEN {column} > @lo AND {column} <= @hi THEN 1 ELSE 0 END) AS i, "
                f"MAX(CASE WHEN {column} > @hi THEN 1 ELSE 0 END) AS n "
                f"FROM {quoted(self.target.table_id)} T JOIN {quoted(keys_id)} K ON {match} "
                f"GROUP BY {', '.join(f'T.{quoted(k)}' for k in key)})", parameters)
        finally:
            self.client.delete_table(keys_id, not_found_ok=True, retry=self._api_retry(),
                                     timeout=self.timeout)
        return WindowCount(rows=int(inside or 0), newer=int(newer or 0))


def table_columns(table: bigquery.Table) -> list[TargetColumn]:
    """The table's columns: BigQuery's type (``ARRAY<type>`` for a repeated field, ``STRUCT``
    for a record), nullable unless REQUIRED."""
    return [TargetColumn(f.name, f"ARRAY<{f.field_type}>" if f.mode == "REPEATED"
                         else f.field_type, f.mode != "REQUIRED") for f in table.schema]


def declared_key(table: bigquery.Table) -> list[str]:
    """The primary key the table declares (BigQuery does not enforce it), if any."""
    constraints = table.table_constraints
    primary = constraints.primary_key if constraints is not None else None
    return list(primary.columns) if primary is not None else []
