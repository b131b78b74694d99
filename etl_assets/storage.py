"""Where etl_assets keeps data between steps and runs (staging, dead letters) and where the file
sink writes: a local folder or any fsspec URL (``s3://``, ``gs://``, ``az://``...).

A :class:`Folder` is one such place. Every file in it appears whole or not at all: locally a
file is written to a temp name beside it and renamed; an object store makes an upload visible
only when it completes (a multipart upload that fails is aborted), so objects are written in
place. Credentials never pass through here: they come from the environment or the filesystem's
own configuration; ``storage_options`` are for endpoints, regions and the like.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.registry import known_implementations
from pydantic import Field, field_validator

from etl_assets.code_versions import NotData
from etl_assets.home import expand_vars
from etl_assets.secrets import mask_url
from etl_assets.settings import SECRET_OPTION, StrictModel, secrets_from_env_only, without_secrets

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# The pip extra of etl_assets that brings each object store's fsspec package.
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
          "abfss": "azure"}
STORAGE_OPTIONS_DESCRIPTION = ("fsspec options such as endpoint_url or region; credentials only "
                               "through the environment")


def url_scheme(url: str) -> str | None:
    """The scheme of ``url`` (``s3``, ``gs``...), None for a local path (``file://`` too)."""
    match = _SCHEME.match(url)
    if match is None or match.group(1).lower() in ("file", "local"):
        return None
    return match.group(1).lower()


def is_local_url(url: str) -> bool:
    """Whether ``url`` names a folder on this machine's disk (a path, or ``file://``)."""
    return url_scheme(url) is None


def check_storage_url(url: str) -> str:
    """``url`` when this installation can open it; else a ValueError naming the package (and
    the etl_assets extra) to install, or saying that fsspec knows no such scheme."""
    scheme = url_scheme(url)
    if scheme is None:
        return url
    implementation = known_implementations.get(scheme)
    if implementation is None:
        try:
            fsspec.get_filesystem_class(scheme)  # registered by an installed package
        except (ValueError, ImportError):
            raise ValueError(f"{mask_url(url)}: fsspec knows no filesystem for {scheme}://") \
                from None
        return url
    module = implementation["class"].split(".", 1)[0]
    if importlib.util.find_spec(module) is None:
        extra = EXTRAS.get(scheme)
        install = f"pip install 'etl_assets[{extra}]'" if extra else f"pip install {module}"
        raise ValueError(f"{scheme}:// needs the package {module}, which is not installed "
                         f"({install})")
    return url


def storage_options_without_secrets(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` unless an option's name looks like a secret (a ValueError naming it)."""
    return without_secrets(value, SECRET_OPTION, "look like secrets; give credentials through "
                           "the environment (e.g. AWS_ACCESS_KEY_ID), not the spec")


def absolute_root(url: str) -> str:
    """``url`` unless it is a relative local path, which would name another folder in each
    working directory a step runs in (a ValueError saying what to give instead)."""
    if is_local_url(url) and not url.startswith(("/", "${", "~", "file://")):
        raise ValueError(f"{url!r} is relative: each process would find it in its own working "
                         f"directory; give an absolute path, ${{ETL_ASSETS_HOME}}/..., or an "
                         f"object store URL (s3://...)")
    return url


class StorageLocation(StrictModel):
    """A folder of etl_assets' own (``root``): a local path or an fsspec URL."""

    root: NotData[str]
    storage_options: NotData[dict[str, Any]] = Field(
        default_factory=dict, description=STORAGE_OPTIONS_DESCRIPTION)

    _root_secrets = field_validator("root")(secrets_from_env_only)
    _root_scheme = field_validator("root")(check_storage_url)
    _root_absolute = field_validator("root")(absolute_root)
    _options = field_validator("storage_options")(storage_options_without_secrets)

    def folder(self) -> Folder:
        """The folder, its ``${VAR}`` expanded now."""
        return Folder(self.root, self.storage_options)


class Folder:
    """A folder at ``url`` (a local path, ``${VAR}`` expanded, or an fsspec URL). Names inside
    it are ``/``-separated relative paths."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = os.path.expanduser(expand_vars(url)).rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.root = str(Path(root).absolute()) if self.is_local else root.rstrip("/")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display})"

    @property
    def display(self) -> str:
        """The URL with its secrets masked (see :mod:`etl_assets.secrets`)."""
        return mask_url(self.url)

    def path(self, name: str) -> str:
        """``name``'s path in the filesystem (for ``self.fs``)."""
        return f"{self.root}/{name}" if name else self.root

    def location(self, name: str) -> str:
        """``name`` as a URL a user can open (a local path for local folders)."""
        return self.path(name) if self.is_local else f"{self.display}/{name}"

    def child(self, name: str) -> Folder:
        """The folder ``name`` inside this one."""
        inner = Folder.__new__(Folder)
        inner.url = f"{self.url}/{name}"
        inner.storage_options = self.storage_options
        inner.fs, inner.is_local, inner.root = self.fs, self.is_local, self.path(name)
        return inner

    def exists(self, name: str) -> bool:
        return bool(self.fs.exists(self.path(name)))

    def size(self, name: str) -> int:
        return int(self.fs.size(self.path(name)))

    def names(self, name: str = "", suffix: str = "", *, folders: bool = False) -> list[str]:
        """What is directly in folder ``name`` (files, or folders when ``folders``) ending in
        ``suffix``, sorted; hidden names (``.``) left out."""
        try:
            found = self.fs.ls(self.path(name), detail=True, refresh=True)  # not a cached listing
        except (FileNotFoundError, NotADirectoryError):
            return []
        kind = "directory" if folders else "file"
        names = [str(entry["name"]).rstrip("/").rsplit("/", 1)[-1] for entry in found
                 if entry.get("type") == kind]
        return sorted(n for n in names if n.endswith(suffix) and not n.startswith("."))

    def read_bytes(self, name: str) -> bytes:
        """The content of ``name`` now (FileNotFoundError when it is missing): one GET on an
        object store, never a cached listing."""
        return bytes(self.fs.cat_file(self.path(name)))

    @contextlib.contextmanager
    def open_read(self, name: str) -> Iterator[BinaryIO]:
        with self.fs.open(self.path(name), "rb") as handle:
            yield handle

    def remove(self, name: str) -> None:
        self.fs.rm(self.path(name))

    def remove_tree(self, name: str) -> None:
        """Remove folder ``name`` and everything in it (nothing when it is missing)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(name), recursive=True)

    def write_bytes(self, name: str, data: bytes) -> None:
        """Put ``data`` at ``name``, whole or not at all."""
        with self.writing(name) as out:
            out.write(data)

    @contextlib.contextmanager
    def writing(self, name: str, *, in_place: bool = False) -> Iterator[IO[bytes]]:
        """A file to write ``name`` into; ``name`` appears, whole, when the block ends without
        an error, and not at all when it raises. ``in_place``: a local file is written under
        its own name, not a temp name renamed and synced (for files that something written
        after them makes visible, such as a staged version's manifest); it is removed when the
        block raises."""
        if self.is_local:
            final = Path(self.path(name))
            final.parent.mkdir(parents=True, exist_ok=True)
            temp = final if in_place else \
                final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
            done = False
            try:
                with open(temp, "wb") as out:
                    yield out
                    if not in_place:
                        out.flush()
                        os.fsync(out.fileno())
                if not in_place:
                    os.replace(temp, final)
                done = True
            finally:
                if not done or not in_place:
                    temp.unlink(missing_ok=True)
            return
        out = self.fs.open(self.path(name), "wb")
        try:
            yield out
        except BaseException:
            with contextlib.suppress(Exception):
                out.discard()  # aborts a multipart upload: nothing becomes visible
                out.closed = True  # and nothing is uploaded when the handle is collected
            raise
        out.close()
