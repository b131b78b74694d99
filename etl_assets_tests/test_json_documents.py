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
