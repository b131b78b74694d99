"""Versions of one staged partition: numbering, publishing, pinning by readers, and removal.

``<asset>/<partition>`` is a symlink to ``<asset>/.versions/<partition>/<version>-<run>/``.
``version`` is an integer, strictly increasing per partition: ``max(previous + 1,
time.time_ns())``, allocated under the partition's lock file (``.versions/<partition>/
.versions.lock``), so it also increases across a wiped staging folder.

Every version folder holds a ``.lock`` file: its writer holds an exclusive ``flock`` on it
while writing, readers a shared one while reading. A version goes only when it is not the
current one and an exclusive, non-blocking lock on it succeeds (no writer, no reader): it is
renamed to ``.removing-<name>`` (atomic) and then deleted. Versions that cannot go yet stay for
a later sweep, which each staging write of the asset runs: that also removes what killed
writers left (partial versions, temporary links).

A writer publishes its version (swaps the link) only when it is newer than the current one, so
the link never goes back to an older extraction when two runs of a partition overlap.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from etl_assets.errors import EtlAssetsError
from etl_assets.logs import Log
from etl_assets.storage import Folder

VERSIONS = ".versions"
MANIFEST = "_manifest.json"
VERSION_LOCK = ".lock"  # inside each version folder
PARTITION_LOCK = ".versions.lock"  # inside .versions/<partition>/
LAST_VERSION = ".last_version"  # the highest version allocated for the partition
REMOVING = ".removing-"
LINK_TEMP = ".link-"  # temporary links: <asset>/.<partition>.link-<version folder>


class StagingError(EtlAssetsError):
    """Staged data that is missing or unreadable."""


def _lock_file(path: Path) -> int:
    """An fd open on ``path`` (created if missing), for flock."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _try_lock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def version_number(folder: Path) -> int:
    """The version of ``folder``: its manifest's, else the number its name starts with (a
    version without a manifest is still being written), else 0 (an older layout)."""
    try:
        version = json.loads((folder / MANIFEST).read_text()).get("version")
        if isinstance(version, int):
            return version
    except (OSError, ValueError):
        pass
    head = folder.name.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder``."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


class _HeldLock:
    """A flock on one version folder's lock file, held until ``release()`` (closing the fd
    releases the flock)."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder = folder
        self.name = folder.name
        self._fd: int | None = fd

    @property
    def files(self) -> Folder:
        """The version's folder, for reading and writing its files."""
        return Folder(str(self.folder))

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Pin(_HeldLock):
    """A shared lock on one version, held while it is read; released by ``release()`` or when
    garbage-collected."""

    def __init__(self, folder: Path, fd: int) -> None:
        super().__init__(folder, fd)
        self.version = version_number(folder)

    def __del__(self) -> None:
        self.release()


class WriterVersion(_HeldLock):
    """A version being written: exclusively locked until ``release()``."""

    def __init__(self, partition: PartitionVersions, folder: Path, version: int,
                 fd: int) -> None:
        super().__init__(folder, fd)
        self.partition = partition
        self.version = version

    def publish(self) -> bool:
        """See :meth:`PartitionVersions.publish`."""
        return self.partition.publish(self)

    def discard(self) -> None:
        """Remove this (unpublished or superseded) version; the lock is still ours."""
        if self._fd is not None:
            _remove(self.folder)
        self.release()


@dataclass
class Removed:
    """What a sweep removed: folder or link names and their bytes."""

    names: list[str]
    bytes: int = 0


def _remove(folder: Path) -> None:
    """Rename ``folder`` away (atomic: readers resolving it now fail and re-resolve), then
    delete it."""
    away = folder.with_name(f"{REMOVING}{folder.name}")
    os.rename(folder, away)
    shutil.rmtree(away, ignore_errors=True)


class PartitionVersions:
    """The versions of the partition whose link is ``link`` (``<asset>/<partition>``)."""

    def __init__(self, link: Path) -> None:
        self.link = link.absolute()
        self.asset_dir = self.link.parent
        self.folder = self.asset_dir / VERSIONS / self.link.name

    @property
    def location(self) -> str:
        return str(self.link)

    def current_name(self) -> str | None:
        """The current version's folder name (None: nothing published)."""
        current = self.current()
        return current.name if current else None

    @contextmanager
    def _locked(self, blocking: bool = True) -> Iterator[bool]:
        """The partition's lock (allocation, publishing, sweeping); yields whether it was
        taken (always, when ``blocking``)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = _lock_file(self.folder / PARTITION_LOCK)
        try:
            if blocking:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield True
            else:
                yield _try_lock(fd, fcntl.LOCK_EX)
        finally:
            os.close(fd)  # releases the lock

    def current(self) -> Path | None:
        """The version folder the link points to (None: nothing published)."""
        if not self.link.is_symlink():
            return None
        return Path(os.path.normpath(self.asset_dir / os.readlink(self.link)))

    def allocate(self, run_id: str) -> WriterVersion:
        """A new version folder, exclusively locked, numbered after every earlier one."""
        with self._locked():
            last_path = self.folder / LAST_VERSION
            try:
                previous = int(last_path.read_text().strip() or 0)
            except (OSError, ValueError):
                previous = 0
            current = self.current()
            if current is not None:
                previous = max(previous, version_number(current))
            version = max(previous + 1, time.time_ns())
            folder = self.folder / f"{version}-{run_id}"
            folder.mkdir()
            fd = _lock_file(folder / VERSION_LOCK)
            fcntl.flock(fd, fcntl.LOCK_EX)
            temp = last_path.with_name(f"{LAST_VERSION}.{version}")
            temp.write_text(str(version))
            os.replace(temp, last_path)
        return WriterVersion(self, folder, version, fd)

    def publish(self, written: WriterVersion) -> bool:
        """Point the link at ``written`` unless a newer version is already current (then
        False: ``written`` is superseded)."""
        with self._locked():
            if self.link.exists() and not self.link.is_symlink():
                raise StagingError(f"{self.link} exists and is not a staging link; remove it")
            current = self.current()
            if current is not None and current.is_dir() and \
                    version_number(current) >= written.version:
                return False
            temp = self.asset_dir / f".{self.link.name}{LINK_TEMP}{written.folder.name}"
            temp.unlink(missing_ok=True)
            temp.symlink_to(os.path.relpath(written.folder, self.asset_dir))
            os.replace(temp, self.link)
            return True

    def pin(self) -> Pin | None:
        """A shared lock on the current version (None: nothing published). A version removed
        between resolving the link and locking it is noticed and the link resolved again."""
        while True:
            folder = self.current()
            if folder is None:
                return None
            try:
                fd = _lock_file(folder / VERSION_LOCK)
            except FileNotFoundError:
                continue  # removed after we resolved the link: a newer one is current
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                still_there = os.stat(folder / VERSION_LOCK).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                still_there = False
            if still_there and (folder / MANIFEST).exists():
                return Pin(folder, fd)
            os.close(fd)
            if not still_there:
                continue
            return None  # a link to a version without a manifest: not a staged partition

    def sweep(self, blocking: bool = True) -> Removed:
        """Remove versions that are neither current nor locked, half-removed folders and
        temporary links left by killed writers."""
        removed = Removed([])
        if not self.folder.is_dir():
            return removed
        with self._locked(blocking) as taken:
            if not taken:
                return removed  # another writer is allocating or publishing: next time
            current = self.current()
            for entry in sorted(self.folder.iterdir()):
                if entry.name.startswith(REMOVING):
                    removed.bytes += folder_bytes(entry)
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.names.append(entry.name)
                    continue
                if entry.name.startswith(f"{LAST_VERSION}."):  # killed while allocating
                    entry.unlink(missing_ok=True)
                    continue
                if entry.name.startswith(".") or not entry.is_dir() or entry == current:
                    continue
                try:
                    fd = _lock_file(entry / VERSION_LOCK)
                except FileNotFoundError:
                    continue  # its writer removed it just now
                try:
                    if not _try_lock(fd, fcntl.LOCK_EX):
                        continue  # being written, or read
                    size = folder_bytes(entry)
                    _remove(entry)
                finally:
                    os.close(fd)
                removed.bytes += size
                removed.names.append(entry.name)
            for temp in self.asset_dir.glob(f".{_glob_escape(self.link.name)}{LINK_TEMP}*"):
                temp.unlink(missing_ok=True)
                removed.names.append(temp.name)
        return removed


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def sweep_asset(asset_dir: Path, log: Log | None = None) -> Removed:
    """Sweep every partition of the asset at ``asset_dir`` (skipping partitions whose lock
    another writer holds), logging what went."""
    total = Removed([])
    versions = asset_dir / VERSIONS
    if not versions.is_dir():
        return total
    for partition in sorted(versions.iterdir()):
        if not partition.is_dir():
            continue
        removed = PartitionVersions(asset_dir / partition.name).sweep(blocking=False)
        if removed.names and log is not None:
            log.info(f"staging {asset_dir.name} [{partition.name}]: removed "
                     f"{len(removed.names)} leftover(s), {removed.bytes:,} bytes: "
                     f"{', '.join(removed.names)}")
        total.names += removed.names
        total.bytes += removed.bytes
    return total
