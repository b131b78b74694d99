"""The unit that moves between stages: a one-shot stream of Arrow record batches."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from etl_assets.raw_pages import RawPages

BatchTransform = Callable[[pa.RecordBatch], "pa.RecordBatch | pa.Table | pd.DataFrame"]


class StreamNotes:
    """What reading a stream met that its rows do not show, counted as the batches are read
    (complete once the stream is read to its end): the values read as null because no type
    holds them, by column (``zero_dates_as_null``: MySQL's zero dates, ``0000-00-00`` or a
    zero month or day). The staging IO manager logs them as warnings and records them in the
    partition's metadata. ``what`` names where the rows come from (``source 'x' window
    (0, 10]``). ``raw_pages``: what the source received, when it keeps it (an HTTP source's
    ``keep_raw``), which the staging writer keeps inside the version it writes
    (:mod:`etl_assets.raw_pages`). Safe to count into from several threads (parallel
    reads)."""

    def __init__(self, what: str = "", raw_pages: RawPages | None = None) -> None:
        self.what = what
        self.zero_dates_as_null: dict[str, int] = {}
        self.raw_pages = raw_pages
        self._lock = threading.Lock()

    def count_zero_dates(self, column: str, count: int) -> None:
        """``count`` more zero dates of ``column`` read as null."""
        if count:
            with self._lock:
                self.zero_dates_as_null[column] = self.zero_dates_as_null.get(column, 0) + count

    def metadata(self) -> dict[str, object]:
        """The notes as a materialization's metadata (nothing when there is nothing to say)."""
        found: dict[str, object] = {}
        if self.zero_dates_as_null:
            found["zero_dates_as_null"] = dict(sorted(self.zero_dates_as_null.items()))
        if self.raw_pages is not None:
            found["raw_pages"] = self.raw_pages.pages
        return found

    def warnings(self) -> list[str]:
        """One line a column with zero dates read as null, naming where and how many."""
        where = f"{self.what}: " if self.what else ""
        return [f"{where}column {column}: {count:,} zero date{'s' if count > 1 else ''} "
                f"(0000-00-00, or a zero month or day) read as null"
                for column, count in sorted(self.zero_dates_as_null.items())]


class RecordBatchStream:
    """A stream of ``pyarrow.RecordBatch`` with a known schema, consumed once.

    Assets return this instead of a generator (Dagster reads a returned generator as a
    stream of events); IO managers write it batch by batch, so a window never sits in memory.
    ``version``: the staged version the rows come from (strictly increasing per partition, see
    :mod:`etl_assets.staging.io_manager`); a higher version is a later extraction of the
    window. None when the rows do not come from staging. ``notes``: what reading the rows met
    (:class:`StreamNotes`; a source's extraction fills them, a wrapper of a stream passes its
    stream's on).
    """

    def __init__(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch],
                 version: int | None = None, notes: StreamNotes | None = None) -> None:
        self.schema = schema
        self._batches = iter(batches)
        self._consumed = False
        self.version = version
        self.notes = notes if notes is not None else StreamNotes()

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        if self._consumed:
            raise RuntimeError("a RecordBatchStream can be read only once")
        self._consumed = True
        return self._batches

    def map(self, transform: BatchTransform) -> RecordBatchStream:
        """Apply ``transform`` to every batch.

        The output schema is what the transform makes of an empty batch of the input schema,
        so it is known before the first row is read; every output batch is cast to it.
        """
        out_schema = as_record_batch(transform(empty_batch(self.schema))).schema

        def mapped() -> Iterator[pa.RecordBatch]:
            for batch in self:
                out = as_record_batch(transform(batch), out_schema)
                if out.num_rows:
                    yield out

        return RecordBatchStream(out_schema, mapped(), self.version, self.notes)


def rebatched(batches: Iterable[pa.RecordBatch], schema: pa.Schema,
              rows: int) -> Iterator[pa.RecordBatch]:
    """Batches of exactly ``rows`` rows (the last one shorter) from batches of any size."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        pending.append(batch)
        held += batch.num_rows
        while held >= rows:
            table = pa.Table.from_batches(pending, schema)
            yield table.slice(0, rows).combine_chunks().to_batches()[0]
            rest = table.slice(rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending, schema).combine_chunks().to_batches()[0]


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    """A zero-row batch of ``schema``."""
    return pa.RecordBatch.from_pylist([], schema)


def as_record_batch(data: pa.RecordBatch | pa.Table | pd.DataFrame,
                    schema: pa.Schema | None = None) -> pa.RecordBatch:
    """Turn a transform's output into one record batch, cast to ``schema`` when given."""
    if isinstance(data, pd.DataFrame):
        table = pa.Table.from_pandas(data, schema=schema, preserve_index=False)
    elif isinstance(data, pa.RecordBatch):
        table = pa.Table.from_batches([data])
    elif isinstance(data, pa.Table):
        table = data
    else:
        raise TypeError(
            f"a transform must return a pyarrow RecordBatch, Table or pandas DataFrame, "
            f"not {type(data).__name__}"
        )
    if schema is not None and not table.schema.equals(schema):
        table = table.select(schema.names).cast(schema)
    if table.num_rows == 0:
        return empty_batch(table.schema)
    return table.combine_chunks().to_batches(max_chunksize=table.num_rows)[0]


def last_row_per_key(batch: pa.RecordBatch, keys: Sequence[str],
                     newest_by: str | None = None) -> pa.RecordBatch:
    """``batch`` with one row per key, in their order: the last row of each key, or with
    ``newest_by`` the one with the greatest value of that column (null is the oldest; the
    last of equal ones)."""
    if batch.num_rows < 2:
        return batch
    if len(keys) == 1 and pc.count_distinct(batch.column(keys[0]), mode="all").as_py() == \
            batch.num_rows:
        return batch
    columns = list(dict.fromkeys([*keys, *([newest_by] if newest_by else [])]))
    table = pa.Table.from_batches([batch.select(columns)])
    table = table.append_column("__row", pa.array(np.arange(batch.num_rows, dtype=np.int64)))
    winners = winning_rows(table, keys, "__row", newest_by)
    if len(winners) == batch.num_rows:
        return batch
    return batch.take(winners)


def winning_rows(table: pa.Table, keys: Sequence[str], row: str,
                 newest_by: str | None = None) -> pa.Array:
    """The ``row`` numbers that win, one per key of ``table`` (sorted): the greatest ``row``
    of each key, or with ``newest_by`` the one whose ``newest_by`` value is the greatest
    (null oldest; the greatest ``row`` among equals)."""
    if newest_by is not None:
        order = pc.sort_indices(table, sort_keys=[(newest_by, "ascending", "at_start"),
                                                  (row, "ascending", "at_end")])
        table = table.take(order)
        grouped = table.group_by(list(keys), use_threads=False).aggregate([(row, "last")])
        numbers = grouped[f"{row}_last"]
    else:
        grouped = table.group_by(list(keys), use_threads=False).aggregate([(row, "max")])
        numbers = grouped[f"{row}_max"]
    return pc.take(numbers, pc.sort_indices(numbers)).combine_chunks()


def with_last(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[pa.RecordBatch, bool]]:
    """Each batch with whether it is the last one (one batch of look-ahead)."""
    iterator = iter(batches)
    previous = next(iterator, None)
    for batch in iterator:
        assert previous is not None
        yield previous, False
        previous = batch
    if previous is not None:
        yield previous, True
