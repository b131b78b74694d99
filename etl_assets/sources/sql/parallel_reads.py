"""``parallel_reads: N``: one window read as consecutive slices of its cursor range by N
connections at once, the slices' rows handed on in cursor order.

Each slice is read by a thread into a queue of at most ``QUEUED_BATCHES`` batches; while the
first slice is handed on, the next N-1 are read ahead. Memory is bounded by N queues whatever
the window's rows or their skew. The drivers decode outside the GIL, so the threads overlap.
"""

from __future__ import annotations

import math
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import datetime, timedelta
from itertools import pairwise

import pyarrow as pa

from etl_assets.watermark import Bound

QUEUED_BATCHES = 4
"""Driver batches a slice's reader may hold before the slice is handed on."""

_DONE = object()


def slices(lo: Bound, hi: Bound, count: int) -> list[tuple[Bound, Bound]]:
    """``(lo, hi]`` cut into at most ``count`` consecutive slices of equal width (integer
    cursors by whole numbers, timestamps by whole microseconds)."""
    if isinstance(lo, datetime) and isinstance(hi, datetime):
        width = (hi - lo) / count
        step = max(width, timedelta(microseconds=1))
        cuts: list[Bound] = [lo + step * i for i in range(1, count) if lo + step * i < hi]
    else:
        assert isinstance(lo, int) and isinstance(hi, int)
        step_ids = max(math.ceil((hi - lo) / count), 1)
        cuts = [*range(lo + step_ids, hi, step_ids)][:count - 1]
    bounds = [lo, *cuts, hi]
    return list(pairwise(bounds))


def read_in_parallel(read: Callable[[Bound, Bound], Iterator[pa.RecordBatch]],
                     parts: list[tuple[Bound, Bound]],
                     connections: int) -> Iterator[pa.RecordBatch]:
    """The batches of ``read(lo, hi)`` for each of ``parts`` in turn, at most
    ``connections`` of them being read at once."""
    stop = threading.Event()

    def fill(part: tuple[Bound, Bound], out: queue.Queue[object]) -> None:
        try:
            with closing(read(*part)) as batches:  # type: ignore[type-var]
                for batch in batches:
                    if not _put(out, batch, stop):
                        return
            _put(out, _DONE, stop)
        except BaseException as exc:  # handed to the reading thread, which raises it
            _put(out, exc, stop)

    with ThreadPoolExecutor(connections, thread_name_prefix="parallel-read") as pool:
        pending: deque[queue.Queue[object]] = deque()
        try:
            for part in parts:
                out: queue.Queue[object] = queue.Queue(QUEUED_BATCHES)
                pool.submit(fill, part, out)
                pending.append(out)
                if len(pending) < connections:
                    continue
                yield from _drain(pending.popleft())
            while pending:
                yield from _drain(pending.popleft())
        finally:
            stop.set()


def _drain(out: queue.Queue[object]) -> Iterator[pa.RecordBatch]:
    while True:
        item = out.get()
        if item is _DONE:
            return
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, pa.RecordBatch)
        yield item


def _put(out: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Put ``item``, waiting for room; False when the reading side has stopped."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False
