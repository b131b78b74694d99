"""The unit that moves between stages: a one-shot stream of Arrow record batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

BatchTransform = Callable[[pa.RecordBatch], "pa.RecordBatch | pa.Table | pd.DataFrame"]


class RecordBatchStream:
    """A stream of ``pyarrow.RecordBatch`` with a known schema, consumed once.

    Assets return this instead of a generator (Dagster reads a returned generator as a
    stream of events); IO managers write it batch by batch, so a window never sits in memory.
    """

    def __init__(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> None:
        self.schema = schema
        self._batches = iter(batches)
        self._consumed = False

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

        return RecordBatchStream(out_schema, mapped())


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


def last_row_per_key(batch: pa.RecordBatch, keys: Sequence[str]) -> pa.RecordBatch:
    """``batch`` without earlier rows whose key repeats later in it (the last row wins)."""
    if batch.num_rows < 2:
        return batch
    if len(keys) == 1 and pc.count_distinct(batch.column(keys[0]), mode="all").as_py() == \
            batch.num_rows:
        return batch
    table = pa.Table.from_batches([batch.select(list(keys))])
    table = table.append_column("__row", pa.array(np.arange(batch.num_rows, dtype=np.int64)))
    last = table.group_by(list(keys), use_threads=False).aggregate([("__row", "max")])
    if last.num_rows == batch.num_rows:
        return batch
    keep = pc.take(last["__row_max"], pc.sort_indices(last["__row_max"])).combine_chunks()
    return batch.take(keep)
