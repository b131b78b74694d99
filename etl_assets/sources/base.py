"""What every source kind is made of: its spec model (``SourceSpecBase``: the cursor and how
new rows are cut into windows, shared by all kinds) and the ``Source`` it opens, which reads
the cursor's range and extracts one window as record batches.

A source kind is a package under ``etl_assets/sources/`` holding a ``spec.py`` (a subclass of
``SourceSpecBase`` with a ``kind`` literal) and a function that opens its ``Source``, plus one
line in :mod:`etl_assets.sources.registry`.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import Field, field_validator

from etl_assets.batches import RecordBatchStream
from etl_assets.code_versions import NotData
from etl_assets.governance import SourceGovernance
from etl_assets.settings import RetrySettings, Step, check_step
from etl_assets.watermark import Bound, Window

CursorType = Literal["timestamp", "integer"]


class SourceSpecBase(RetrySettings, SourceGovernance):
    """The settings every source has: its cursor, its key, how windows are cut, and
    governance (``SourceGovernance``)."""

    kind: str
    cursor: str = Field(description="timestamp or integer column; a window is lo < cursor <= hi")
    cursor_type: CursorType | None = Field(
        None, description="found from the source when omitted (required where it cannot be)"
    )
    # NotData: the staged rows do not depend on the key; a sink's version holds the key it
    # writes by (``SinkSetup.primary_key``).
    primary_key: NotData[list[str]] = Field(default_factory=list)
    # How windows are cut decides which partitions exist, not the rows of one (a partition's
    # rows are those of its window): NotData.
    lookback: NotData[Step] = Field(
        0, description="overlap of each new window with the previous one")
    min_window: NotData[Step] = Field(
        0, description="a window is cut when at least this wide ...")
    max_delay: NotData[str] = Field(
        "1h", description="... or when this long has passed since the last cut")
    max_window: NotData[Step | None] = Field(
        None, description="widest window (default 1d or 1,000,000 ids)"
    )
    start: NotData[str | int | None] = Field(
        None, description="exclusive lower bound of the first window (default: before the oldest)"
    )
    sensor_interval_seconds: NotData[int] = Field(
        60, gt=0, description="seconds between sensor ticks")
    sensor_running: NotData[bool] = Field(
        False, description="start the watermark sensor when loaded")

    _steps = field_validator("lookback", "min_window", "max_window")(check_step)

    @field_validator("max_delay")
    @classmethod
    def _duration(cls, value: str) -> str:
        check_step(value)
        return value

    def describe(self) -> str:
        """What the source reads, for descriptions and logs (never holds a secret)."""
        return self.kind

    def asset_kinds(self) -> set[str]:
        """The asset's kinds in the UI: the system the rows come from (``postgres``)."""
        return {self.kind}

    def code_of_functions(self, owner: str) -> list[str]:
        """The code of the functions the spec names that make the rows (the python kind's),
        for the code version; imported when the definitions are built, so a reference that
        does not import raises then, naming ``owner`` (``source 'x'``) and the field."""
        return []


class Source(Protocol):
    """An open source: its cursor's range and one window's rows. ``dispose`` releases it."""

    name: str
    spec: SourceSpecBase

    @property
    def cursor_type(self) -> CursorType:
        """``timestamp`` or ``integer``: the spec's, or found from the source."""
        ...

    def location(self) -> str:
        """Where the source is, masked (for logs)."""
        ...

    def cursor_range(self) -> tuple[Bound | None, Bound | None]:
        """The oldest and newest cursor values (None, None for no rows)."""
        ...

    def reader(self) -> str:
        """Which reader extracts the windows (for the run's log)."""
        ...

    def extract(self, window: Window) -> RecordBatchStream:
        """The rows whose cursor is in ``window`` (lo < cursor <= hi), in batches; the
        stream's ``notes`` count what the read met (values read as null...), complete once
        it is read to its end."""
        ...

    def dispose(self) -> None:
        """Release connections."""
        ...
