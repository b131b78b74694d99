"""What the file sink says of its dataset: run metadata per partition (a range of them in one
step too), Dagster's standard keys, and the asset checks' counts, in every mode and format,
on local disk and S3; its description and kinds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from dagster import DagsterInstance, TableSchema

from etl_assets.sinks.base import SinkSetup, WindowCount
from etl_assets.sinks.files import target_state
from etl_assets.sinks.files.io_manager import ParquetSinkIOManager
from etl_assets.sinks.files.spec import ParquetSinkSpec
from etl_assets.watermark import Window
from etl_assets_testing.servers.s3 import S3Bucket
from etl_assets_tests.sinks.sink_runs import DAY, NEXT_DAY, keys, rows, run_range, run_sink
from etl_assets_tests.sinks.sink_runs import EVENTS as SCHEMA

SUFFIX = {"parquet": ".parquet", "json": ".jsonl", "csv": ".csv"}
FORMATS = ["parquet", "json", "csv"]


def sink(path: str, etl_home: Path, key: list[str] | None = None,
         **config: Any) -> ParquetSinkIOManager:
    spec = ParquetSinkSpec(kind="parquet", source="events", path=path, **config)
    return ParquetSinkIOManager(SinkSetup.of(
        "events_lake", spec, source_primary_key=["id"] if key is None else key,
        source_cursor="updated_at", dead_letter_root=str(etl_home / "dead_letters")))






def write(manager: ParquetSinkIOManager, batch: pa.RecordBatch, window: Window) -> dict[str, Any]:
    return run_sink(manager, [batch], SCHEMA, window, "events_lake")


# Rows 1-5 in DAY, then 4-6 in NEXT_DAY (keys 4 and 5 updated into the later window): what
# each mode's dataset holds of each window.
EXPECTED = {
    # shards keep the old rows of 4 and 5: a key with a row in the window is held there
    "shard": (WindowCount(rows=5, newer=0), WindowCount(rows=3, newer=0), 8),
    "update": (WindowCount(rows=3, newer=2), WindowCount(rows=3, newer=0), 6),
    "replace": (WindowCount(rows=0, newer=2), WindowCount(rows=3, newer=0), 3),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode", ["shard", "update", "replace"])
def test_count_window_and_metadata_in_every_mode_and_format(
        tmp_path: Path, etl_home: Path, fmt: str, mode: str) -> None:
    manager = sink(str(tmp_path / "lake"), etl_home, mode=mode, format=fmt)
    assert manager.target_columns() is None and manager.count_window(DAY, keys([1])) == \
        WindowCount(rows=0)
    first = write(manager, rows([1, 2, 3, 4, 5], DAY), DAY)
    second = write(manager, rows([4, 5, 6], NEXT_DAY), NEXT_DAY)
    day, next_day, total = EXPECTED[mode]
    assert manager.count_window(DAY, keys([1, 2, 3, 4, 5])) == day
    assert manager.count_window(NEXT_DAY, keys([4, 5, 6])) == next_day
    assert manager.count_window(DAY, None).rows == day.rows
    assert manager.target_columns() == ["id", "name", "updated_at"]
    assert (first["rows_written"], second["rows_written"]) == (5, 3)
    assert first["dagster/row_count"] == 5 and second["dagster/row_count"] == total
    folder = str(tmp_path / "lake")
    assert second["dagster/uri"] == (folder if mode == "shard" else f"{folder}/data{SUFFIX[fmt]}")
    schema = second["dagster/column_schema"]
    assert isinstance(schema, TableSchema)
    assert [c.name for c in schema.columns] == ["id", "name", "updated_at"]
    if fmt == "parquet":
        assert [c.type for c in schema.columns] == ["int64", "string", "timestamp[us, tz=UTC]"]
    key = ["primary key (id)"] if mode == "update" else []
    assert (schema.constraints.other if schema.constraints else []) == key


def test_json_and_csv_rows_are_counted_only_under_the_size_limit(
        tmp_path: Path, etl_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = sink(str(tmp_path / "lake"), etl_home, format="csv")
    # a value holding a newline is one row
    batch = pa.RecordBatch.from_pylist([{"id": 1, "name": "two\nlines", "updated_at": DAY.hi}],
                                       SCHEMA)
    write(manager, batch, DAY)
    write(manager, rows([4, 5, 6], NEXT_DAY), NEXT_DAY)
    assert manager.target_metadata()["dagster/row_count"] == 4
    monkeypatch.setattr(target_state, "EXACT_COUNT_MAX_BYTES", 100)
    metadata = manager.target_metadata()
    assert "dagster/row_count" not in metadata and "dagster/column_schema" in metadata


def test_count_window_counts_distinct_keys_and_composite_keys(tmp_path: Path, etl_home: Path) -> None:
    manager = sink(str(tmp_path / "lake"), etl_home, key=["id", "name"], format="json")
    write(manager, pa.concat_batches([rows([1, 2], DAY, "a"), rows([1], DAY, "a")]), DAY)
    write(manager, rows([2, 3], NEXT_DAY, "a"), NEXT_DAY)
    given = pa.table({"id": [1, 2, 2], "name": ["a1", "a2", "b2"]})
    # (2, a2) has a row in the window too; (2, b2) is nowhere
    assert manager.count_window(DAY, given) == WindowCount(rows=2, newer=0)


def test_count_window_without_a_key_counts_rows(tmp_path: Path, etl_home: Path) -> None:
    manager = sink(str(tmp_path / "lake"), etl_home, key=[], format="csv")
    write(manager, pa.concat_batches([rows([1, 2], DAY), rows([1], DAY)]), DAY)
    assert manager.count_window(DAY, None) == WindowCount(rows=3, newer=0)


def test_a_range_run_writes_each_partition_and_each_has_its_own_metadata(
        tmp_path: Path, etl_home: Path, instance: DagsterInstance) -> None:
    manager = sink(str(tmp_path / "lake"), etl_home, mode="update")
    metadata = run_range(manager, {DAY: [rows([1, 2, 3], DAY)],
                                   NEXT_DAY: [rows([3, 4], NEXT_DAY), rows([5, 6], NEXT_DAY)]},
                         SCHEMA, instance)
    first, second = metadata[DAY.key], metadata[NEXT_DAY.key]
    assert (first["rows_written"], second["rows_written"]) == (3, 4)
    assert (first["rows_in_file"], second["rows_in_file"]) == (3, 6)
    assert first["dagster/row_count"] == second["dagster/row_count"] == 6
    assert manager.count_window(DAY, keys([1, 2, 3])) == WindowCount(rows=2, newer=1)


@pytest.mark.parametrize("mode", ["shard", "update", "replace"])
def test_s3_counts_and_metadata(s3: S3Bucket, etl_home: Path, monkeypatch: pytest.MonkeyPatch,
                                mode: str) -> None:
    monkeypatch.setenv("LAKE_BUCKET", s3.name)
    manager = sink("s3://${LAKE_BUCKET}/lake/events", etl_home, mode=mode,
                   storage_options=s3.server.storage_options())
    write(manager, rows([1, 2, 3, 4, 5], DAY), DAY)
    second = write(manager, rows([4, 5, 6], NEXT_DAY), NEXT_DAY)
    day, next_day, total = EXPECTED[mode]
    assert manager.count_window(DAY, keys([1, 2, 3, 4, 5])) == day
    assert manager.count_window(NEXT_DAY, keys([4, 5, 6])) == next_day
    assert second["dagster/row_count"] == total
    folder = f"s3://{s3.name}/lake/events"
    assert second["dagster/uri"] == (folder if mode == "shard" else f"{folder}/data.parquet")
    assert manager.target_columns() == ["id", "name", "updated_at"]


def test_the_uri_shows_no_secret(tmp_path: Path, etl_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKE_DIR", str(tmp_path))
    monkeypatch.setenv("LAKE_TOKEN", "very-secret-value")
    local = sink("${LAKE_DIR}/lake", etl_home)
    assert local.dataset_uri() == f"{tmp_path}/lake"
    remote = sink("https://user:${LAKE_TOKEN}@files.example/lake?sig=${LAKE_TOKEN}", etl_home,
                  mode="update")
    shown = remote.dataset_uri()
    assert "very-secret-value" not in shown and "user" not in shown
    assert shown == "https://***@files.example/lake?sig=***/data.parquet"
    named = sink("https://files.example/${LAKE_TOKEN}/lake", etl_home)
    assert named.dataset_uri() == "https://files.example/${LAKE_TOKEN}/lake"


def test_description_expands_the_home_folder_only_and_kinds_name_the_format(
        etl_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKE_BUCKET", "secret-bucket-name")

    def spec(path: str, **config: Any) -> ParquetSinkSpec:
        return ParquetSinkSpec(kind="parquet", source="events", path=path, **config)

    assert spec("${ETL_ASSETS_HOME}/lake").describe_target() == f"{etl_home}/lake (parquet, shard)"
    shown = spec("s3://${LAKE_BUCKET}/lake", format="csv", mode="update").describe_target()
    assert shown == "s3://${LAKE_BUCKET}/lake (csv, update)"
    assert spec("${ETL_ASSETS_HOME}/lake").asset_kinds() == {"parquet"}
    assert spec("/data/lake", format="json").asset_kinds() == {"json"}
    assert spec("s3://${LAKE_BUCKET}/lake", format="csv").asset_kinds() == {"csv", "s3"}
    assert spec("gs://bucket/lake").asset_kinds() == {"parquet", "gcs"}
