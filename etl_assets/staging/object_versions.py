"""Versions of one staged partition on an object store (``s3://``, ``gs://``, ``az://``...), where
there are no links, no renames and no locks.

``<partition>/<version>-<run>/`` holds a version's shards, its ``_manifest.json`` (written after
the shards: a version without one is unfinished) and its ``raw/`` pages; ``<partition>/
_current.json``, the pointer, names the current version. Readers resolve the pointer once and
read only that version's folder, so a version is never mixed with another.

Publishing, written last: a writer whose manifest is written lists the partition's finished
versions and, while the pointer names an older one than the newest, writes the newest into it
and looks again. The last writer of the pointer has so seen every version finished before it
looked: the pointer never goes back to an older extraction, whatever order concurrent runs
finish in (object stores list and read their writes at once: S3, GCS and Azure do).

Version numbers are ``max(current + 1, time.time_ns())``: they increase across runs of a
partition as on local disk; two concurrent runs on machines whose clocks differ may number in
the other order than they started, and the higher number wins, as it does locally.

Removal keeps the rules of local staging, with leases where local disk has locks:
- a reader writes ``_readers/<id>.json`` (host, pid) into the version it reads and removes it
  when done; a superseded version goes only when no live reader's lease is in it and it was
  superseded more than ``SUPERSEDED_GRACE_S`` ago (which covers a reader between resolving
  the pointer and writing its lease);
- a writer records itself in ``_writer.json``; an unpublished version (unfinished, or finished
  but never made current) goes when its writer is gone (a process of this host that no longer
  runs) or it is older than ``ABANDONED_AFTER_S`` (a writer on another host).
A lease of a process of another host counts as live for ``ABANDONED_AFTER_S``. Each staging
write sweeps the partition it writes once it published (an object store's listing of every
partition of an asset would cost a request each).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from etl_assets.run_monitoring import RunWorker, WorkerStatus
from etl_assets.staging.versions import MANIFEST, Removed, StagingError
from etl_assets.storage import Folder

POINTER = "_current.json"
READERS = "_readers"
WRITER = "_writer.json"
SUPERSEDED_GRACE_S = 300.0
ABANDONED_AFTER_S = 24 * 3600.0


def _number(name: str) -> int | None:
    """The version a version folder's name starts with (None: not a version folder)."""
    head = name.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _me() -> str:
    return json.dumps({**RunWorker.of_process(os.getpid()).__dict__,
                       "at": datetime.now(timezone.utc).isoformat()})


def _gone(record: bytes, written_ns: int | None) -> bool:
    """Whether the process a lease or writer record names is gone: it ran on this host and
    runs no more, or the record is older than ``ABANDONED_AFTER_S``."""
    try:
        data = json.loads(record)
        worker = RunWorker(str(data["host"]), int(data["pid"]), float(data["started"]))
        at = datetime.fromisoformat(str(data["at"])).timestamp()
    except (ValueError, KeyError, TypeError):
        return written_ns is not None and time.time() - written_ns / 1e9 > ABANDONED_AFTER_S
    if time.time() - at > ABANDONED_AFTER_S:
        return True
    return worker.health().status == WorkerStatus.NOT_FOUND


class ObjectVersion:
    """One version's folder; held (being written, or read) until ``release()``."""

    def __init__(self, partition: ObjectPartitionVersions, files: Folder, version: int,
                 hold: str | None) -> None:
        self.partition = partition
        self.files = files
        self.version = version
        self.name = files.root.rsplit("/", 1)[-1]
        self._hold = hold  # the lease or writer record to remove on release

    def publish(self) -> bool:
        """See :meth:`ObjectPartitionVersions.publish`."""
        return self.partition.publish(self)

    def release(self) -> None:
        if self._hold is not None:
            hold, self._hold = self._hold, None
            with contextlib.suppress(FileNotFoundError):
                self.files.remove(hold)

    def discard(self) -> None:
        """Remove this (unpublished or superseded) version."""
        self._hold = None
        self.files.remove_tree("")


class ObjectPin(ObjectVersion):
    """A version being read: its lease goes when the stream is read or dropped."""

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at exit: the lease goes stale instead
            self.release()


@dataclass(frozen=True)
class _Pointer:
    version: int
    name: str


class ObjectPartitionVersions:
    """The versions of the partition whose folder is ``folder`` on an object store."""

    def __init__(self, folder: Folder) -> None:
        self.folder = folder

    @property
    def location(self) -> str:
        return self.folder.display

    def _pointer(self) -> _Pointer | None:
        try:
            data = json.loads(self.folder.read_bytes(POINTER))
            return _Pointer(int(data["version"]), str(data["folder"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise StagingError(f"{self.folder.location(POINTER)} is not a staging pointer: "
                               f"{exc}") from None

    def _versions(self) -> list[tuple[int, str]]:
        """Version folders, newest first."""
        found = [(_number(name), name) for name in self.folder.names(folders=True)]
        return sorted(((n, name) for n, name in found if n is not None), reverse=True)

    def current_name(self) -> str | None:
        """The current version's folder name (None: nothing published)."""
        pointer = self._pointer()
        return pointer.name if pointer else None

    def allocate(self, run_id: str) -> ObjectVersion:
        """A new version folder, numbered after the current one, recorded as being written
        by this process."""
        pointer = self._pointer()
        version = max((pointer.version + 1) if pointer else 0, time.time_ns())
        files = self.folder.child(f"{version}-{run_id}")
        files.write_bytes(WRITER, _me().encode())
        return ObjectVersion(self, files, version, WRITER)

    def publish(self, written: ObjectVersion) -> bool:
        """Make the newest finished version current (see the module's docstring); True when
        that is ``written``, False when a newer one is (``written`` is superseded)."""
        while True:
            newest = next(((n, name) for n, name in self._versions()
                           if n >= written.version and self._finished_at(name) is not None), None)
            if newest is None:
                raise StagingError(f"{written.files.display} has no manifest: not publishable")
            pointer = self._pointer()
            if pointer is not None and pointer.version >= newest[0]:
                return pointer.version == written.version
            self.folder.write_bytes(POINTER, json.dumps(
                {"version": newest[0], "folder": newest[1],
                 "published_at": datetime.now(timezone.utc).isoformat()}).encode())

    def pin(self) -> ObjectPin | None:
        """The current version with a reader's lease in it (None: nothing published). A
        version removed between resolving the pointer and writing the lease is noticed and
        the pointer resolved again."""
        while True:
            pointer = self._pointer()
            if pointer is None:
                return None
            files = self.folder.child(pointer.name)
            lease = f"{READERS}/{uuid.uuid4().hex}.json"
            files.write_bytes(lease, _me().encode())
            if self._finished_at(pointer.name) is not None:
                return ObjectPin(self, files, pointer.version, lease)
            files.remove(lease)
            if self._pointer() == pointer:
                return None  # a pointer to a version without a manifest: nothing staged

    def sweep(self, blocking: bool = True) -> Removed:
        """Remove the versions that may go (see the module's docstring)."""
        del blocking  # nothing waits on an object store
        removed = Removed([])
        pointer = self._pointer()
        versions = self._versions()
        # when each published version was finished (its manifest's written_at), read once
        finished_at = {} if pointer is None else {
            name: at for number, name in versions
            if (number < pointer.version or name == pointer.name)
            and (at := self._finished_at(name)) is not None}
        superseded_at: float | None = None  # when the next newer published version finished
        for number, name in versions:  # newest first
            if pointer is not None and name == pointer.name:
                superseded_at = finished_at.get(name)
                continue
            if name in finished_at:  # published before the current one: superseded
                go = self._may_go_superseded(name, superseded_at)
                superseded_at = finished_at[name]
            else:
                go = self._writer_gone(name, number)
            if not go:
                continue
            files = self.folder.child(name)
            size = sum(int(entry.get("size") or 0) for entry in
                       files.fs.find(files.root, detail=True).values())
            files.remove_tree("")
            removed.names.append(name)
            removed.bytes += size
        return removed

    def _finished_at(self, name: str) -> float | None:
        """When version ``name``'s manifest was written (seconds since the epoch; None: not
        finished; infinity: a manifest that does not say, whose successors never go)."""
        try:
            manifest = self.folder.read_bytes(f"{name}/{MANIFEST}")
        except FileNotFoundError:
            return None
        try:
            return datetime.fromisoformat(json.loads(manifest)["written_at"]).timestamp()
        except (ValueError, KeyError, TypeError):
            return float("inf")

    def _may_go_superseded(self, name: str, superseded_at: float | None) -> bool:
        if superseded_at is None or time.time() - superseded_at < SUPERSEDED_GRACE_S:
            return False
        readers = self.folder.child(f"{name}/{READERS}")
        for lease in readers.names(suffix=".json"):
            try:
                if not _gone(readers.read_bytes(lease), None):
                    return False
            except FileNotFoundError:
                continue  # its reader is done
        return True

    def _writer_gone(self, name: str, number: int) -> bool:
        try:
            record = self.folder.read_bytes(f"{name}/{WRITER}")
        except FileNotFoundError:  # finished and released, or killed before writing it
            return time.time() - number / 1e9 > ABANDONED_AFTER_S
        return _gone(record, number)
