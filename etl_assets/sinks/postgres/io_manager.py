"""PostgreSQL sink IO manager: a sink asset's batches upserted into its table by
:class:`~etl_assets.sinks.postgres.writer.PostgresUpsertWriter` (COPY into a staging table,
then ``INSERT .. ON CONFLICT``), each batch in one transaction with the table's watermark.

The connection is resolved when a run writes (an env-held URL is read from the environment
then, never stored with the run); without one, the embedded server is started.
"""

from __future__ import annotations

import psycopg
import pyarrow as pa
from dagster import OutputContext
from psycopg import sql

from etl_assets.batches import RecordBatchStream
from etl_assets.connections import libpq_url, resolve_url
from etl_assets.progress import ProgressLog
from etl_assets.secrets import masked_errors, masked_log
from etl_assets.sinks.base import Metadata, WindowCount, unreadable_target
from etl_assets.sinks.postgres.declared import compiled_type
from etl_assets.sinks.postgres.spec import PostgresSinkSpec
from etl_assets.sinks.postgres.target_state import (
    count_windows,
    table_columns,
    table_state,
)
from etl_assets.sinks.postgres.watermark import WatermarkTarget, read_watermark
from etl_assets.sinks.postgres.writer import PostgresUpsertWriter, staging_table_name, with_last
from etl_assets.sinks.sql_table import SqlTableIOManager, table_metadata
from etl_assets.table_names import TableName
from etl_assets.watermark import Bound, Window, encode_bound


class PostgresUpsertIOManager(SqlTableIOManager[PostgresSinkSpec]):
    """Upserts a sink asset's batches into the sink's table (created when missing); see
    :class:`~etl_assets.sinks.postgres.spec.PostgresSinkSpec` for what each setting does."""

    compiled_type = staticmethod(compiled_type)

    def conninfo(self) -> str:
        """What psycopg opens: the sink's connection, resolved now."""
        return libpq_url(resolve_url(self.spec.connection, self.setup.where), self.setup.where)

    @masked_errors()
    def write(self, context: OutputContext, partition: str | None,
              stream: RecordBatchStream) -> Metadata:
        """Upsert one partition's rows; ``rows_written``: rows handed to the table,
        ``rows_changed``: rows the upserts inserted or changed (unchanged rows are skipped)."""
        spec = self.spec
        asset = context.asset_key.to_user_string()
        table = spec.table_name.display
        label = f"{asset} [{partition}] -> {table}"
        changed = 0
        staging = staging_table_name(asset, partition, context.run_id)
        with PostgresUpsertWriter(self.conninfo(), spec.table_name, self.setup.primary_key,
                                  staging, watermark=self._watermark_target(partition),
                                  replace_slice=spec.without_key == "replace_window",
                                  declared_table=self.declared,
                                  declared_reference=spec.table_definition or "",
                                  delete=spec.delete, log=masked_log(context.log),
                                  terminate_blockers_after_s=spec.terminate_blockers_after_s,
                                  conflict=spec.conflict, cursor_column=self.setup.cursor_column,
                                  retry=spec.retry_policy()) as writer:
            for action in writer.prepare(stream.schema):
                context.log.info(f"{label}: {action}")
            progress = ProgressLog(context.log, label,
                                   done_line=context.has_partition_key)
            for batch, final in with_last(stream):
                changed += writer.write(batch, final=final)
                progress.add(batch.num_rows)
            writer.finish()
        progress.done()
        return {
            "table": table,
            "rows_written": progress.rows,
            "rows_changed": changed,
            "batches": progress.batches,
            "seconds": round(progress.seconds, 3),
            "rows_per_second": round(progress.rows_per_second),
        }

    # -- what the table holds --------------------------------------------------------------

    def qualified_table(self) -> TableName:
        """The sink's table with its schema (``public`` when the spec names none, as the
        writer creates it)."""
        return self.spec.table_name.in_schema("public")

    @masked_errors()
    def target_metadata(self) -> Metadata:
        """``dagster/table_name`` (``database.schema.table``), ``dagster/column_schema`` (the
        table's own types, nullability, primary key) and ``dagster/row_count`` (exact, by
        ``count(*)``, when the planner estimates fewer than
        :data:`~etl_assets.sinks.postgres.target_state.EXACT_COUNT_MAX_ROWS` rows; else
        ``row_count_estimate``, the planner's estimate, and no ``dagster/row_count``). A
        database that cannot be read now gives ``target_metadata_error``, not a failed run:
        the rows are written."""
        try:
            state = table_state(self.conninfo(), self.qualified_table())
        except psycopg.Error as exc:
            return unreadable_target(exc)
        if state is None:
            return {}
        return table_metadata(f"{TableName(None, state.database).display}.{state.name.display}",
                              state.columns, state.primary_key, state.rows,
                              state.estimated_rows)

    @masked_errors()
    def target_columns(self) -> list[str] | None:
        return self.spec.retry_policy().call(
            lambda: table_columns(self.conninfo(), self.qualified_table()),
            what=f"{self.setup.where}: reading the columns of {self.spec.table_name.display}")

    @masked_errors()
    def count_windows(self, asks: list[tuple[Window, pa.Table | None]]) -> list[WindowCount]:
        """``count_window`` for each of ``asks``, on one connection (retried as a whole)."""
        return self.spec.retry_policy().call(
            lambda: count_windows(self.conninfo(), self.qualified_table(),
                                  self.setup.cursor_column, asks),
            what=f"{self.setup.where}: counting window rows in "
                 f"{self.spec.table_name.display}")

    def _watermark_target(self, partition: str | None) -> WatermarkTarget | None:
        window = Window.of_partition(partition)
        if window is None or partition is None:
            return None  # no window, e.g. a partition added by hand: nothing to record
        return WatermarkTarget(self.setup.cursor_column, window, partition)

    def committed_watermark(self) -> Bound | None:
        return read_watermark(self.conninfo(), self.spec.table_name)

    def status(self) -> str:
        url = self.conninfo()
        table = self.spec.table_name.in_schema("public")
        with psycopg.connect(url, connect_timeout=10) as conn:
            exists = conn.execute("SELECT to_regclass(%s)",
                                  (table.sql().as_string(conn),)).fetchone()
            if not exists or exists[0] is None:
                return f"sink {self.setup.name}: {table.display} does not exist yet"
            (rows,) = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                table.sql())).fetchone() or (0,)
        mark = read_watermark(url, table)
        return (f"sink {self.setup.name}: {rows:,} rows in {table.display}, high watermark "
                f"{'none' if mark is None else encode_bound(mark)}")
