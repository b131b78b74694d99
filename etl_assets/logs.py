"""The logger every part of etl_assets writes to."""

from __future__ import annotations

from typing import Protocol


class Log(Protocol):
    """Dagster's ``context.log`` (a ``DagsterLogManager``), a ``logging.Logger``, or a
    :class:`~etl_assets.secrets.MaskedLog` of either; a message is one line of text."""

    def debug(self, msg: str) -> None: ...
    def info(self, msg: str) -> None: ...
    def warning(self, msg: str) -> None: ...
    def error(self, msg: str) -> None: ...
