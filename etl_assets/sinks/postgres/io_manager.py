"""PostgreSQL sink IO manager: a sink asset's batches upserted into its table by
:class:`~etl_assets.sinks.postgres.writer.PostgresUpsertWriter` (COPY into a staging table,
then ``INSERT .. ON CONFLICT``), each batch in one transaction with the table's watermark.

The connection is resolved when a run writes (an env-held URL is read from the environment
then, never stored with the run); without one, the embedded server is started.
"""

from __future__ import annotations

import psycopg
from dagster import OutputContext
from psycopg import sql

from etl_assets.batches import RecordBatchStream
from etl_assets.connections import libpq_url, resolve_url
from etl_assets.progress import ProgressLog
from etl_assets.secrets import masked_errors, masked_log
from etl_assets.sinks.base import SinkIOManager, SinkSetup
from etl_assets.sinks.postgres.declared import load_declared_table
from etl_assets.sinks.postgres.spec import PostgresSinkSpec
from etl_assets.sinks.postgres.watermark import WatermarkTarget, read_watermark
from etl_assets.sinks.postgres.writer import PostgresUpsertWriter, staging_table_name, with_last
from etl_assets.watermark import Bound, Window, encode_bound


class PostgresUpsertIOManager(SinkIOManager[PostgresSinkSpec]):
    """Upserts a sink asset's batches into the sink's table (created when missing); see
    :class:`~etl_assets.sinks.postgres.spec.PostgresSinkSpec` for what each setting does."""

    keeps_watermark = True

    def __init__(self, setup: SinkSetup[PostgresSinkSpec]) -> None:
        super().__init__(setup)
        reference = self.spec.table_definition
        # A wrong reference fails when the code location loads, not in a run.
        self.declared = load_declared_table(reference, setup.where) if reference else None

    def conninfo(self) -> str:
        """What psycopg opens: the sink's connection, resolved now."""
        return libpq_url(resolve_url(self.spec.connection, self.setup.where), self.setup.where)

    @masked_errors()
    def handle_output(self, context: OutputContext, obj: RecordBatchStream) -> None:
        spec = self.spec
        partition = context.partition_key if context.has_partition_key else None
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
            for action in writer.prepare(obj.schema):
                context.log.info(f"{label}: {action}")
            progress = ProgressLog(context.log, label)
            for batch, final in with_last(obj):
                changed += writer.write(batch, final=final)
                progress.add(batch.num_rows)
            writer.finish()
        progress.done()
        context.add_output_metadata({
            "table": table,
            "dagster/row_count": progress.rows,
            "rows_changed": changed,
            "batches": progress.batches,
            "seconds": round(progress.seconds, 3),
            "rows_per_second": round(progress.rows_per_second),
        })

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
