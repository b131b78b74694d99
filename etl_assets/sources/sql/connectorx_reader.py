"""What the readers built on connectorx share: its Arrow stream of a query, and its errors
(text only, and a Rust panic raised as a ``BaseException``)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyarrow as pa

from etl_assets.sources.sql.fast_reader import FastReader

_BATCH_ROWS = 50_000  # rows per batch the driver hands over
# how connectorx names the column of a value it could not convert (by its position)
_FAILED_COLUMN = re.compile(r"FromSqlConversionFailure\((\d+)")


class ConnectorxReader(FastReader):
    """A table read through ``connectorx.read_sql(.., return_type="arrow_stream")``, which
    streams (one batch of the driver's at a time, not the whole result)."""

    session: tuple[str, ...] = ()
    """Statements each connection runs before the query (connectorx's
    ``pre_execution_query``, which it runs for PostgreSQL and MySQL only)."""

    def driver_batches(self, query: str) -> Iterator[pa.RecordBatch]:
        import connectorx

        reader = connectorx.read_sql(self.url, query, return_type="arrow_stream",
                                     batch_size=_BATCH_ROWS,
                                     pre_execution_query=list(self.session) or None)
        yield from reader

    def at_fault(self, error: BaseException) -> str:
        found = _FAILED_COLUMN.search(str(error))
        if found and int(found.group(1)) < len(self.schema):
            return f"column {self.schema.names[int(found.group(1))]}: "
        return ""


def carried_as_is(arrow: pa.DataType) -> bool:
    """Types connectorx gives exactly, cast to the source's own width at most: integers,
    floats, booleans, dates, binary and timestamps without a zone."""
    return (pa.types.is_integer(arrow) or pa.types.is_floating(arrow)
            or pa.types.is_boolean(arrow) or pa.types.is_date32(arrow)
            or pa.types.is_binary(arrow)
            or (pa.types.is_timestamp(arrow) and arrow.tz is None))
