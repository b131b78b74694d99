"""One staged partition's versions, on local disk (:mod:`etl_assets.staging.versions`: a link
swapped atomically, flocks) or on an object store (:mod:`etl_assets.staging.object_versions`: a
pointer object written last, leases). The staging IO manager writes and reads through this
protocol, whichever the root is."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from etl_assets.staging.object_versions import ObjectPartitionVersions
from etl_assets.staging.versions import PartitionVersions, Removed
from etl_assets.storage import Folder


class HeldVersion(Protocol):
    """A version held by its writer or a reader until ``release()``."""

    version: int
    name: str

    @property
    def files(self) -> Folder: ...

    def release(self) -> None: ...


class WrittenVersion(HeldVersion, Protocol):
    """A version being written."""

    def publish(self) -> bool:
        """Make it current unless a newer version is (then False: it is superseded)."""
        ...

    def discard(self) -> None: ...


class StagedPartition(Protocol):
    """The versions of one partition of one asset."""

    @property
    def location(self) -> str:
        """Where the partition is, for messages (a path, or a masked URL)."""
        ...

    def current_name(self) -> str | None: ...

    def allocate(self, run_id: str) -> WrittenVersion: ...

    def pin(self) -> HeldVersion | None: ...

    def sweep(self, blocking: bool = True) -> Removed: ...


def staged_partition(root: Folder, asset_path: list[str], partition: str) -> StagedPartition:
    """The partition ``partition`` of the asset at ``asset_path`` under staging ``root``."""
    name = "/".join([*asset_path, partition])
    if root.is_local:
        return PartitionVersions(Path(root.path(name)))
    return ObjectPartitionVersions(root.child(name))

