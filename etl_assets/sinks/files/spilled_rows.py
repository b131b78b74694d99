"""One run's rows spilled to a local parquet file, so they can be read again (to merge by key,
to drop duplicates, to retry an upload, to keep as dead letters) without holding them in memory.

Only the key columns (with the cursor, under the newest-wins rule) and a row number are ever
read back whole: to find, per key, the row that wins.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from etl_assets.batches import winning_rows

ROW = "__etl_row"


class SpilledRows:
    """Spill ``schema``'s batches with ``add``, ``finish``, then read them back any number of
    times. ``key``: the columns that identify a row (checked non-null); ``newest_by``: the
    column whose greatest value wins among a key's rows (else the last row wins); ``where``
    names the sink in errors. Use as a context manager: the spill file is deleted on exit."""

    def __init__(self, schema: pa.Schema, key: Sequence[str], where: str,
                 temp_dir: str | None = None, newest_by: str | None = None) -> None:
        missing = [k for k in [*key, *([newest_by] if newest_by and key else [])]
                   if k not in schema.names]
        if missing:
            raise ValueError(f"{where}: key column(s) {', '.join(missing)} not in the data "
                             f"(columns: {', '.join(schema.names)})")
        if ROW in schema.names:
            raise ValueError(f"{where}: column name {ROW} is reserved")
        self.schema = schema
        self.key = list(key)
        self.newest_by = newest_by if key else None
        self.where = where
        self._folder = tempfile.TemporaryDirectory(prefix="etl_assets_spill_", dir=temp_dir)
        self.path = Path(self._folder.name) / "rows.parquet"
        # Read back once or twice, soon: raw pages are faster to write and read than
        # compressed or dictionary-encoded ones.
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
            self.path, schema.append(pa.field(ROW, pa.int64())), compression="none",
            use_dictionary=False, write_statistics=False)
        self.rows = 0
        self._last: pa.Table | None = None

    def __enter__(self) -> SpilledRows:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._writer is not None:
            self._writer.close()
        self._folder.cleanup()

    def add(self, batch: pa.RecordBatch) -> None:
        """Spill ``batch`` (its columns in the schema's order)."""
        assert self._writer is not None, "add after finish"
        for name in self.key:
            column = batch.column(name)
            if column.null_count:
                row = pc.index(pc.is_null(column), True).as_py()
                values = batch.slice(row, 1).to_pylist()[0]
                raise ValueError(f"{self.where}: key column {name} is null in row "
                                 f"{self.rows + row} of this run: {values}")
        numbers = pa.array(np.arange(self.rows, self.rows + batch.num_rows, dtype=np.int64))
        self._writer.write_batch(pa.RecordBatch.from_arrays(
            [*batch.columns, numbers], schema=self._writer.schema))
        self.rows += batch.num_rows

    def finish(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def winners(self) -> pa.Table:
        """The winning row of every key: its key columns, the ``newest_by`` column (when
        set) and its row number (``ROW``), in row order (computed once)."""
        self.finish()
        if self._last is None:
            columns = list(dict.fromkeys([*self.key, *([self.newest_by] if self.newest_by
                                                        else []), ROW]))
            keys = pq.read_table(self.path, columns=columns)
            rows = winning_rows(keys, self.key, ROW, self.newest_by)
            self._last = keys if len(rows) == keys.num_rows else keys.take(rows)
        return self._last

    def batches(self, *, last_per_key: bool = False,
                without: pa.Array | None = None) -> Iterator[pa.RecordBatch]:
        """The spilled rows in the order they came; with ``last_per_key`` only each key's
        winning row; ``without``: row numbers left out (rows the target holds newer)."""
        self.finish()
        winners = None
        if last_per_key and self.key:
            last = self.winners()
            if last.num_rows < self.rows:  # some keys repeat
                winners = last.column(ROW).combine_chunks()
        spill = pq.ParquetFile(self.path)
        for batch in spill.iter_batches(batch_size=65_536):
            if winners is not None:
                batch = batch.filter(pc.is_in(batch.column(ROW), value_set=winners))
            if without is not None and len(without):
                batch = batch.filter(pc.invert(pc.is_in(batch.column(ROW), value_set=without)))
            if batch.num_rows:
                yield batch.drop_columns([ROW])
