"""Where the file sink writes: a local folder or any fsspec URL (``s3://``, ``gs://``, ...).

Every file appears whole or not at all. Locally it is written to a temp name in the same
folder and renamed (``os.replace``). Object stores have no rename: the file is written to a
local temp file, uploaded under a temp key in the target (``.tmp/``) and then moved (a
server-side copy, then the temp key is deleted), so readers of the final key never see a
partial object. Secrets never appear here: credentials come from the environment or the
filesystem's own config; ``storage_options`` are for endpoints, regions and the like.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from etl_assets.home import expand_vars
from etl_assets.secrets import mask_url

TEMP_FOLDER = ".tmp"
# ``.versions/<file>.json``: the staged version a file was written from (see FileSink).
VERSIONS_FOLDER = ".versions"


class FileTarget:
    """A folder of files at ``url`` (a local path, ``${VAR}`` expanded, or an fsspec URL)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = expand_vars(url).rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.root = str(Path(root).absolute()) if self.is_local else root.rstrip("/")

    def __repr__(self) -> str:
        return f"FileTarget({self.display})"

    @property
    def display(self) -> str:
        """The URL with its secrets masked (see :mod:`etl_assets.secrets`)."""
        return mask_url(self.url)

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def location(self, name: str) -> str:
        """``name`` as a URL a user can open (a local path for local targets)."""
        return self.path(name) if self.is_local else f"{self.display}/{name}"

    def exists(self, name: str) -> bool:
        return bool(self.fs.exists(self.path(name)))

    def size(self, name: str) -> int:
        return int(self.fs.size(self.path(name)))

    def names(self, suffix: str = "") -> list[str]:
        """Files directly in the folder ending in ``suffix``, sorted; temp files left out."""
        try:
            found = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        names = [str(p).rstrip("/").rsplit("/", 1)[-1] for p in found]
        return sorted(n for n in names if n.endswith(suffix) and not n.startswith("."))

    @contextlib.contextmanager
    def open_read(self, name: str) -> Iterator[BinaryIO]:
        with self.fs.open(self.path(name), "rb") as handle:
            yield handle

    def remove(self, name: str) -> None:
        self.fs.rm(self.path(name))

    def version(self, name: str) -> int | None:
        """The staged version ``name`` was last written from (None: not recorded)."""
        record = f"{VERSIONS_FOLDER}/{name}.json"
        try:
            with self.open_read(record) as handle:
                value = json.loads(handle.read()).get("version")
        except FileNotFoundError:
            return None
        return value if isinstance(value, int) else None

    def record_version(self, name: str, version: int | None) -> None:
        """Record that ``name`` is being written from staged ``version`` (None: unknown, the
        record is removed)."""
        record = f"{VERSIONS_FOLDER}/{name}.json"
        if version is None:
            if self.exists(record):
                self.remove(record)
            return
        with self.writing(record) as out:
            out.write(json.dumps({"version": version}).encode())

    @contextlib.contextmanager
    def writing(self, name: str, temp_dir: str | None = None) -> Iterator[IO[bytes]]:
        """A file to write ``name`` into; it replaces ``name`` when the block ends without an
        error, and is removed when it raises. ``temp_dir``: where object-store uploads are
        prepared (default: the system's temp folder)."""
        if self.is_local:
            final = Path(self.path(name))
            final.parent.mkdir(parents=True, exist_ok=True)
            temp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                with open(temp, "wb") as out:
                    yield out
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, final)
            finally:
                temp.unlink(missing_ok=True)
            return
        with tempfile.NamedTemporaryFile(prefix="etl_assets_upload_", dir=temp_dir) as out:
            yield out
            out.flush()
            self.upload(out.name, name)

    def upload(self, local_file: str, name: str) -> None:
        """Put ``local_file`` at ``name``: to a temp key first, then moved into place."""
        temp = self.path(f"{TEMP_FOLDER}/{name}.{uuid.uuid4().hex[:8]}")
        try:
            self.fs.put_file(local_file, temp)
            self.fs.mv(temp, self.path(name))
        finally:
            with contextlib.suppress(Exception):
                if self.fs.exists(temp):
                    self.fs.rm(temp)
        self.fs.invalidate_cache(self.root)
