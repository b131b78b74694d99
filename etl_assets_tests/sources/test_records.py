"""sources/records.py: declared columns, pages of every kind made one schema per window, rows
kept to the window, and errors naming the batch and the field."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pytest

from etl_assets.arrow_types import logical_type_of
from etl_assets.sources.records import (
    RecordsError,
    as_table,
    check_columns,
    column_field,
    declared_schema,
    in_window,
    window_stream,
)
from etl_assets.watermark import Window

UTC = timezone.utc
T0 = datetime(2024, 3, 1, tzinfo=UTC)
DAY = Window(T0, T0 + timedelta(days=1))
WHAT = "source 's' window w"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def rows_of(pages: list, declared: pa.Schema | None = None, cursor: str = "t",
            window: Window = DAY) -> tuple[pa.Schema, list[dict]]:
    stream = window_stream(WHAT, pages, declared, cursor, window)
    table = pa.Table.from_batches(list(stream), stream.schema)
    return stream.schema, table.to_pylist()


# -- declared columns ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "arrow"), [
    ("int64", pa.int64()), ("int32", pa.int32()), ("string", pa.string()),
    ("float64", pa.float64()), ("bool", pa.bool_()), ("date32", pa.date32()),
    ("binary", pa.binary()), ("timestamp[us]", pa.timestamp("us")),
    ("timestamp[us, tz=UTC]", pa.timestamp("us", tz="UTC")),
    ("timestamp[ms,tz=Europe/Paris]", pa.timestamp("ms", tz="Europe/Paris")),
    ("timestamp[s, tz=+02:00]", pa.timestamp("s", tz="+02:00")),
    ("decimal(12,2)", pa.decimal128(12, 2)), ("decimal(12, 2)", pa.decimal128(12, 2)),
    ("decimal(40,2)", pa.decimal256(40, 2)), (" int64 ", pa.int64()),
])
def test_declared_types_by_name(name: str, arrow: pa.DataType) -> None:
    assert column_field("c", name) == pa.field("c", arrow)


def test_json_is_text_carrying_its_logical_type() -> None:
    field = column_field("doc", "json")
    assert field.type == pa.string() and logical_type_of(field) == "json"


@pytest.mark.parametrize(("name", "error"), [
    ("money", "column c: unknown type 'money' (int64, string"),
    ("timestamp[us, tz=Mars/Base]", "column c: unknown time zone 'Mars/Base'"),
    ("decimal(12)", "unknown type 'decimal(12)'"),
])
def test_an_unknown_type_names_the_column(name: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        column_field("c", name)


def test_declared_schema_keeps_the_order_and_none_is_none() -> None:
    assert declared_schema(None) is None and declared_schema({}) is None
    assert declared_schema({"b": "int64", "a": "string"}).names == ["b", "a"]
    assert check_columns({"a": "int64"}) == {"a": "int64"}
    with pytest.raises(ValueError):
        check_columns({"a": "nope"})


# -- each kind of page as a table -----------------------------------------------------------


def test_arrow_pandas_and_dicts_make_the_same_table() -> None:
    rows = [{"id": 1, "t": at(1), "v": 1.5, "s": "a"}, {"id": 2, "t": at(2), "v": None, "s": None}]
    arrow = pa.Table.from_pylist(rows)
    for page in (arrow, arrow.to_batches()[0], pd.DataFrame(rows), rows):
        table = as_table(page, WHAT)
        assert table.column_names == ["id", "t", "v", "s"]
        assert table.to_pylist() == rows, type(page)


def test_dicts_with_missing_keys_and_nested_values() -> None:
    table = as_table([{"id": 1, "doc": {"at": at(0), "n": Decimal("1.50"), "x": float("nan")}},
                      {"id": 2, "extra": True, "doc": [1, None]},
                      {"id": 3, "doc": "plain"}], WHAT)
    assert table.column_names == ["id", "doc", "extra"]
    assert logical_type_of(table.schema.field("doc")) == "json"
    assert [json.loads(v) for v in table.column("doc").to_pylist()] == [
        {"at": "2024-03-01T00:00:00Z", "n": "1.50", "x": None}, [1, None], "plain"]
    assert table.column("extra").to_pylist() == [None, True, None]


def test_declared_json_fields_of_dicts_are_json_text() -> None:
    table = as_table([{"id": 1, "doc": "text"}, {"id": 2, "doc": 5}, {"id": 3, "doc": None}],
                     WHAT, json_fields={"doc"})
    assert table.column("doc").to_pylist() == ['"text"', "5", None]


def test_a_dataframes_named_index_is_a_column_its_row_numbers_are_not() -> None:
    frame = pd.DataFrame({"id": [1, 2, 3], "v": ["a", "b", "c"]})
    assert as_table(frame[frame.id > 1], WHAT).column_names == ["id", "v"]
    indexed = as_table(frame.set_index("id"), WHAT)
    assert indexed.column_names == ["id", "v"] and indexed.column("id").to_pylist() == [1, 2, 3]


@pytest.mark.parametrize(("page", "error"), [
    ([{"id": 1}, 2], f"{WHAT}: a list of records must hold dicts (JSON objects)"),
    ("rows", f"{WHAT}: got str; yield a pyarrow RecordBatch or Table, a pandas DataFrame or a "
             f"list of dicts"),
    ([{"id": 1}, {"id": "two"}], f"{WHAT}: field 'id': its values cannot make one Arrow column"),
    ([{"id": 2**70}], f"{WHAT}: field 'id': its values cannot make one Arrow column"),
    ([{"doc": {"x": object()}}], f"{WHAT}: field 'doc': a value cannot be written as JSON"),
    (pd.DataFrame({"id": [1, "two"]}), f"{WHAT}: the DataFrame cannot be made Arrow"),
])
def test_a_page_that_is_no_records_names_what(page: object, error: str) -> None:
    with pytest.raises(RecordsError) as raised:
        as_table(page, WHAT)
    assert str(raised.value).startswith(error)


# -- one schema per window -------------------------------------------------------------------


def test_the_first_batch_gives_the_schema_and_later_batches_are_cast() -> None:
    first = pa.table({"id": pa.array([1], pa.int64()), "t": [at(1)], "v": [1.5]})
    later = pa.table({"v": pa.array([2], pa.int32()), "id": pa.array([2], pa.int32()),
                      "t": [at(2)]})
    schema, rows = rows_of([first, later, [{"id": 3, "t": at(3)}]])
    assert schema == pa.schema([("id", pa.int64()), ("t", pa.timestamp("us", tz="UTC")),
                                ("v", pa.float64())])
    assert rows == [{"id": 1, "t": at(1), "v": 1.5}, {"id": 2, "t": at(2), "v": 2.0},
                    {"id": 3, "t": at(3), "v": None}]  # a missing column is null


def test_declared_columns_come_first_with_their_types() -> None:
    declared = declared_schema({"amount": "decimal(10,2)", "t": "timestamp[us, tz=UTC]"})
    schema, rows = rows_of([[{"id": 1, "amount": "1.25", "t": "2024-03-01T00:01:00Z"}],
                            [{"id": 2, "amount": 3, "t": "2024-03-01T00:02:00+00:00"}]],
                           declared)
    assert schema.names == ["amount", "t", "id"]
    assert schema.field("amount").type == pa.decimal128(10, 2)
    assert rows == [{"amount": Decimal("1.25"), "t": at(1), "id": 1},
                    {"amount": Decimal("3.00"), "t": at(2), "id": 2}]


def test_a_cast_conflict_names_the_field_and_the_batch() -> None:
    with pytest.raises(RecordsError) as raised:
        rows_of([[{"id": 1, "t": at(1)}], [{"id": 2, "t": at(2)}],
                 [{"id": 2.5, "t": at(3)}]])
    assert str(raised.value).startswith(
        f"{WHAT}: batch 3: field 'id': double does not cast to int64: ")


@pytest.mark.parametrize(("values", "declared", "kept"), [
    ([1, 2**40], "decimal(16,2)", [Decimal("1.00"), Decimal(2**40)]),
    ([1.25, 0.1, None], "decimal(10,2)", [Decimal("1.25"), Decimal("0.10"), None]),
    (["1.25", "-3"], "decimal(10,2)", [Decimal("1.25"), Decimal("-3.00")]),
    ([Decimal("1.5")], "decimal(10,2)", [Decimal("1.50")]),
    ([1, 2], "float64", [1.0, 2.0]),
])
def test_values_cast_to_a_declared_type_unchanged(values: list, declared: str,
                                                  kept: list) -> None:
    _, rows = rows_of([[{"t": at(1), "v": v} for v in values]],
                      declared_schema({"v": declared}))
    assert [row["v"] for row in rows] == kept


@pytest.mark.parametrize(("values", "declared", "error"), [
    ([0.125], "decimal(10,2)", "double does not cast to decimal128(10, 2): 0.125 is not exactly "
                               "decimal128(10, 2)"),
    ([2**40], "decimal(10,2)", "int64 does not cast to decimal128(10, 2): "),
    (["1.255"], "decimal(10,2)", "string does not cast to decimal128(10, 2): "),
    ([1.5], "int64", "double does not cast to int64: "),
    ([2**31], "int32", "int64 does not cast to int32: "),
    (["x"], "timestamp[us, tz=UTC]", "string does not cast to timestamp[us, tz=UTC]: "),
])
def test_a_value_a_declared_type_would_change_fails(values: list, declared: str,
                                                    error: str) -> None:
    with pytest.raises(RecordsError) as raised:
        rows_of([[{"t": at(1), "v": v} for v in values]], declared_schema({"v": declared}))
    assert str(raised.value).startswith(f"{WHAT}: batch 1: field 'v': {error}")


def test_a_declared_type_the_values_do_not_fit_names_the_field_and_batch() -> None:
    with pytest.raises(RecordsError) as raised:
        rows_of([[{"id": 1, "t": at(1), "n": 1}], [{"id": 2, "t": at(2), "n": 300}]],
                declared_schema({"n": "int8"}))
    assert str(raised.value).startswith(f"{WHAT}: batch 2: field 'n': int64 does not cast to "
                                        f"int8: ")


def test_a_field_the_first_batch_lacks_names_the_field_and_batch() -> None:
    with pytest.raises(RecordsError) as raised:
        rows_of([[{"id": 1, "t": at(1)}], [{"id": 2, "t": at(2), "late": "x"}]])
    assert str(raised.value) == (f"{WHAT}: batch 2: field(s) late not in the schema of the "
                                 f"first batch or `columns:` (id, t)")


def test_a_field_that_was_all_nulls_in_the_first_batch_asks_for_its_type() -> None:
    pages = [[{"id": 1, "t": at(1), "gone": None}], [{"id": 2, "t": at(2), "gone": at(9)}]]
    with pytest.raises(RecordsError) as raised:
        rows_of(pages)
    assert str(raised.value) == (
        f"{WHAT}: batch 2: field 'gone' holds timestamp[us, tz=UTC] values, but it held only "
        f"nulls in the first batch (so its type is null): declare its type in `columns:`")
    _, rows = rows_of(pages, declared_schema({"gone": "timestamp[us, tz=UTC]"}))
    assert [row["gone"] for row in rows] == [None, at(9)]


def test_pages_without_rows_do_not_set_the_schema() -> None:
    untyped = pd.DataFrame({"id": pd.Series([], dtype=object), "t": pd.Series([], dtype=object)})
    schema, rows = rows_of([[], untyped, [{"id": 1, "t": at(1)}], []])
    assert schema == pa.schema([("id", pa.int64()), ("t", pa.timestamp("us", tz="UTC"))])
    assert rows == [{"id": 1, "t": at(1)}]


def test_a_window_without_rows_has_the_declared_then_the_empty_pages_columns() -> None:
    typed = pd.DataFrame({"id": pd.Series([], dtype="int64"),
                          "t": pd.Series([], dtype="datetime64[ns, UTC]")})
    assert rows_of([typed]) == (pa.schema([("id", pa.int64()),
                                           ("t", pa.timestamp("ns", tz="UTC"))]), [])
    declared = declared_schema({"t": "timestamp[us, tz=UTC]"})
    assert rows_of([], declared) == (declared, [])
    assert rows_of([[]], declared)[0] == declared
    assert rows_of([typed], declared)[0].names == ["t", "id"]
    assert rows_of([]) == (pa.schema([]), [])
    assert rows_of([[], []]) == (pa.schema([]), [])


def test_an_empty_page_without_the_cursor_fails_naming_it() -> None:
    with pytest.raises(RecordsError, match="no cursor field 't'"):
        rows_of([pd.DataFrame({"id": pd.Series([], dtype="int64")})])


def test_the_first_page_is_read_at_once_the_rest_as_the_stream_is_read() -> None:
    read: list[int] = []

    def pages():
        for number in (1, 2):
            read.append(number)
            yield [{"id": number, "t": at(number)}]
        raise ValueError("page 3 failed")

    stream = window_stream(WHAT, pages(), None, "t", DAY)
    assert read == [1] and stream.schema.names == ["id", "t"]
    batches = iter(stream)
    next(batches)
    next(batches)
    assert read == [1, 2]
    with pytest.raises(ValueError, match="page 3 failed"):
        next(batches)

    def failing():
        raise ValueError("at once")
        yield

    with pytest.raises(ValueError, match="at once"):
        window_stream(WHAT, failing(), None, "t", DAY)


# -- rows kept to the window -------------------------------------------------------------------


def test_rows_outside_the_window_and_null_cursors_are_dropped() -> None:
    window = Window(at(10), at(20))
    pages = [[{"id": i, "t": at(i)} for i in range(0, 15)],
             [{"id": i, "t": at(i)} for i in range(15, 30)] + [{"id": 99, "t": None}]]
    _, rows = rows_of(pages, window=window)
    assert [row["id"] for row in rows] == list(range(11, 21))  # lo excluded, hi included


@pytest.mark.parametrize("arrow", [pa.timestamp("s"), pa.timestamp("ms", tz="UTC"),
                                   pa.timestamp("ns", tz="UTC"), pa.timestamp("us"),
                                   pa.timestamp("s", tz="Europe/Paris")])
def test_timestamp_cursors_of_any_unit_and_zone(arrow: pa.DataType) -> None:
    # bounds with a fraction of a second, which a cursor in seconds cannot hold exactly
    window = Window(at(1) + timedelta(microseconds=500_000), at(3) + timedelta(microseconds=1))
    values = pa.array([at(1), at(2), at(3), at(4)], pa.timestamp("us", tz="UTC")).cast(arrow)
    table = pa.table({"id": [1, 2, 3, 4], "t": values})
    assert in_window(table, "t", window, WHAT).column("id").to_pylist() == [2, 3]


def test_naive_bounds_and_naive_cursors_are_utc() -> None:
    naive = Window(datetime(2024, 3, 1, 0, 1), datetime(2024, 3, 1, 0, 3))
    aware = pa.table({"id": [1, 2, 3], "t": pa.array([at(1), at(2), at(3)])})
    assert in_window(aware, "t", naive, WHAT).column("id").to_pylist() == [2, 3]
    plain = pa.table({"id": [1, 2, 3], "t": pa.array([at(i).replace(tzinfo=None)
                                                      for i in (1, 2, 3)])})
    assert in_window(plain, "t", Window(at(1), at(3)), WHAT).column("id").to_pylist() == [2, 3]


@pytest.mark.parametrize("arrow", [pa.int64(), pa.int32(), pa.uint64(), pa.int8()])
def test_integer_cursors(arrow: pa.DataType) -> None:
    table = pa.table({"id": pa.array([0, 1, 5, 10, 11, None], arrow)})
    assert in_window(table, "id", Window(0, 10), WHAT).column("id").to_pylist() == [1, 5, 10]
    assert in_window(table, "id", Window(-(2**40), 2**40), WHAT).num_rows == 5


def test_a_cursor_that_cannot_be_compared_asks_for_its_type() -> None:
    table = pa.table({"t": ["2024-03-01T00:01:00Z"]})
    with pytest.raises(RecordsError) as raised:
        in_window(table, "t", DAY, WHAT)
    assert str(raised.value).startswith(f"{WHAT}: cursor field 't' (string) cannot be compared "
                                        f"with the window's bounds; declare it in `columns:`")
    with pytest.raises(RecordsError, match=r"no cursor field 'at' in the records \(fields: t\)"):
        in_window(table, "at", DAY, WHAT)
