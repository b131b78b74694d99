"""Where the file sink writes: a :class:`~etl_assets.storage.Folder` (a local folder or any
fsspec URL), with the staged version each file was written from.

Every file appears whole or not at all. Locally it is written to a temp name in the same
folder and renamed (``os.replace``). On an object store the file is written to a local temp
file, uploaded under a temp key in the target (``.tmp/``) and then moved (a server-side copy,
then the temp key is deleted).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import uuid
from collections.abc import Iterator
from typing import IO

from etl_assets.storage import Folder

TEMP_FOLDER = ".tmp"
# ``.versions/<file>.json``: the staged version a file was written from (see FileSink).
VERSIONS_FOLDER = ".versions"


class FileTarget(Folder):
    """The file sink's folder at ``url`` (a local path, ``${VAR}`` expanded, or an fsspec URL),
    with the staged version each file was written from."""

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
    def writing(self, name: str, temp_dir: str | None = None, *,
                in_place: bool = False) -> Iterator[IO[bytes]]:
        """A file to write ``name`` into; it replaces ``name`` when the block ends without an
        error, and is removed when it raises. An object-store file is prepared in ``temp_dir``
        (default: the system's temp folder) and uploaded when whole, so a retry of the upload
        does not write it again."""
        if self.is_local:
            with super().writing(name, in_place=in_place) as out:
                yield out
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
