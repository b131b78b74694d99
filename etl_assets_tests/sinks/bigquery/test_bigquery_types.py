"""Arrow -> BigQuery column types, and the Arrow a parquet load puts into them unchanged."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pytest

from etl_assets.arrow_types import logical_field
from etl_assets.sinks.bigquery.column_types import (
    UnsupportedBigQueryType,
    bigquery_schema,
    bigquery_type,
    loadable,
)


@pytest.mark.parametrize(("field", "expected"), [
    (pa.field("a", pa.decimal128(38, 9)), "NUMERIC"),
    (pa.field("a", pa.decimal128(30, 0)), "BIGNUMERIC"),  # 30 integer digits > NUMERIC's 29
    (pa.field("a", pa.decimal128(20, 12)), "BIGNUMERIC"),  # scale 12 > NUMERIC's 9
    (logical_field("a", "numeric"), "BIGNUMERIC"),
    (pa.field("a", pa.uint64()), "NUMERIC"),
    (pa.field("a", pa.uint32()), "INT64"),
    (pa.field("a", pa.dictionary(pa.int8(), pa.string())), "STRING"),
    (pa.field("a", pa.struct([("x", pa.int64())])), "JSON"),
    (pa.field("a", pa.timestamp("ns")), "DATETIME"),
])
def test_types_hold_the_values_without_loss(field: pa.Field, expected: str) -> None:
    assert bigquery_type(field) == expected


def test_an_unsupported_type_names_the_column() -> None:
    with pytest.raises(UnsupportedBigQueryType, match="column when"):
        bigquery_type(pa.field("when", pa.month_day_nano_interval()))


def test_required_columns_are_only_those_asked_for() -> None:
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string())])
    assert [(f.name, f.mode) for f in bigquery_schema(schema, ["id"])] == [
        ("id", "REQUIRED"), ("name", "NULLABLE")]


def test_loadable_values_are_what_the_columns_will_hold() -> None:
    table = pa.table({
        "big": pa.array([2**64 - 1, None], pa.uint64()),
        "exact": pa.array(["-12345678901234567890.5", None], pa.string()),
        "nested": pa.array([{"x": 1}, None], pa.struct([("x", pa.int64())])),
        "took": pa.array([timedelta(seconds=1, microseconds=2), None], pa.duration("us")),
        "at": pa.array([1_700_000_000_123_456_789, None], pa.timestamp("ns", tz="UTC")),
    })
    table = table.cast(pa.schema([*table.schema.remove(1).insert(1, logical_field("exact", "numeric"))]))
    out = loadable(table).to_pylist()
    assert out[0] == {"big": Decimal(2**64 - 1), "exact": Decimal("-12345678901234567890.5"),
                      "nested": '{"x":1}', "took": 1_000_002,
                      "at": datetime(2023, 11, 14, 22, 13, 20, 123_456, tzinfo=timezone.utc)}
    assert all(v is None for v in out[1].values())


def test_a_numeric_too_wide_for_bignumeric_names_the_column() -> None:
    table = pa.table({"exact": pa.array(["1e100"])}).cast(pa.schema([logical_field("exact", "numeric")]))
    with pytest.raises(ValueError, match="column exact"):
        loadable(table)
