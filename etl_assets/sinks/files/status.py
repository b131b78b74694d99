"""What a file sink's folder holds, for ``etl-assets status``: files, rows and bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from etl_assets.sinks.files.formats import file_format
from etl_assets.sinks.files.target import FileTarget


@dataclass(frozen=True)
class FolderStatus:
    """``files`` files of the sink's format under ``location``: ``rows`` rows, ``bytes``."""

    location: str
    files: int
    rows: int
    bytes: int


def folder_status(path: str, format: str,
                  storage_options: dict[str, Any] | None = None) -> FolderStatus:
    """Count the rows of every file of ``format`` under ``path``: parquet from the footers,
    JSON lines and CSV by reading them (CSV rows: lines after the header, so a value holding a
    newline counts twice)."""
    target = FileTarget(path, storage_options)
    fmt = file_format(format)
    rows = size = 0
    names = target.names(suffix=fmt.suffix)
    for name in names:
        size += target.size(name)
        with target.open_read(name) as handle:
            if fmt.name == "parquet":
                rows += pq.ParquetFile(handle).metadata.num_rows
            else:
                lines = sum(1 for line in handle if line.strip())
                rows += lines - 1 if fmt.name == "csv" and lines else lines
    return FolderStatus(target.display, len(names), rows, size)
