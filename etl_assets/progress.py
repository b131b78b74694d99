"""Progress lines for long work: rows so far and rows per second, at most every few seconds."""

from __future__ import annotations

import time

from etl_assets.logs import Log


class ProgressLog:
    """Counts rows and logs ``label: N rows (R rows/s)`` every ``every_seconds``."""

    def __init__(self, log: Log, label: str, every_seconds: float = 10.0,
                 done_line: bool = True) -> None:
        """``done_line`` False: ``done`` logs nothing (one window of a range run, whose
        progress ``WindowsProgress`` logs)."""
        self.log = log
        self.label = label
        self.every = every_seconds
        self.done_line = done_line
        self.rows = 0
        self.batches = 0
        self.started = time.monotonic()
        self._last_log = self.started

    def add(self, rows: int) -> None:
        self.rows += rows
        self.batches += 1
        now = time.monotonic()
        if now - self._last_log >= self.every:
            self._last_log = now
            self.log.info(f"{self.label}: {self.rows:,} rows in {self.batches} batches "
                          f"({self.rows_per_second:,.0f} rows/s)")

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def done(self) -> None:
        if not self.done_line:
            return
        self.log.info(f"{self.label}: done, {self.rows:,} rows in {self.batches} batches, "
                      f"{self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s)")


class WindowsProgress:
    """Progress of a run over many windows (a single-run backfill): ``label: K of N windows
    <verb>, R rows (r rows/s)`` every ``every_seconds`` and when the last is done. Each
    window's numbers are in its materialization; a line per window would cost an event each."""

    def __init__(self, log: Log, label: str, verb: str, windows: int,
                 every_seconds: float = 10.0) -> None:
        self.log = log
        self.label = label
        self.verb = verb
        self.windows = windows
        self.every = every_seconds
        self.done = 0
        self.rows = 0
        self.started = time.monotonic()
        self._last_log = self.started

    def add(self, rows: int) -> None:
        """One more window done, with ``rows`` rows."""
        self.done += 1
        self.rows += rows
        now = time.monotonic()
        if now - self._last_log >= self.every or self.done == self.windows:
            self._last_log = now
            seconds = now - self.started
            self.log.info(f"{self.label}: {self.done} of {self.windows} windows {self.verb}, "
                          f"{self.rows:,} rows, {seconds:.1f} s "
                          f"({self.rows / seconds if seconds > 0 else 0:,.0f} rows/s)")
