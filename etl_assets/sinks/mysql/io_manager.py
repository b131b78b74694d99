"""MySQL/MariaDB sink IO manager: a sink asset's batches upserted into its table by
:class:`~etl_assets.sinks.mysql.writer.MysqlUpsertWriter` (LOAD DATA LOCAL INFILE into a
temporary table, then ``INSERT .. ON DUPLICATE KEY UPDATE``, newest wins), a transaction a
batch, the table's watermark in its COMMENT.

``on_error: dead_letter``: a row the table refuses is taken out of its batch and kept in the
dead-letter store, and the batch goes in without it (after ``REFUSED_ROWS_MAX`` refused rows
of one batch, the rest of the batch is kept whole); the partition's watermark stops
advancing. The replay job (``<sink>_replay_dead_letters``) writes them again under the same
rules. The connection is resolved when a run writes, never stored with the run.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pymysql
from dagster import OpExecutionContext, OutputContext

from etl_assets.batches import RecordBatchStream, with_last
from etl_assets.connections import resolve_url
from etl_assets.dead_letters import ReplayReport
from etl_assets.logs import Log
from etl_assets.progress import ProgressLog
from etl_assets.secrets import mask_text, masked_errors, masked_log
from etl_assets.sinks.base import Metadata, WindowCount, unreadable_target
from etl_assets.sinks.comment_watermark import WatermarkTarget
from etl_assets.sinks.mysql.connection import connect_arguments, url_database
from etl_assets.sinks.mysql.errors import MysqlSinkError, RefusedRows
from etl_assets.sinks.mysql.spec import MysqlSinkSpec
from etl_assets.sinks.mysql.table import compiled_type
from etl_assets.sinks.mysql.target_state import (
    committed_watermark,
    count_windows,
    table_columns,
    table_state,
)
from etl_assets.sinks.mysql.writer import MysqlUpsertWriter
from etl_assets.sinks.sql_table import SqlTableIOManager, table_metadata
from etl_assets.sinks.table_writer import staging_table_name
from etl_assets.watermark import Bound, Window, encode_bound

REFUSED_ROWS_MAX = 100
"""Refused rows taken out of one batch one by one (each costs a reload of the batch); past
this the rest of the batch is dead-lettered whole."""


class MysqlUpsertIOManager(SqlTableIOManager[MysqlSinkSpec]):
    """Upserts a sink asset's batches into the sink's MySQL table (created when missing); see
    :class:`~etl_assets.sinks.mysql.spec.MysqlSinkSpec` for what each setting does."""

    compiled_type = staticmethod(compiled_type)

    def url(self) -> str:
        """The sink's connection, resolved now."""
        return resolve_url(self.spec.connection, self.setup.where)

    def _located(self) -> tuple[dict[str, Any], str, str]:
        """pymysql's arguments, the table's database and its name."""
        url = self.url()
        name = self.spec.table_name
        database = name.schema or url_database(url)
        if not database:
            raise MysqlSinkError(f"{self.setup.where}: name the database of {name.display} in "
                                 f"the table (database.table) or in the URL")
        return connect_arguments(url, self.setup.where), database, name.name

    def _writer(self, log: Log, staging: str, *, watermark: WatermarkTarget | None,
                delete: bool) -> MysqlUpsertWriter:
        spec = self.spec
        return MysqlUpsertWriter(
            self.url(), spec.table_name, self.setup.primary_key, staging, watermark=watermark,
            replace_slice=spec.without_key == "replace_window", declared_table=self.declared,
            declared_reference=spec.table_definition or "",
            delete=spec.delete if delete else "off", log=log, conflict=spec.conflict,
            cursor_column=self.setup.cursor_column, retry=spec.retry_policy(),
            local_infile_refused=spec.local_infile_refused, owner=self.setup.where)

    @masked_errors()
    def write(self, context: OutputContext, partition: str | None,
              stream: RecordBatchStream) -> Metadata:
        """Upsert one partition's rows; ``rows_written``: rows the table took,
        ``rows_changed``: rows inserted or changed (unchanged rows are skipped),
        ``rows_dead_lettered``: rows it refused, kept for the replay job."""
        asset = context.asset_key.to_user_string()
        label = f"{asset} [{partition}] -> {self.spec.table_name.display}"
        log = masked_log(context.log)
        store = self.dead_letter_store()
        changed = refused = 0
        with self._writer(log, staging_table_name(asset, partition, context.run_id),
                          watermark=_watermark_target(self.setup.cursor_column, partition),
                          delete=True) as writer:
            for action in writer.prepare(stream.schema):
                context.log.info(f"{label}: {action}")
            superseded = store.supersede(asset, partition, stream.version, log)
            progress = ProgressLog(context.log, label, done_line=context.has_partition_key)
            for batch, final in with_last(stream):
                if self.spec.on_error == "fail":
                    changed += writer.write(batch, final=final)
                else:
                    written, out, errors = self._write_taking_out(writer, batch, final)
                    changed += written
                    if out:
                        writer.watermark = None  # the table lacks rows of this window now
                        log.error(f"{label}: {len(out):,} row(s) refused, kept as dead "
                                  f"letters; first: {errors[0]}")
                        store.add(asset, partition, batch.take(pa.array(out, pa.int64())),
                                  errors, run_id=context.run_id, version=stream.version)
                        refused += len(out)
                progress.add(batch.num_rows)
            writer.finish()
        progress.done()
        return {
            "table": self.spec.table_name.display,
            "rows_written": progress.rows - refused,
            "rows_changed": changed,
            "rows_dead_lettered": refused,
            "dead_letters_superseded": superseded,
            "batches": progress.batches,
            "seconds": round(progress.seconds, 3),
            "rows_per_second": round(progress.rows_per_second),
            **store.metadata(asset, partition),
        }

    @classmethod
    def _write_taking_out(cls, writer: MysqlUpsertWriter, batch: pa.RecordBatch,
                          final: bool) -> tuple[int, list[int], list[str]]:
        """Write ``batch``, taking out each row the table refuses and writing the rest again;
        returns the rows changed, the refused rows' positions and their errors. When the
        server names no row (a CHECK constraint), the batch is written in halves down to the
        refused rows; past ``REFUSED_ROWS_MAX`` refused rows the rest of it is refused."""
        kept = pa.array(range(batch.num_rows), pa.int64())
        out: list[int] = []
        errors: list[str] = []
        while True:
            try:
                return (writer.write(batch.take(kept), final=final) if len(kept) else 0,
                        out, errors)
            except RefusedRows as exc:
                message = mask_text(str(exc))
                if len(out) >= REFUSED_ROWS_MAX or (exc.row is None and len(kept) == 1):
                    out.extend(kept.to_pylist())
                    errors.extend([message] * len(kept))
                    return 0, out, errors
                if exc.row is None:
                    return cls._halves(writer, batch, kept, final, out, errors)
                out.append(kept[exc.row].as_py())
                errors.append(message)
                kept = pa.concat_arrays([kept[:exc.row], kept[exc.row + 1:]])

    @classmethod
    def _halves(cls, writer: MysqlUpsertWriter, batch: pa.RecordBatch, kept: pa.Array,
                final: bool, out: list[int], errors: list[str]
                ) -> tuple[int, list[int], list[str]]:
        """``_write_taking_out`` of the rows ``kept`` of ``batch``, in two halves."""
        changed = 0
        middle = len(kept) // 2
        for part, last in ((kept[:middle], False), (kept[middle:], final)):
            rows = batch.take(part)
            written, refused, why = cls._write_taking_out(writer, rows, last)
            changed += written
            out.extend(part[i].as_py() for i in refused)
            errors.extend(why)
        return changed, out, errors

    # -- what the table holds --------------------------------------------------------------

    @masked_errors()
    def target_metadata(self) -> Metadata:
        """``dagster/table_name`` (``database.table``), ``dagster/column_schema`` (the table's
        own types, nullability, primary key) and ``dagster/row_count`` (exact under
        :data:`~etl_assets.sinks.mysql.target_state.EXACT_COUNT_MAX_ROWS` estimated rows,
        else ``row_count_estimate``). A server out of reach gives ``target_metadata_error``."""
        try:
            arguments, database, name = self._located()
            state = table_state(arguments, database, name)
        except (pymysql.MySQLError, OSError) as exc:
            return unreadable_target(exc)
        if state is None:
            return {}
        return table_metadata(f"{database}.{name}", state.columns, state.primary_key,
                              state.rows, state.estimated_rows)

    @masked_errors()
    def target_columns(self) -> list[str] | None:
        return self.spec.retry_policy().call(
            lambda: table_columns(*self._located()),
            what=f"{self.setup.where}: reading the columns of {self.spec.table_name.display}")

    @masked_errors()
    def count_windows(self, asks: list[tuple[Window, pa.Table | None]]) -> list[WindowCount]:
        """``count_window`` for each of ``asks``, on one session (retried as a whole)."""
        return self.spec.retry_policy().call(
            lambda: count_windows(*self._located(), self.setup.cursor_column, asks),
            what=f"{self.setup.where}: counting window rows in {self.spec.table_name.display}")

    def committed_watermark(self) -> Bound | None:
        return committed_watermark(*self._located())

    def status(self) -> str:
        arguments, database, name = self._located()
        state = table_state(arguments, database, name)
        if state is None:
            return f"sink {self.setup.name}: {database}.{name} does not exist yet"
        rows = (f"{state.rows:,}" if state.rows is not None
                else f"~{state.estimated_rows:,} (estimated)")
        letters = self.dead_letter_store().count(self.setup.name)
        return (f"sink {self.setup.name}: {rows} rows in {database}.{name}, high watermark "
                f"{'none' if state.watermark is None else encode_bound(state.watermark)}"
                + (f", {letters:,} dead letter(s)" if letters else ""))

    # -- dead letters --------------------------------------------------------------------

    @masked_errors()
    def replay_dead_letters(self, context: OpExecutionContext, asset: str) -> ReplayReport:
        """Write every dead letter of ``asset`` again (newest wins: a stored row with a newer
        cursor stays); rows the table takes are removed, the others kept with their error."""
        store = self.dead_letter_store()
        log = masked_log(context.log)
        files = store.files(asset)
        replayed = failing = 0
        for file in files:
            payload = store.read(file).payload
            batch = payload.combine_chunks().to_batches()[0] if payload.num_rows else None
            if batch is None:
                continue
            with self._writer(log, staging_table_name(asset, file.partition, context.run_id),
                              watermark=None, delete=False) as writer:
                writer.prepare(batch.schema)
                _, out, errors = self._write_taking_out(writer, batch, final=False)
            still = [False] * batch.num_rows
            reasons = [""] * batch.num_rows
            for row, error in zip(out, errors, strict=True):
                still[row], reasons[row] = True, error
            failing += store.settle(file, still, reasons, run_id=context.run_id)
            replayed += batch.num_rows - len(out)
            log.info(f"{asset}: {file.file_name}: {batch.num_rows - len(out):,} row(s) "
                     f"replayed, {len(out):,} refused again")
        return ReplayReport(replayed, failing, len(files))


def _watermark_target(cursor: str, partition: str | None) -> WatermarkTarget | None:
    window = Window.of_partition(partition)
    if window is None or partition is None:
        return None  # no window, e.g. a partition added by hand: nothing to record
    return WatermarkTarget(cursor, window, partition)
