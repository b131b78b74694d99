"""Functions named by the tests' `kind: python` sources
(``etl_assets_tests.python_source_functions:...``): readings 1..120, reading i updated at
2024-03-01 00:00 UTC + i minutes, given in pages of 25 as each kind of record a source
function may yield."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
READINGS = 120
PAGE = 25
SCHEMA = pa.schema([("id", pa.int64()), ("code", pa.string()), ("amount", pa.float64()),
                    ("note", pa.string()), ("updated_at", pa.timestamp("us", tz="UTC"))])
calls: list[tuple[object, object]] = []  # (lo, hi) of every call of `flaky` and `recorded`


def reading(i: int) -> dict:
    return {"id": i, "code": f"R-{i:04d}", "amount": i * 0.25,
            "note": None if i % 5 == 0 else f"note {i}, \"quoted\"",
            "updated_at": T0 + timedelta(minutes=i)}


def readings_in(lo: datetime, hi: datetime) -> list[dict]:
    """The readings with lo < updated_at <= hi: what a well-behaved source gives."""
    return [reading(i) for i in range(1, READINGS + 1)
            if lo < T0 + timedelta(minutes=i) <= hi]


def _pages(rows: list[dict]) -> Iterator[list[dict]]:
    for start in range(0, len(rows), PAGE):
        yield rows[start:start + PAGE]


def arrow_batches(lo: datetime, hi: datetime) -> Iterator[pa.RecordBatch]:
    for page in _pages(readings_in(lo, hi)):
        yield pa.RecordBatch.from_pylist(page, schema=SCHEMA)


def arrow_tables(lo: datetime, hi: datetime) -> Iterator[pa.Table]:
    for page in _pages(readings_in(lo, hi)):
        yield pa.Table.from_pylist(page, schema=SCHEMA)


def data_frames(lo: datetime, hi: datetime) -> Iterator[pd.DataFrame]:
    for page in _pages(readings_in(lo, hi)):
        yield pd.DataFrame(page)


def dict_lists(lo: datetime, hi: datetime) -> Iterator[list[dict]]:
    yield from _pages(readings_in(lo, hi))


def one_table(lo: datetime, hi: datetime) -> pa.Table:
    """Returns (not yields) one table."""
    return pa.Table.from_pylist(readings_in(lo, hi), schema=SCHEMA)


def one_list(lo: datetime, hi: datetime) -> list[dict]:
    """Returns one list of dicts."""
    return readings_in(lo, hi)


def with_documents(lo: datetime, hi: datetime) -> Iterator[list[dict]]:
    """Dicts holding a nested document (kept as JSON)."""
    for page in _pages(readings_in(lo, hi)):
        yield [{**row, "attrs": {"n": row["id"], "tags": ["a", None], "ü": "ß"}} for row in page]


def everything(lo: datetime, hi: datetime) -> Iterator[list[dict]]:
    """Every reading, whatever the window (an API that filters loosely, or not at all)."""
    yield from _pages([reading(i) for i in range(1, READINGS + 1)])


def as_text(lo: datetime, hi: datetime) -> Iterator[list[dict]]:
    """Amounts as decimal text and times as ISO 8601 text (JSON from an API): `columns:`
    declares their types."""
    for page in _pages(readings_in(lo, hi)):
        yield [{"id": row["id"], "amount": f"{row['amount']:.2f}",
                "updated_at": row["updated_at"].isoformat().replace("+00:00", "Z")}
               for row in page]


def widening(lo: datetime, hi: datetime) -> Iterator[pa.Table]:
    """The first page's ids are int64, later pages' int32: cast to the first's."""
    for number, page in enumerate(_pages(readings_in(lo, hi))):
        table = pa.Table.from_pylist(page, schema=SCHEMA)
        if number:
            table = table.set_column(0, "id", table.column("id").cast(pa.int32()))
        yield table


def conflicting(lo: datetime, hi: datetime) -> Iterator[list[dict]]:
    """Batch 2 gives `amount` as text that is no number."""
    yield [{"id": 1, "amount": 1.5, "updated_at": T0 + timedelta(minutes=1)}]
    yield [{"id": 2, "amount": "two", "updated_at": T0 + timedelta(minutes=2)}]


def nothing(lo: datetime, hi: datetime) -> Iterator[list[dict]]:
    """No rows at all."""
    yield from ()


def empty_frame(lo: datetime, hi: datetime) -> pd.DataFrame:
    """No rows, but typed columns."""
    return pd.DataFrame({"id": pd.Series([], dtype="int64"),
                         "updated_at": pd.Series([], dtype="datetime64[ns, UTC]")})


def broken(lo: datetime, hi: datetime) -> Iterator[list[dict]]:
    """A page, then an error whose message spans lines."""
    yield readings_in(lo, hi)[:5]
    raise ValueError("reading 6 is malformed:\n  expected a number")


def flaky(lo: datetime, hi: datetime) -> Iterator[list[dict]]:
    """A reset connection after the first page of the first call; the rows after that."""
    calls.append((lo, hi))
    rows = readings_in(lo, hi)
    yield rows[:PAGE]
    if len(calls) == 1:
        raise ConnectionResetError("connection reset by peer")
    yield from _pages(rows[PAGE:])


def recorded(lo: object, hi: object) -> list[dict]:
    """Records its bounds; readings by id for an integer cursor."""
    calls.append((lo, hi))
    assert isinstance(lo, int) and isinstance(hi, int)
    return [reading(i) for i in range(max(lo + 1, 1), min(hi, READINGS) + 1)]


def newest_reading() -> datetime:
    return T0 + timedelta(minutes=READINGS)


def newest_id() -> int:
    return READINGS


def no_readings_yet() -> None:
    return None


def a_number(lo: datetime, hi: datetime) -> int:
    return 7


def not_a_function() -> int:
    return 1


NOT_CALLABLE = 42
