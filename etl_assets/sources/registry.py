"""Every source kind: its ``kind`` and its spec model. Adding a kind is a package under
``etl_assets/sources/`` and one line here."""

from __future__ import annotations

from etl_assets.sources.base import SourceSpecBase
from etl_assets.sources.sql.spec import SqlSourceSpec

DEFAULT_SOURCE_KIND = "sql"
"""The kind of a source whose spec gives none."""

SOURCE_KINDS: dict[str, type[SourceSpecBase]] = {
    "sql": SqlSourceSpec,
}
