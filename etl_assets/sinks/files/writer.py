"""The file sink's write modes: where a run's rows go in the target folder.

- ``shard``: one file per partition, ``<partition>.<ext>`` (``run-<run id>.<ext>`` for an
  unpartitioned asset); re-running a partition replaces its file.
- ``replace``: the run's rows become the whole dataset, ``data.<ext>``.
- ``update``: the run's rows are merged into ``data.<ext>`` by primary key: the existing file
  is streamed through, rows whose key the run brings are left out, and the run's rows (one per
  key) are appended; the result replaces the file. With ``newest_by`` (the cursor column,
  ``conflict: newest``) an existing row whose cursor is newer than the run's row of its key
  stays and that run row is left out (see :mod:`.run_keys`); without it the run's rows win.

``drop_duplicates`` keeps one row per key of a run in shard and replace modes (update mode
always does): the newest by ``newest_by``, else the last. A shard records the staged version
it was written from (``.versions/<file>.json``, written before the shard): a write from an
older version than the recorded one (an older extraction, a late replay) is skipped, so the
newer shard stays. Files appear atomically (see :mod:`.target`). Writing to an object
store is retried (:mod:`etl_assets.retries`); when it still fails, the rows are kept in the
dead-letter store (when one is given) for the sink's replay job, and the run goes on; a run
that writes a partition drops that partition's dead letters from older versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from etl_assets.dead_letters import DeadLetterStore
from etl_assets.errors import EtlAssetsError
from etl_assets.logs import Log
from etl_assets.newest_wins import missing_cursor
from etl_assets.progress import ProgressLog
from etl_assets.retries import RetryPolicy
from etl_assets.sinks.files.formats import FileFormat, FileFormatError, closed_at_end
from etl_assets.sinks.files.run_keys import RunKeys
from etl_assets.sinks.files.spec import FileMode
from etl_assets.sinks.files.spilled_rows import SpilledRows
from etl_assets.sinks.files.target import VERSIONS_FOLDER, FileTarget

DATASET = "data"
# Failures about the data, not the target: another attempt would fail the same way.
DATA_ERRORS = (ValueError, TypeError, pa.ArrowException)


class FileSinkError(EtlAssetsError):
    """A file sink that cannot write; the message names the sink and the file."""


@dataclass(frozen=True)
class WrittenFile:
    """What one write did: ``rows`` of the run now in ``location`` (``rows_total`` after an
    update's merge), or ``dead_lettered`` rows kept for replay because of ``error``;
    ``kept_newer``: rows of the run left out because the target holds newer versions of
    them; ``superseded``: dead letters of the partition this write made obsolete."""

    name: str
    location: str
    rows: int
    rows_total: int
    bytes: int
    dead_lettered: int = 0
    error: str | None = None
    kept_newer: int = 0
    superseded: int = 0


def shard_name(partition: str | None, run_id: str, suffix: str) -> str:
    """The file of one partition (or one run, without partitions)."""
    stem = re.sub(r"[^A-Za-z0-9._=+-]", "_", partition) if partition else f"run-{run_id}"
    return f"{stem}{suffix}"


class FileSink:
    """Writes a run's rows to ``target`` in ``fmt`` by ``mode``; ``where`` names the sink in
    errors and logs. ``newest_by``: the cursor column the newest-wins rule compares (None:
    the last row written wins). ``retry``: the policy for failures that are not about the
    data."""

    def __init__(self, target: FileTarget, fmt: FileFormat, mode: FileMode, *,
                 primary_key: Sequence[str] = (), drop_duplicates: bool = False,
                 newest_by: str | None = None, retry: RetryPolicy | None = None,
                 where: str = "file sink", log: Log | None = None,
                 dead_letters: DeadLetterStore | None = None,
                 temp_dir: str | None = None) -> None:
        self.target = target
        self.fmt = fmt
        self.mode = mode
        self.primary_key = list(primary_key)
        self.drop_duplicates = drop_duplicates or mode == "update"
        self.newest_by = newest_by if self.drop_duplicates else None
        self.retry = retry or RetryPolicy()
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
              progress: ProgressLog | None = None, keep_dead_letters: bool = True,
              version: int | None = None) -> WrittenFile:
        """Write one run's rows (of ``partition``, from staged ``version``) where the mode
        puts them. When the target fails after the retries, the rows become dead letters of
        ``asset`` (unless ``keep_dead_letters`` is false: then it raises
        :class:`FileSinkError`)."""
        name = self.file_name(partition, run_id)
        if self.newest_by is not None and self.newest_by not in schema.names:
            raise FileSinkError(missing_cursor(self.where, self.newest_by, schema.names))
        if self.target.is_local and not self.drop_duplicates:
            written = self._stream_to_local(name, schema, batches, progress, version)
            return self._logged(self._superseding(written, asset, partition, version))
        key = self.primary_key if self.drop_duplicates else []  # checked only where used
        with SpilledRows(schema, key, self.where, self.temp_dir, self.newest_by) as spill:
            for batch in batches:
                spill.add(batch)
                if progress:
                    progress.add(batch.num_rows)
            spill.finish()
            try:
                written = self.retry.call(
                    lambda: self._publish(name, spill, version),
                    what=f"{self.where}: writing {self.target.location(name)}", log=self.log,
                    transient=_target_failure)
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
                    spill.batches(last_per_key=self.drop_duplicates), error, run_id=run_id,
                    version=version)
                rows = kept.rows if kept else 0
                self.log.warning(f"{self.where}: writing {self.target.location(name)} failed "
                                 f"after {self.retry.retries + 1} attempt(s) ({error}); {rows:,} "
                                 f"row(s) kept as dead letters for the replay job")
                return WrittenFile(name, self.target.location(name), 0, 0, 0, rows, error)
        return self._logged(self._superseding(written, asset, partition, version))

    def write_table(self, rows: pa.Table, *, partition: str | None, run_id: str,
                    version: int | None = None) -> WrittenFile:
        """Write rows already in memory (a replay of dead letters from staged ``version``);
        raises when it fails."""
        return self.write(rows.schema, rows.to_batches(), partition=partition, run_id=run_id,
                          keep_dead_letters=False, version=version)

    def _superseding(self, written: WrittenFile, asset: str, partition: str | None,
                     version: int | None) -> WrittenFile:
        """After a write of ``partition`` from ``version``: its older dead letters go."""
        if self.dead_letters is None or version is None:
            return written
        dropped = self.dead_letters.supersede(asset or self.where, partition, version, self.log)
        return dataclasses.replace(written, superseded=dropped)

    def _logged(self, written: WrittenFile) -> WrittenFile:
        if written.kept_newer and not written.rows:
            self.log.info(f"{self.where}: {written.location} holds a newer version of this "
                          f"partition; kept it, {written.kept_newer:,} older row(s) not written")
            return written
        merged = f", {written.rows_total:,} in the file" if self.mode == "update" else ""
        newer = (f"; {written.kept_newer:,} row(s) not written, the file holds newer versions"
                 if written.kept_newer else "")
        self.log.info(f"{self.where}: wrote {written.location} ({self.mode}): "
                      f"{written.rows:,} rows{merged}, {written.bytes:,} bytes{newer}")
        return written

    def _newer_shard(self, name: str, version: int | None) -> bool:
        """Shard mode: whether ``name`` was written from a later version than ``version``
        (then it stays); otherwise ``version`` is recorded as the one now being written."""
        if self.mode != "shard":
            return False
        stored = self.target.version(name)
        if version is not None and stored is not None and stored > version:
            return True
        if version is not None or stored is not None:
            self.target.record_version(name, version)
        return False

    # -- ways to write ---------------------------------------------------------------------

    def _stream_to_local(self, name: str, schema: pa.Schema,
                         batches: Iterable[pa.RecordBatch],
                         progress: ProgressLog | None, version: int | None) -> WrittenFile:
        """Shard or replace on local disk without dropping duplicates: straight to the temp
        file, no spill."""
        with self._file_lock(name, version):
            if self._newer_shard(name, version):
                return WrittenFile(name, self.target.location(name), 0, 0, 0,
                                   kept_newer=sum(b.num_rows for b in batches))
            return self._stream_rows(name, schema, batches, progress)

    def _stream_rows(self, name: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch],
                     progress: ProgressLog | None) -> WrittenFile:
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

    def _publish(self, name: str, spill: SpilledRows, version: int | None) -> WrittenFile:
        """Write the spilled rows where the mode puts them (merged, in update mode)."""
        with self._file_lock(name, version), contextlib.ExitStack() as stack:
            if self._newer_shard(name, version):
                return WrittenFile(name, self.target.location(name), 0, 0, 0,
                                   kept_newer=spill.rows)
            existing = None
            if self.mode == "update" and self.target.exists(name):
                existing = stack.enter_context(self.target.open_read(name))
            rows = kept = 0
            keys = RunKeys(spill.winners(), self.primary_key, self.newest_by) \
                if existing is not None else None
            with self.target.writing(name, self.temp_dir) as out, \
                    closed_at_end(self.fmt.writer(out, spill.schema, existing)) as writer:
                if existing is not None and keys is not None:
                    try:
                        kept = self.fmt.copy_rows_kept(existing, keys, writer)
                    except DATA_ERRORS as exc:
                        raise FileFormatError(f"{self.where}: cannot merge into "
                                              f"{self.target.location(name)}: {exc}") from exc
                losers = keys.losers() if keys is not None else None
                for batch in spill.batches(last_per_key=self.drop_duplicates, without=losers):
                    writer.write(batch)
                    rows += batch.num_rows
        return WrittenFile(name, self.target.location(name), rows, rows + kept,
                           self.target.size(name),
                           kept_newer=len(losers) if losers is not None else 0)

    @contextlib.contextmanager
    def _file_lock(self, name: str, version: int | None) -> Iterator[None]:
        """On local disk, one writer of a file at a time (update: one merge at a time; shard
        from a known version: the version check and the write together). Object stores have
        no lock."""
        if not self.target.is_local or self.mode == "replace" or \
                (self.mode == "shard" and version is None):
            yield
            return
        lock_name = ".update.lock" if self.mode == "update" else \
            f"{VERSIONS_FOLDER}/{name}.lock"
        self.target.fs.makedirs(str(Path(self.target.path(lock_name)).parent), exist_ok=True)
        with open(self.target.path(lock_name), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _target_failure(error: BaseException) -> bool:
    """Whether a failed write is worth another attempt: anything but the data's fault
    (object stores raise many kinds of errors for being down or slow)."""
    return not isinstance(error, DATA_ERRORS)
