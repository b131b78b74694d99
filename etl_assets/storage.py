"""Where etl_assets keeps data between steps and runs (staging, dead letters): a local folder or
any fsspec URL (``s3://``, ``gs://``, ``az://``...)."""

from __future__ import annotations

import re

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def url_scheme(url: str) -> str | None:
    """The scheme of ``url`` (``s3``, ``gs``...), None for a local path (``file://`` too)."""
    match = _SCHEME.match(url)
    if match is None or match.group(1).lower() in ("file", "local"):
        return None
    return match.group(1).lower()


def is_local_url(url: str) -> bool:
    """Whether ``url`` names a folder on this machine's disk (a path, or ``file://``)."""
    return url_scheme(url) is None
