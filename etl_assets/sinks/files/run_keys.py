"""Update mode's merge rule: which rows of the existing file stay, and which of the run's rows
lose to them.

Without a cursor column the run's rows replace every existing row of their keys (the last write
wins). With one (``conflict: newest``) an existing row stays, and the run's row of that key is
left out, when the existing row's cursor is newer than the run's (null is the oldest; on a tie
the run wins), so runs of any partitions in any order give the same dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.errors import DataError
from etl_assets.sinks.files.spilled_rows import ROW

_EXISTING_ROW = "__etl_existing_row"
_RUN_CURSOR = "__etl_run_cursor"


class MergeKeyError(DataError, ValueError):
    """An existing file whose keys or cursor cannot be compared with the run's."""


class RunKeys:
    """The run's winning rows: ``table`` holds the key columns, the cursor ``newest_by`` (when
    set) and the row number ``ROW`` of each. ``kept`` is asked once per block of existing rows;
    ``losers`` collects the run's row numbers that lost to an existing row."""

    def __init__(self, table: pa.Table, key: Sequence[str], newest_by: str | None) -> None:
        self.table = table
        self.key = list(key)
        self.newest_by = newest_by
        self._losers: list[pa.Array] = []

    def with_table(self, table: pa.Table) -> RunKeys:
        """The same keys as ``table`` holds them (e.g. as a JSON file does); losers found
        through it count as this one's."""
        derived = RunKeys(table, self.key, self.newest_by)
        derived._losers = self._losers
        return derived

    @property
    def columns(self) -> list[str]:
        """The columns of an existing row that the rule reads."""
        return [*self.key, *([self.newest_by] if self.newest_by else [])]

    def schema(self) -> pa.Schema:
        return pa.schema([self.table.schema.field(c) for c in self.columns])

    def losers(self) -> pa.Array:
        """Row numbers of the run's rows that the existing file holds newer versions of."""
        return pa.concat_arrays(self._losers) if self._losers else pa.array([], pa.int64())

    def kept(self, existing: pa.RecordBatch | pa.Table) -> pa.Array | None:
        """Indices of ``existing`` rows that stay, in order (None: every row); ``existing``
        must hold :attr:`columns`."""
        if self.table.num_rows == 0 or existing.num_rows == 0:
            return None
        missing = [c for c in self.columns if c not in existing.schema.names]
        if missing:
            raise MergeKeyError(f"the existing file has no column(s) {', '.join(missing)}")
        try:
            columns = {c: _array(existing.column(c).cast(self.table.schema.field(c).type))
                       for c in self.columns}
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise MergeKeyError(f"the existing file's keys cannot be compared: {exc}") from None
        if len(self.key) == 1:
            return self._kept_one_key(columns)
        return self._kept_by_join(columns, existing.num_rows)

    def _kept_one_key(self, columns: dict[str, pa.Array]) -> pa.Array | None:
        """One key column: a hash lookup of each existing key among the run's, no join."""
        run_keys = self.table.column(self.key[0]).combine_chunks()
        position = pc.index_in(columns[self.key[0]], value_set=run_keys)
        matched = pc.is_valid(position)
        if not pc.any(matched).as_py():
            return None
        if self.newest_by is None:
            return pc.indices_nonzero(pc.invert(matched))
        run_cursor = pc.take(self.table.column(self.newest_by).combine_chunks(), position)
        existing_wins = self._newer(columns[self.newest_by], run_cursor, matched)
        self._losers.append(pc.take(self.table.column(ROW).combine_chunks(),
                                    pc.filter(position, existing_wins)))
        return pc.indices_nonzero(pc.or_(pc.invert(matched), existing_wins))

    def _kept_by_join(self, columns: dict[str, pa.Array], rows: int) -> pa.Array | None:
        left = pa.table({**columns, _EXISTING_ROW: pa.array(np.arange(rows, dtype=np.int64))})
        right = self.table.select([*self.key, *([self.newest_by] if self.newest_by else []),
                                   ROW])
        if self.newest_by is not None:
            right = right.rename_columns([*self.key, _RUN_CURSOR, ROW])
        joined = left.join(right, keys=self.key, join_type="left outer", use_threads=False)
        matched = pc.is_valid(joined.column(ROW))
        if not pc.any(matched).as_py():
            return None
        keep = pc.invert(matched)
        if self.newest_by is not None:
            existing_wins = self._newer(joined.column(self.newest_by),
                                        joined.column(_RUN_CURSOR), matched)
            self._losers.append(pc.filter(joined.column(ROW), existing_wins).combine_chunks())
            keep = pc.or_(keep, existing_wins)
        kept = pc.filter(joined.column(_EXISTING_ROW), keep)
        return pc.take(kept, pc.sort_indices(kept)).combine_chunks()

    @staticmethod
    def _newer(existing: pa.Array | pa.ChunkedArray, run: pa.Array | pa.ChunkedArray,
               matched: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Where the key is the run's and the existing cursor is strictly newer than the
        run's row's (null is the oldest)."""
        newer = pc.fill_null(pc.greater(existing, run), False)
        newer = pc.or_(newer, pc.and_(pc.is_valid(existing), pc.is_null(run)))
        newer = pc.and_(newer, matched)
        if isinstance(newer, pa.ChunkedArray):
            newer = newer.combine_chunks()
        return newer


def _array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
