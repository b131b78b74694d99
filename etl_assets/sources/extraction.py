"""One window of a source, as a stream that can be read again from the window's beginning.

A transient error (:func:`etl_assets.retries.is_transient`: the source database restarting, a
reset connection...) while starting the extraction is retried here; one while reading it is
retried by whoever writes the stream, through :meth:`Extraction.retrying` (the staging IO
manager discards the partial version and writes a fresh one). Both count against the source's
one :class:`~etl_assets.retries.RetryPolicy`, and each retry is logged with the source, the
window, the cause and the attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from etl_assets.batches import RecordBatchStream
from etl_assets.errors import TransientError
from etl_assets.logs import Log
from etl_assets.retries import RetryPolicy, describe, is_transient, retry_after_of

T = TypeVar("T")


class Extraction(RecordBatchStream):
    """The batches of ``start()``, a fresh extraction of one window each time it is called.

    ``what`` names the source and the window in messages (``source 'x' window 0..100``).
    """

    def __init__(self, what: str, start: Callable[[], RecordBatchStream], policy: RetryPolicy,
                 log: Log | None = None) -> None:
        self.what = what
        self.policy = policy
        self.log = log
        self.failures = 0  # transient failures so far
        self._start = start
        first = self._started()
        super().__init__(first.schema, first, first.version, first.notes)

    def retrying(self, write: Callable[[RecordBatchStream], T]) -> T:
        """``write(stream)``, with this extraction first and, after each transient error, with
        a fresh one (``write`` must leave nothing of a failed attempt behind)."""
        stream: RecordBatchStream = self
        while True:
            try:
                return write(stream)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._back_off(exc)
            stream = self._started()

    def _started(self) -> RecordBatchStream:
        while True:
            try:
                return self._start()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._back_off(exc)

    def _back_off(self, error: Exception) -> None:
        """Wait before the next attempt, or raise when no retry is left."""
        attempts = self.policy.retries + 1
        if self.failures >= self.policy.retries:
            raise TransientError(f"{self.what}: {describe(error)} (gave up after {attempts} "
                                 f"attempt{'s' if attempts > 1 else ''})") from error
        wait = self.policy.wait_s(self.failures, retry_after_of(error))
        self.failures += 1
        if self.log is not None:
            self.log.warning(f"{self.what}: {describe(error)}; extracting the window again from "
                             f"its beginning in {wait:.1f} s (attempt {self.failures + 1} of "
                             f"{attempts})")
        time.sleep(wait)
