"""A source's pages as it received them, kept beside the rows staged from them (an HTTP
source's ``keep_raw``).

The staging writer hands the pages the folder of the version it writes (``raw/`` inside it)
before it reads the stream's first batch; from then on each page is written there as it
arrives. The pages are so part of that version, atomically: published with its manifest,
removed with it when the attempt fails or a later version supersedes it, swept with it when a
killed run left it. Pages that arrive before the folder is known (a source reads its first page
to learn the window's schema) wait in memory: a few at most.

``raw/page-NNNNN.<suffix>`` holds each page's body as received; ``raw/pages.jsonl``, written
when the pages end (an object store cannot append), says, a line a page, which file came from
where (the URL, masked).
"""

from __future__ import annotations

import json

from etl_assets.storage import Folder

RAW_FOLDER = "raw"
INDEX = "pages.jsonl"
_MAX_WAITING = 8  # pages before the folder is known: a source reads one to learn the schema


class RawPages:
    """The pages of one extraction of a window, written into a staged version's ``raw/``."""

    def __init__(self, suffix: str = ".json") -> None:
        self.suffix = suffix
        self.pages = 0
        self.bytes = 0
        self._folder: Folder | None = None
        self._waiting: list[tuple[bytes, str]] = []
        self._index: list[str] = []

    def add(self, body: bytes, source: str) -> None:
        """One more page: its ``body`` as received and where it came from (masked)."""
        if self._folder is None:
            if len(self._waiting) >= _MAX_WAITING:
                raise RuntimeError(f"{_MAX_WAITING} raw pages read before the staging writer "
                                   f"gave them a folder: the stream is read by something "
                                   f"else than the staging writer")
            self._waiting.append((body, source))
            return
        self._write(body, source)

    def write_into(self, folder: Folder) -> None:
        """Write the pages into ``folder``, those waiting first, later ones as they arrive."""
        self._folder = folder
        waiting, self._waiting = self._waiting, []
        for body, source in waiting:
            self._write(body, source)

    def _write(self, body: bytes, source: str) -> None:
        assert self._folder is not None
        self.pages += 1
        self.bytes += len(body)
        name = f"page-{self.pages:05d}{self.suffix}"
        self._folder.write_bytes(name, body)
        self._index.append(json.dumps({"file": name, "url": source, "bytes": len(body)}))

    def finish(self) -> None:
        """Write the index of the pages (after the last one, before the version's manifest)."""
        if self._folder is not None:
            self._folder.write_bytes(INDEX, "".join(f"{line}\n" for line in self._index)
                                     .encode())
