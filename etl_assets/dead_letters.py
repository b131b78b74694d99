"""Dead-letter store: what a sink could not deliver, kept to be replayed later, in a local
folder or on an object store (:class:`~etl_assets.storage.Folder`).

One parquet file per failed delivery under ``<root>/<asset>/<partition>/``: the undelivered
rows (or documents) as they were, plus columns saying why and how often they failed. Sinks
add to it when ``on_error: dead_letter`` (or when a load fails after its retries); a replay
job per sink re-sends the rows and removes those that succeed. A file appears whole or not at
all (a temp name renamed locally; an object store shows an upload only when it completes), so
a crash never leaves half a file.
"""


import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from os import PathLike
from typing import Any, Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster import (
    In,
    JobDefinition,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Output,
    job,
    op,
)

from etl_assets.logs import Log
from etl_assets.storage import Folder

ERROR = "_dl_error"
ATTEMPTS = "_dl_attempts"
FIRST_FAILED_AT = "_dl_first_failed_at"
LAST_FAILED_AT = "_dl_last_failed_at"
RUN_ID = "_dl_run_id"
# The staged version the rows came from (see RecordBatchStream.version); null: unknown.
VERSION = "_dl_version"
META_COLUMNS = (ERROR, ATTEMPTS, FIRST_FAILED_AT, LAST_FAILED_AT, RUN_ID, VERSION)
ALL_PARTITIONS = "__all__"
V = TypeVar("V", str, int)
_TS = pa.timestamp("us", tz="UTC")


class _NoRows(Exception):
    """Nothing to keep: the file being written is dropped."""


@dataclass(frozen=True)
class DeadLetterFile:
    """One failed delivery: ``rows`` undelivered rows of ``asset``'s ``partition``, in the file
    ``name`` (``<asset>/<partition>/<file>.parquet`` under the store's root)."""

    name: str
    asset: str
    partition: str | None
    rows: int

    @property
    def file_name(self) -> str:
        """The file's own name, for messages."""
        return self.name.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DeadLetters:
    """The rows of one file: ``payload`` as the sink had them, ``meta`` why they failed."""

    payload: pa.Table
    errors: list[str]
    attempts: list[int]
    first_failed_at: list[datetime]
    versions: list[int | None]

    @property
    def version(self) -> int | None:
        """The staged version of these rows (the oldest when they differ; None: unknown)."""
        known = [v for v in self.versions if v is not None]
        return min(known) if len(known) == len(self.versions) and known else None


class DeadLetterStore:
    """Dead letters under ``root``: a local folder or an fsspec URL (``${VAR}`` expanded),
    opened with ``storage_options``."""

    def __init__(self, root: str | PathLike[str],
                 storage_options: dict[str, Any] | None = None) -> None:
        self.store = Folder(str(root), storage_options)

    @staticmethod
    def folder(asset: str, partition: str | None) -> str:
        return f"{asset}/{partition or ALL_PARTITIONS}"

    def _new_name(self, asset: str, partition: str | None, run_id: str) -> str:
        return (f"{self.folder(asset, partition)}/"
                f"{time.time_ns()}-{run_id[:8]}-{uuid.uuid4().hex[:6]}.parquet")

    def add(self, asset: str, partition: str | None, payload: pa.Table | pa.RecordBatch,
            errors: Sequence[str] | str, *, run_id: str,
            attempts: Sequence[int] | int = 1,
            first_failed_at: Sequence[datetime] | None = None,
            version: Sequence[int | None] | int | None = None) -> DeadLetterFile | None:
        """Keep ``payload``'s rows with why each failed and the staged ``version`` they came
        from; returns the file (None: no rows)."""
        table = payload if isinstance(payload, pa.Table) else pa.Table.from_batches([payload])
        rows = table.num_rows
        if rows == 0:
            return None
        clash = [c for c in table.column_names if c in META_COLUMNS]
        if clash:
            raise ValueError(f"{asset}: column name(s) {clash} are reserved for dead letters")
        now = datetime.now(timezone.utc)
        table = (table
                 .append_column(ERROR, pa.array(_per_row(errors, rows), pa.string()))
                 .append_column(ATTEMPTS, pa.array(_per_row(attempts, rows), pa.int32()))
                 .append_column(FIRST_FAILED_AT, pa.array(
                     list(first_failed_at) if first_failed_at is not None else [now] * rows, _TS))
                 .append_column(LAST_FAILED_AT, pa.array([now] * rows, _TS))
                 .append_column(RUN_ID, pa.array([run_id] * rows, pa.string()))
                 .append_column(VERSION, pa.array(
                     [version] * rows if version is None or isinstance(version, int)
                     else list(version), pa.int64())))
        name = self._new_name(asset, partition, run_id)
        self._write(name, table)
        return DeadLetterFile(name, asset, partition, rows)

    def add_batches(self, asset: str, partition: str | None, schema: pa.Schema,
                    batches: Iterable[pa.RecordBatch], error: str, *,
                    run_id: str, version: int | None = None) -> DeadLetterFile | None:
        """Keep a stream of undelivered rows that failed for one reason, without holding them
        in memory; returns the file (None: no rows)."""
        clash = [c for c in schema.names if c in META_COLUMNS]
        if clash:
            raise ValueError(f"{asset}: column name(s) {clash} are reserved for dead letters")
        now = datetime.now(timezone.utc)
        full = schema
        for name, kind in ((ERROR, pa.string()), (ATTEMPTS, pa.int32()), (FIRST_FAILED_AT, _TS),
                           (LAST_FAILED_AT, _TS), (RUN_ID, pa.string()), (VERSION, pa.int64())):
            full = full.append(pa.field(name, kind))
        name = self._new_name(asset, partition, run_id)
        rows = 0
        try:
            with self.store.writing(name) as out, pq.ParquetWriter(out, full) as writer:
                for batch in batches:
                    n = batch.num_rows
                    if not n:
                        continue
                    meta = [pa.array([error] * n, pa.string()), pa.array([1] * n, pa.int32()),
                            pa.array([now] * n, _TS), pa.array([now] * n, _TS),
                            pa.array([run_id] * n, pa.string()),
                            pa.array([version] * n, pa.int64())]
                    writer.write_batch(pa.RecordBatch.from_arrays(
                        [*batch.select(schema.names).columns, *meta], schema=full))
                    rows += n
                if not rows:
                    raise _NoRows  # the file is not kept
        except _NoRows:
            return None
        return DeadLetterFile(name, asset, partition, rows)

    def files(self, asset: str, partition: str | None = None) -> list[DeadLetterFile]:
        """Dead-letter files of ``asset`` (of one ``partition``, or of all), oldest first."""
        folders = [self.folder(asset, partition)] if partition else [
            f"{asset}/{name}" for name in self.store.names(asset, folders=True)]
        found = []
        for folder in folders:
            key = folder.rsplit("/", 1)[-1]
            for name in self.store.names(folder, suffix=".parquet"):
                with self.store.open_read(f"{folder}/{name}") as handle:
                    rows = pq.ParquetFile(handle).metadata.num_rows
                found.append(DeadLetterFile(f"{folder}/{name}", asset,
                                            None if key == ALL_PARTITIONS else key, rows))
        return sorted(found, key=lambda f: f.file_name)

    def count(self, asset: str, partition: str | None = None) -> int:
        """Undelivered rows of ``asset`` (read from file footers, not the data)."""
        return sum(f.rows for f in self.files(asset, partition))

    def _read_table(self, file: DeadLetterFile, columns: list[str] | None = None) -> pa.Table:
        with self.store.open_read(file.name) as handle:
            return pq.read_table(handle, columns=columns)

    def _write(self, name: str, table: pa.Table) -> None:
        with self.store.writing(name) as out:
            pq.write_table(table, out)

    def read(self, file: DeadLetterFile) -> DeadLetters:
        table = self._read_table(file)
        versions = table.column(VERSION).to_pylist() if VERSION in table.column_names \
            else [None] * table.num_rows  # kept before versions were recorded
        return DeadLetters(
            payload=table.drop_columns([c for c in META_COLUMNS if c in table.column_names]),
            errors=table.column(ERROR).to_pylist(),
            attempts=table.column(ATTEMPTS).to_pylist(),
            first_failed_at=table.column(FIRST_FAILED_AT).to_pylist(),
            versions=versions,
        )

    def settle(self, file: DeadLetterFile, still_failing: Sequence[bool] | pa.Array,
               errors: Sequence[str] | str, *, run_id: str) -> int:
        """After a replay of ``file``: drop the rows that went through, keep the others with
        their new error and one more attempt. Returns how many rows are still failing."""
        letters = self.read(file)
        mask = pa.array(still_failing, pa.bool_())
        if len(mask) != letters.payload.num_rows:
            raise ValueError(f"{self.store.location(file.name)}: {len(mask)} results for "
                             f"{letters.payload.num_rows} dead letters")
        failing = pc.sum(mask).as_py() or 0
        if failing:
            indices = [i for i, failed in enumerate(mask.to_pylist()) if failed]
            new_errors = _per_row(errors, letters.payload.num_rows)
            self.add(file.asset, file.partition, letters.payload.take(indices),
                     [new_errors[i] for i in indices], run_id=run_id,
                     attempts=[letters.attempts[i] + 1 for i in indices],
                     first_failed_at=[letters.first_failed_at[i] for i in indices],
                     version=[letters.versions[i] for i in indices])
        self.store.remove(file.name)
        return failing

    def supersede(self, asset: str, partition: str | None, version: int | None,
                  log: Log | None = None) -> int:
        """Drop the dead letters of ``partition`` that came from a staged version older than
        ``version``: a run just wrote a later extraction of the same window, which holds
        them or newer versions of them. Returns the rows dropped (letters of unknown version
        are kept), and says so in ``log``."""
        if version is None:
            return 0
        dropped = 0
        for file in self.files(asset, partition):
            if file.partition != partition:
                continue
            stale = [v is not None and v < version for v in self._versions(file)]
            if not any(stale):
                continue
            dropped += sum(stale)
            keep = [i for i, old in enumerate(stale) if not old]
            if keep:
                self._write(file.name, self._read_table(file).take(keep))
            else:
                self.store.remove(file.name)
        if dropped and log is not None:
            log.info(f"{asset}: dropped {dropped:,} dead letter(s) of partition {partition}: "
                     f"this run wrote a later extraction of its window")
        return dropped

    def _versions(self, file: DeadLetterFile) -> list[int | None]:
        """The staged version of each row of ``file`` (only that column is read)."""
        with self.store.open_read(file.name) as handle:
            if VERSION not in pq.read_schema(handle).names:  # kept before versions existed
                return [None] * file.rows
        return self._read_table(file, [VERSION]).column(VERSION).to_pylist()

    def metadata(self, asset: str, partition: str | None) -> dict[str, Any]:
        """Asset metadata: dead letters of this partition and of the whole asset."""
        return {
            "dead_letters": self.count(asset, partition),
            "dead_letters_all_partitions": self.count(asset),
            "dead_letter_path": MetadataValue.path(self.store.location(asset)),
        }


def _per_row(value: Sequence[V] | V, rows: int) -> list[V]:
    """One value per row: ``value`` repeated, or ``value`` itself when it has one per row."""
    if isinstance(value, str | int):
        return [value] * rows
    values = list(value)
    if len(values) != rows:
        raise ValueError(f"{len(values)} values for {rows} rows")
    return values


@dataclass(frozen=True)
class ReplayReport:
    """What a replay did: rows delivered now, rows still failing, files read."""

    replayed: int
    still_failing: int
    files: int


class ReplaysDeadLetters(Protocol):
    """A sink IO manager whose dead letters a replay job can re-send."""

    def replay_dead_letters(self, context: OpExecutionContext, asset: str) -> ReplayReport: ...


def build_replay_job(sink_name: str, io_manager_key: str, asset: str) -> JobDefinition:
    """``<sink>_replay_dead_letters``: re-send every dead letter of ``sink_name``, whose asset
    (``asset``: its key as a path, ``prefix/name``) they were kept under."""

    @op(name=f"replay_{sink_name}_dead_letters", required_resource_keys={io_manager_key},
        ins={"start": In(Nothing)})
    def replay(context: OpExecutionContext) -> Output[int]:
        sink: ReplaysDeadLetters = getattr(context.resources, io_manager_key)
        report = sink.replay_dead_letters(context, asset)
        context.log.info(f"{sink_name}: replayed {report.replayed} dead letter(s) from "
                         f"{report.files} file(s); {report.still_failing} still failing")
        return Output(report.still_failing, metadata={
            "replayed": report.replayed, "still_failing": report.still_failing,
            "files": report.files})

    @job(name=f"{sink_name}_replay_dead_letters",
         description=f"Re-send the dead letters of sink {sink_name}; keep those that fail.")
    def replay_job() -> None:
        replay()

    return replay_job
