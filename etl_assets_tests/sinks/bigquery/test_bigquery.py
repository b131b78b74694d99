"""The BigQuery sink against a real BigQuery API (bqemulator on loopback): every write mode,
schema additions and values read back from the table."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from etl_assets.arrow_types import logical_field
from etl_assets.dead_letters import DeadLetterStore
from etl_assets.sinks.base import SinkSetup
from etl_assets.sinks.bigquery.io_manager import BigQuerySinkIOManager
from etl_assets.sinks.bigquery.spec import BigQuerySinkSpec
from etl_assets.sinks.bigquery.writer import BigQuerySinkError
from etl_assets.watermark import Window
from etl_assets_testing.servers.bigquery import PROJECT, BigQueryEmulator
from etl_assets_tests.sinks.sink_runs import run_sink

UTC = timezone.utc
DAY = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))
NEXT_DAY = Window(DAY.hi, datetime(2024, 3, 3, tzinfo=UTC))
SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string()),
                    pa.field("updated_at", pa.timestamp("us", tz="UTC"))])


def sink(emulator: BigQueryEmulator, dataset: str, etl_home: Path,
         **config: Any) -> BigQuerySinkIOManager:
    """The IO manager of a sink of table ``t`` fed by a source keyed by id whose cursor is
    updated_at."""
    settings: dict[str, Any] = {"project": PROJECT, "dataset": dataset, "table": "t",
                                "api_endpoint": emulator.endpoint, "retries": 1,
                                "retry_delay_s": 0, "request_timeout_s": 5}
    spec = BigQuerySinkSpec(kind="bigquery", source="source", **{**settings, **config})
    return BigQuerySinkIOManager(SinkSetup.of(
        "events_bq", spec, source_primary_key=["id"], source_cursor="updated_at",
        dead_letter_root=str(etl_home / "dead_letters")))


def write(manager: BigQuerySinkIOManager, batches: list[pa.RecordBatch],
          window: Window = DAY, schema: pa.Schema = SCHEMA) -> dict:
    return run_sink(manager, batches, schema, window, "events_bq")


def rows(ids: list[int], name: str, hour: int = 1) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(
        [{"id": i, "name": f"{name}{i}", "updated_at": datetime(2024, 3, 1, hour, i, tzinfo=UTC)}
         for i in ids], SCHEMA)


def names(emulator: BigQueryEmulator, dataset: str) -> dict[int, str]:
    return {r["id"]: r["name"] for r in emulator.rows(f"{PROJECT}.{dataset}.t")}


EVERY_TYPE = pa.schema([
    pa.field("id", pa.int64()), pa.field("text", pa.string()),
    pa.field("at", pa.timestamp("us", tz="UTC")), pa.field("berlin", pa.timestamp("ms", tz="Europe/Berlin")),
    pa.field("local", pa.timestamp("us")), pa.field("day", pa.date32()), pa.field("clock", pa.time64("us")),
    pa.field("amount", pa.decimal128(12, 3)), pa.field("score", pa.float64()), pa.field("flag", pa.bool_()),
    logical_field("doc", "json"), logical_field("ref", "uuid"), pa.field("raw", pa.binary()),
    pa.field("tags", pa.list_(pa.string())), pa.field("took", pa.duration("us")),
])
EVERY_ROW = [
    {"id": 1, "text": 'quote " comma , newline \n ü', "at": datetime(2024, 1, 1, 12, 0, 0, 123_456, tzinfo=UTC),
     "berlin": datetime(2024, 7, 1, 10, 30, tzinfo=UTC), "local": datetime(2024, 1, 1, 12, 0, 0, 5),
     "day": date(2024, 2, 29), "clock": time(23, 59, 59, 999_999), "amount": Decimal("-123456789.125"),
     "score": 0.1, "flag": True, "doc": '{"a": [1, null, "x"], "ü": "€"}',
     "ref": "0cc175b9-c0f1-b6a8-31c3-99e269772661", "raw": b"\x00\xff", "tags": ["a", None, 'b"c'],
     "took": timedelta(days=1, microseconds=5)},
    {"id": 2, **{name: None for name in EVERY_TYPE.names if name != "id"}},
]


def test_every_type_round_trips(bq_emulator: BigQueryEmulator, bq_dataset: str, etl_home: Path) -> None:
    manager = sink(bq_emulator, bq_dataset, etl_home, write="append")
    metadata = write(manager, [pa.RecordBatch.from_pylist(EVERY_ROW, EVERY_TYPE)], schema=EVERY_TYPE)
    assert metadata["rows_written"] == metadata["dagster/row_count"] == 2 and metadata["dead_letters"] == 0
    table = bq_emulator.client().get_table(f"{PROJECT}.{bq_dataset}.t")
    legacy = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}  # both spellings exist
    types = {f.name: legacy.get(f.field_type, f.field_type) for f in table.schema}
    assert types == {"id": "INT64", "text": "STRING", "at": "TIMESTAMP", "berlin": "TIMESTAMP",
                     "local": "DATETIME", "day": "DATE", "clock": "TIME", "amount": "NUMERIC",
                     "score": "FLOAT64", "flag": "BOOL",
                     "doc": "JSON", "ref": "STRING", "raw": "BYTES", "tags": "JSON", "took": "INT64"}
    first, second = bq_emulator.rows(f"{PROJECT}.{bq_dataset}.t")
    expected = dict(EVERY_ROW[0])
    assert first["text"] == expected["text"] and first["at"] == expected["at"]
    assert first["berlin"] == expected["berlin"] and first["local"] == expected["local"]
    assert (first["day"], first["clock"]) == (expected["day"], expected["clock"])
    assert first["amount"] == expected["amount"]
    assert first["score"] == 0.1 and first["flag"] is True
    assert first["doc"] == {"a": [1, None, "x"], "ü": "€"}
    assert first["ref"] == expected["ref"] and first["raw"] == b"\x00\xff"
    assert first["tags"] == ["a", None, 'b"c'] and first["took"] == 86_400_000_005
    assert all(value is None for key, value in second.items() if key != "id")


def test_append_adds_each_runs_rows(bq_emulator: BigQueryEmulator, bq_dataset: str, etl_home: Path) -> None:
    manager = sink(bq_emulator, bq_dataset, etl_home, write="append", chunk_rows=2)
    write(manager, [rows([1, 2, 3], "a")])
    metadata = write(manager, [rows([4, 5], "b")], NEXT_DAY)
    assert metadata["chunks"] == 1 and metadata["rows_written"] == 2 and metadata["dagster/row_count"] == 5
    assert names(bq_emulator, bq_dataset) == {1: "a1", 2: "a2", 3: "a3", 4: "b4", 5: "b5"}


def test_merge_updates_and_inserts_by_key_and_the_last_row_wins(
        bq_emulator: BigQueryEmulator, bq_dataset: str, etl_home: Path) -> None:
    manager = sink(bq_emulator, bq_dataset, etl_home, write="merge", chunk_rows=2)
    write(manager, [rows([1, 2, 3], "a")])
    # key 2 three times, in different chunks and within one: the last row wins
    metadata = write(manager, [rows([2, 4], "b"), rows([2, 2], "c"), rows([5, 2], "d")])
    assert metadata["chunks"] == 3 and metadata["rows_failed"] == 0
    assert names(bq_emulator, bq_dataset) == {1: "a1", 2: "d2", 3: "a3", 4: "b4", 5: "d5"}
    write(manager, [rows([2, 4], "b"), rows([2, 2], "c"), rows([5, 2], "d")])  # a re-run
    assert names(bq_emulator, bq_dataset) == {1: "a1", 2: "d2", 3: "a3", 4: "b4", 5: "d5"}
    tables = [t.table_id for t in bq_emulator.client().list_tables(f"{PROJECT}.{bq_dataset}")]
    assert tables == ["t"]  # staging tables dropped


def test_replace_partition_replaces_only_the_windows_rows(
        bq_emulator: BigQueryEmulator, bq_dataset: str, etl_home: Path) -> None:
    manager = sink(bq_emulator, bq_dataset, etl_home, write="replace_partition")
    write(manager, [rows([1, 2, 3], "a")])
    later = pa.RecordBatch.from_pylist([{"id": 9, "name": "other day",
                                         "updated_at": datetime(2024, 3, 2, 5, tzinfo=UTC)}], SCHEMA)
    write(manager, [later], NEXT_DAY)
    write(manager, [rows([1, 3], "again")])  # row 2 is gone from the source's window
    write(manager, [rows([1, 3], "again")])  # and a re-run does not duplicate
    assert names(bq_emulator, bq_dataset) == {1: "again1", 3: "again3", 9: "other day"}


def test_replace_table_swaps_in_the_runs_rows_and_an_empty_run_keeps_them(
        bq_emulator: BigQueryEmulator, bq_dataset: str, etl_home: Path) -> None:
    manager = sink(bq_emulator, bq_dataset, etl_home, write="replace_table", chunk_rows=1)
    write(manager, [rows([1, 2, 3], "a")])
    write(manager, [rows([4], "b"), rows([5], "b")], NEXT_DAY)
    assert names(bq_emulator, bq_dataset) == {4: "b4", 5: "b5"}
    write(manager, [], NEXT_DAY)
    assert names(bq_emulator, bq_dataset) == {4: "b4", 5: "b5"}


def test_a_new_column_is_added_nullable_before_loading(
        bq_emulator: BigQueryEmulator, bq_dataset: str, etl_home: Path) -> None:
    manager = sink(bq_emulator, bq_dataset, etl_home, write="merge")
    write(manager, [rows([1, 2], "a")])
    wider = SCHEMA.append(pa.field("score", pa.float64())).append(pa.field("note", pa.string()))
    batch = pa.RecordBatch.from_pylist([{"id": 3, "name": "c3", "updated_at": datetime(2024, 3, 1, 4, tzinfo=UTC),
                                         "score": 2.5, "note": "new"}], wider)
    write(manager, [batch], schema=wider)
    table = bq_emulator.client().get_table(f"{PROJECT}.{bq_dataset}.t")
    assert [(f.name, f.mode) for f in table.schema][-2:] == [("score", "NULLABLE"), ("note", "NULLABLE")]
    got = {r["id"]: (r["score"], r["note"]) for r in bq_emulator.rows(f"{PROJECT}.{bq_dataset}.t")}
    assert got == {1: (None, None), 2: (None, None), 3: (2.5, "new")}


def test_a_chunk_bigquery_refuses_is_kept_as_a_dead_letter_with_the_reason(
        bq_emulator: BigQueryEmulator, bq_dataset: str, etl_home: Path) -> None:
    from google.cloud import bigquery

    client = bq_emulator.client()
    client.create_dataset(f"{PROJECT}.{bq_dataset}")
    client.create_table(bigquery.Table(f"{PROJECT}.{bq_dataset}.t", schema=[
        bigquery.SchemaField("id", "INT64"), bigquery.SchemaField("name", "INT64"),
        bigquery.SchemaField("updated_at", "TIMESTAMP")]))
    manager = sink(bq_emulator, bq_dataset, etl_home, write="append")
    metadata = write(manager, [rows([1, 2], "not a number ")])
    assert metadata["rows_failed"] == 2 and metadata["dead_letters"] == 2
    assert f"{bq_dataset}.t: load" in metadata["dead_letter_error"]
    assert "attempts" not in metadata["dead_letter_error"]  # a refusal is not tried again
    store = DeadLetterStore(etl_home / "dead_letters")
    (letters,) = store.files("events_bq")
    assert [r["name"] for r in store.read(letters).payload.to_pylist()] == ["not a number 1", "not a number 2"]
    assert bq_emulator.rows(f"{PROJECT}.{bq_dataset}.t") == []


@pytest.mark.slow
def test_bigquery_down_keeps_the_rows_and_the_next_run_loads_them_first(
        bq_emulator: BigQueryEmulator, bq_dataset: str, etl_home: Path) -> None:
    manager = sink(bq_emulator, bq_dataset, etl_home, write="merge", chunk_rows=2)
    write(manager, [rows([1], "a")])
    store = DeadLetterStore(etl_home / "dead_letters")
    bq_emulator.stop()
    try:
        metadata = write(manager, [rows([1, 2, 3], "b")])
        assert metadata["rows_failed"] == 3 and metadata["dead_letters"] == 3
        assert "after 2 attempts" in metadata["dead_letter_error"]
        # nor can the table be read: the run says so and still succeeds
        assert "target_metadata_error" in metadata and "dagster/row_count" not in metadata
        assert sum(f.rows for f in store.files("events_bq")) == 3
    finally:
        bq_emulator.start()
    assert names(bq_emulator, bq_dataset) == {1: "a1"}  # kept across the restart, nothing new
    metadata = write(manager, [rows([3], "c")], NEXT_DAY)  # the kept rows go first, then these
    assert metadata["dead_letters_replayed"] == 3 and metadata["dead_letters"] == 0
    assert names(bq_emulator, bq_dataset) == {1: "b1", 2: "b2", 3: "c3"}
    assert store.files("events_bq") == []


def test_replace_partition_without_the_cursor_column_is_a_clear_error(
        bq_emulator: BigQueryEmulator, bq_dataset: str, etl_home: Path) -> None:
    manager = sink(bq_emulator, bq_dataset, etl_home, write="replace_partition", cursor_column="changed_at")
    with pytest.raises(BigQuerySinkError, match="cursor column changed_at"):
        write(manager, [rows([1], "a")])


def test_a_missing_credentials_file_names_the_env_var_not_the_path(
        bq_emulator: BigQueryEmulator, bq_dataset: str, etl_home: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BQ_KEY_FILE", "/secret/place/key.json")
    manager = sink(bq_emulator, bq_dataset, etl_home, credentials_env="BQ_KEY_FILE")
    with pytest.raises(BigQuerySinkError, match=r"\$BQ_KEY_FILE does not exist") as error:
        write(manager, [rows([1], "a")])
    assert "/secret/place" not in str(error.value)
