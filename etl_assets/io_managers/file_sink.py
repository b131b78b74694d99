"""The file sink's write modes: where a run's rows go in the target folder.

- ``shard``: one file per partition, ``<partition>.<ext>`` (``run-<run id>.<ext>`` for an
  unpartitioned asset); re-running a partition replaces its file.
- ``replace``: the run's rows become the whole dataset, ``data.<ext>``.
- ``update``: the run's rows are merged into ``data.<ext>`` by primary key, latest wins: the
  existing file is streamed through, rows whose key the run brings are left out, and the run's
  rows (the last row per key) are appended; the result replaces the file.

``drop_duplicates`` keeps only the last row per key of a run in shard and replace modes
(update mode always does). Files appear atomically (see :mod:`file_target`). Writing to an
object store is retried; when it still fails, the rows are kept in the dead-letter store
(when one is given) for the sink's replay job, and the run goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from etl_assets.dead_letters import DeadLetterStore
from etl_assets.io_managers.file_formats import FileFormat, FileFormatError, closed_at_end
from etl_assets.io_managers.file_target import FileTarget
from etl_assets.io_managers.spilled_rows import SpilledRows
from etl_assets.progress import ProgressLog

Mode = Literal["shard", "update", "replace"]
MODES: tuple[Mode, ...] = ("shard", "update", "replace")
DATASET = "data"
# Failures about the data, not the target: another attempt would fail the same way.
DATA_ERRORS = (ValueError, TypeError, pa.ArrowException)


class FileSinkError(RuntimeError):
    """A file sink that cannot write; the message names the sink and the file."""


@dataclass(frozen=True)
class WrittenFile:
    """What one write did: ``rows`` of the run now in ``location`` (``rows_total`` after an
    update's merge), or ``dead_lettered`` rows kept for replay because of ``error``."""

    name: str
    location: str
    rows: int
    rows_total: int
    bytes: int
    dead_lettered: int = 0
    error: str | None = None


def shard_name(partition: str | None, run_id: str, suffix: str) -> str:
    """The file of one partition (or one run, without partitions)."""
    stem = re.sub(r"[^A-Za-z0-9._=+-]", "_", partition) if partition else f"run-{run_id}"
    return f"{stem}{suffix}"


class FileSink:
    """Writes a run's rows to ``target`` in ``fmt`` by ``mode``; ``where`` names the sink in
    errors and logs. ``retries`` more attempts (``retry_delay_s``, doubling) for failures
    that are not about the data."""

    def __init__(self, target: FileTarget, fmt: FileFormat, mode: Mode, *,
                 primary_key: Sequence[str] = (), drop_duplicates: bool = False,
                 retries: int = 3, retry_delay_s: float = 1.0, where: str = "file sink",
                 log: logging.Logger | Any = None, dead_letters: DeadLetterStore | None = None,
                 temp_dir: str | None = None) -> None:
        if mode not in MODES:
            raise FileSinkError(f"{where}: mode {mode!r} is not one of {', '.join(MODES)}")
        if (mode == "update" or drop_duplicates) and not primary_key:
            what = "update mode" if mode == "update" else "drop_duplicates"
            raise FileSinkError(f"{where}: {what} needs a primary key (give the sink or its "
                                f"source a primary_key)")
        self.target = target
        self.fmt = fmt
        self.mode = mode
        self.primary_key = list(primary_key)
        self.drop_duplicates = drop_duplicates or mode == "update"
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self.where = where
        self.log = log or logging.getLogger(__name__)
        self.dead_letters = dead_letters
        self.temp_dir = temp_dir

    def file_name(self, partition: str | None, run_id: str) -> str:
        if self.mode == "shard":
            return shard_name(partition, run_id, self.fmt.suffix)
        return DATASET + self.fmt.suffix

    def write(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch], *,
              partition: str | None, run_id: str, asset: str = "",
              progress: ProgressLog | None = None, keep_dead_letters: bool = True
              ) -> WrittenFile:
        """Write one run's rows (of ``partition``) where the mode puts them. When the target
        fails after the retries, the rows become dead letters of ``asset`` (unless
        ``keep_dead_letters`` is false: then it raises :class:`FileSinkError`)."""
        name = self.file_name(partition, run_id)
        if self.target.is_local and not self.drop_duplicates:
            return self._logged(self._stream_to_local(name, schema, batches, progress))
        key = self.primary_key if self.drop_duplicates else []  # checked only where used
        with SpilledRows(schema, key, self.where, self.temp_dir) as spill:
            for batch in batches:
                spill.add(batch)
                if progress:
                    progress.add(batch.num_rows)
            spill.finish()
            try:
                return self._logged(self._with_retries(lambda: self._publish(name, spill), name))
            except FileFormatError:
                raise
            except DATA_ERRORS as exc:
                raise FileFormatError(f"{self.where}: {self.target.location(name)}: "
                                      f"{exc}") from exc
            except Exception as exc:
                if self.dead_letters is None or self.target.is_local or not keep_dead_letters:
                    raise FileSinkError(f"{self.where}: writing {self.target.location(name)} "
                                        f"failed: {exc}") from exc
                error = f"{type(exc).__name__}: {exc}"
                kept = self.dead_letters.add_batches(
                    asset or self.where, partition, schema,
                    spill.batches(last_per_key=self.drop_duplicates), error, run_id=run_id)
                rows = kept.rows if kept else 0
                self.log.warning(f"{self.where}: writing {self.target.location(name)} failed "
                                 f"after {self.retries + 1} attempt(s) ({error}); {rows:,} "
                                 f"row(s) kept as dead letters for the replay job")
                return WrittenFile(name, self.target.location(name), 0, 0, 0, rows, error)

    def write_table(self, rows: pa.Table, *, partition: str | None, run_id: str) -> WrittenFile:
        """Write rows already in memory (a replay of dead letters); raises when it fails."""
        return self.write(rows.schema, rows.to_batches(), partition=partition, run_id=run_id,
                          keep_dead_letters=False)

    def _logged(self, written: WrittenFile) -> WrittenFile:
        merged = f", {written.rows_total:,} in the file" if self.mode == "update" else ""
        self.log.info(f"{self.where}: wrote {written.location} ({self.mode}): "
                      f"{written.rows:,} rows{merged}, {written.bytes:,} bytes")
        return written

    # -- ways to write ---------------------------------------------------------------------

    def _stream_to_local(self, name: str, schema: pa.Schema,
                         batches: Iterable[pa.RecordBatch],
                         progress: ProgressLog | None) -> WrittenFile:
        """Shard or replace on local disk without dropping duplicates: straight to the temp
        file, no spill."""
        rows = 0
        try:
            with self.target.writing(name) as out, \
                    closed_at_end(self.fmt.writer(out, schema)) as writer:
                for batch in batches:
                    writer.write(batch)
                    rows += batch.num_rows
                    if progress:
                        progress.add(batch.num_rows)
        except DATA_ERRORS as exc:
            raise FileFormatError(f"{self.where}: {self.target.location(name)}: {exc}") from exc
        return WrittenFile(name, self.target.location(name), rows, rows, self.target.size(name))

    def _publish(self, name: str, spill: SpilledRows) -> WrittenFile:
        """Write the spilled rows where the mode puts them (merged, in update mode)."""
        with self._update_lock(), contextlib.ExitStack() as stack:
            existing = None
            if self.mode == "update" and self.target.exists(name):
                existing = stack.enter_context(self.target.open_read(name))
            rows = kept = 0
            with self.target.writing(name, self.temp_dir) as out, \
                    closed_at_end(self.fmt.writer(out, spill.schema, existing)) as writer:
                if existing is not None:
                    try:
                        kept = self.fmt.copy_rows_without_keys(existing, spill.keys(), writer)
                    except DATA_ERRORS as exc:
                        raise FileFormatError(f"{self.where}: cannot merge into "
                                              f"{self.target.location(name)}: {exc}") from exc
                for batch in spill.batches(last_per_key=self.drop_duplicates):
                    writer.write(batch)
                    rows += batch.num_rows
        return WrittenFile(name, self.target.location(name), rows, rows + kept,
                           self.target.size(name))

    @contextlib.contextmanager
    def _update_lock(self) -> Iterator[None]:
        """Update mode on local disk: one merge at a time (object stores have no lock)."""
        if self.mode != "update" or not self.target.is_local:
            yield
            return
        self.target.fs.makedirs(self.target.root, exist_ok=True)
        with open(self.target.path(".update.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _with_retries(self, attempt: Any, name: str) -> WrittenFile:
        delay = self.retry_delay_s
        for number in range(self.retries + 1):
            try:
                return attempt()  # type: ignore[no-any-return]
            except DATA_ERRORS:
                raise  # the data, not the target: another attempt would fail the same way
            except Exception as exc:
                if number == self.retries:
                    raise
                self.log.warning(f"{self.where}: writing {self.target.location(name)} failed "
                                 f"({type(exc).__name__}: {exc}); attempt {number + 2} of "
                                 f"{self.retries + 1} in {delay:.1f} s")
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")
