"""Arrow -> JSON documents: the values every JSON sink sends."""

import json
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa

from etl_assets.arrow_types import logical_field
from etl_assets.json_documents import documents, dumps, iter_json_lines


def test_every_type_becomes_its_json_value() -> None:
    key = uuid.uuid4()
    schema = pa.schema([
        pa.field("id", pa.int64()),
        pa.field("at", pa.timestamp("us", tz="UTC")),
        pa.field("local", pa.timestamp("us")),
        pa.field("amount", pa.decimal128(10, 2)),
        logical_field("doc", "json"),
        logical_field("key", "uuid"),
        pa.field("ratio", pa.float64()),
        pa.field("day", pa.date32()),
        pa.field("blob", pa.binary()),
        pa.field("took", pa.duration("us")),
        pa.field("tags", pa.list_(pa.string())),
    ])
    batch = pa.RecordBatch.from_pylist([
        {"id": 1, "at": datetime(2024, 1, 1, 12, tzinfo=timezone.utc),
         "local": datetime(2024, 1, 1, 12, 30), "amount": Decimal("1.50"),
         "doc": '{"a": [1, 2], "b": null}', "key": str(key), "ratio": float("nan"),
         "day": date(2024, 2, 29), "blob": b"hi", "took": timedelta(seconds=1.5),
         "tags": ["x", "y"]},
        {name: None for name in schema.names},
    ], schema)

    first, empty = documents(batch)

    assert first == {"id": 1, "at": "2024-01-01T12:00:00Z", "local": "2024-01-01T12:30:00",
                     "amount": "1.50", "doc": {"a": [1, 2], "b": None}, "key": str(key),
                     "ratio": None, "day": "2024-02-29", "blob": "aGk=", "took": 1.5,
                     "tags": ["x", "y"]}
    assert empty == dict.fromkeys(schema.names)


def test_json_lines_round_trip() -> None:
    batch = pa.RecordBatch.from_pylist([{"id": i, "name": f"n{i}é"} for i in range(3)])
    lines = list(iter_json_lines(batch))
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    assert [json.loads(line) for line in lines] == batch.to_pylist()
    assert dumps({"a": "é"}) == '{"a":"é"}'.encode()


def test_whole_batch_json_lines_equal_the_documents() -> None:
    from etl_assets.json_documents import json_lines
    from etl_assets_tests.sinks.postgres.test_postgres import EVERY_TYPE, ROWS

    extra = pa.schema([
        pa.field("ms", pa.timestamp("ms", tz="UTC")), pa.field("sec", pa.timestamp("s")),
        pa.field("half", pa.float32()), pa.field("big", pa.float64()), pa.field("u8", pa.uint8()),
        pa.field("nothing", pa.null()), pa.field('qu"ote\n', pa.string()),
    ])
    extra_rows = [
        {"ms": datetime(2024, 5, 1, 1, 2, 3, 45_000, tzinfo=timezone.utc), "sec": datetime(1999, 12, 31, 23, 59, 59),
         "half": 0.5, "big": 1e300, "u8": 255, "nothing": None, 'qu"ote\n': "\u2028 \x01 😀"},
        {"ms": None, "sec": None, "half": 3.0, "big": -0.0, "u8": 0, "nothing": None, 'qu"ote\n': None},
        {"ms": datetime(1, 1, 1, tzinfo=timezone.utc), "sec": datetime(9999, 12, 31), "half": float("inf"),
         "big": 1e16, "u8": None, "nothing": None, 'qu"ote\n': ""},
    ]
    schema = pa.schema(list(EVERY_TYPE) + list(extra))
    rows = [{**a, **b} for a, b in zip(ROWS, extra_rows, strict=True)]
    batch = pa.RecordBatch.from_pylist(rows, schema).slice(1)  # an offset into the buffers too
    full = pa.RecordBatch.from_pylist(rows, schema)

    for data in (full, batch):
        text = json_lines(data)
        assert text.endswith(b"\n") and text.count(b"\n") == data.num_rows
        parsed = [json.loads(line) for line in text.decode().split("\n")[:-1]]
        assert parsed == documents(data)
        # floats stay floats for readers that infer types from the text
        assert all(isinstance(p["half"], float | None) for p in parsed)
    assert json_lines(full.slice(0, 0)) == b""


def test_decimals_are_plain_text_in_documents_and_json_lines() -> None:
    """Not scientific notation ("0E-10", "-1E-10"), whichever path serialises them."""
    from etl_assets.json_documents import json_lines

    schema = pa.schema([pa.field("d", pa.decimal128(20, 10)), pa.field("big", pa.decimal256(65, 30))])
    batch = pa.RecordBatch.from_pylist([
        {"d": Decimal("0E-10"), "big": Decimal("1E+34")},
        {"d": Decimal("-1E-10"), "big": Decimal("-0.000000000000000000000000000001")},
    ], schema)
    expected = [{"d": "0.0000000000", "big": "10000000000000000000000000000000000.000000000000000000000000000000"},
                {"d": "-0.0000000001", "big": "-0.000000000000000000000000000001"}]
    assert documents(batch) == expected
    assert [json.loads(line) for line in json_lines(batch).decode().split("\n")[:-1]] == expected


def test_integers_beyond_2_53_as_strings_when_asked() -> None:
    from etl_assets.json_documents import json_lines

    schema = pa.schema([pa.field("i", pa.int64()), pa.field("u", pa.uint64()), pa.field("small", pa.int32())])
    batch = pa.RecordBatch.from_pylist([
        {"i": 2**53 - 1, "u": 2**53, "small": 2**31 - 1},
        {"i": -(2**53), "u": 2**64 - 1, "small": None},
        {"i": None, "u": None, "small": -5}], schema)
    as_text = [{"i": 2**53 - 1, "u": str(2**53), "small": 2**31 - 1},
               {"i": str(-(2**53)), "u": str(2**64 - 1), "small": None},
               {"i": None, "u": None, "small": -5}]
    assert documents(batch, "string") == as_text
    assert [json.loads(line) for line in json_lines(batch, "string").decode().split("\n")[:-1]] == as_text
    assert documents(batch) == batch.to_pylist()  # numbers: the default of JSON lines files
    assert [json.loads(line) for line in json_lines(batch).decode().split("\n")[:-1]] == batch.to_pylist()


def test_newest_wins_compares_integers_written_as_text_as_integers() -> None:
    from etl_assets.newest_wins import is_newer

    assert is_newer(str(2**64 - 1), str(2**64 - 2))  # beyond a double's precision
    assert not is_newer("9", "10") and is_newer("10", 9)  # as numbers, not as text
    assert is_newer(2**53 + 1, 2**53) and not is_newer(1.5, 2)
    assert is_newer("2024-01-02T00:00:00Z", "2024-01-01T23:00:00-02:00") is False
