"""What the BigQuery sink says of its table, against a real BigQuery API (bqemulator): run
metadata per partition (a range of them in one step too), Dagster's standard keys, and the
asset checks' counts."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from dagster import DagsterInstance, TableSchema

from etl_assets.sinks.base import SinkSetup, WindowCount
from etl_assets.sinks.bigquery.io_manager import BigQuerySinkIOManager
from etl_assets.sinks.bigquery.spec import BigQuerySinkSpec
from etl_assets.watermark import Window
from etl_assets_testing.servers.bigquery import PROJECT, BigQueryEmulator
from etl_assets_tests.sinks.bigquery.test_bigquery import DAY, NEXT_DAY, SCHEMA, sink, write
from etl_assets_tests.sinks.sink_runs import keys, rows, run_range


@pytest.mark.parametrize(("mode", "day"), [("merge", WindowCount(rows=3, newer=2)),
                                           # append keeps the old rows of 4 and 5
                                           ("append", WindowCount(rows=5, newer=0))])
def test_count_window_counts_each_window_and_keys_a_later_window_replaced(
        bq_emulator: BigQueryEmulator, bq_dataset: str, etl_home: Path, mode: str,
        day: WindowCount) -> None:
    manager = sink(bq_emulator, bq_dataset, etl_home, write=mode)
    assert manager.count_window(DAY, keys([1])) == WindowCount(rows=0)
    assert manager.target_columns() is None
    write(manager, [rows([1, 2, 3, 4, 5], DAY)])
    write(manager, [rows([4, 5, 6], NEXT_DAY)], NEXT_DAY)  # 4 and 5 move to the next day
    assert manager.count_window(DAY, keys([1, 2, 3, 4, 5, 5])) == day
    assert manager.count_window(NEXT_DAY, keys([4, 5, 6])) == WindowCount(rows=3, newer=0)
    assert manager.count_window(DAY, None) == WindowCount(rows=day.rows)
    assert manager.target_columns() == ["id", "name", "updated_at"]
    # the keys' table is dropped
    tables = [t.table_id for t in bq_emulator.client().list_tables(f"{PROJECT}.{bq_dataset}")]
    assert tables == ["t"]


def test_count_window_with_a_composite_key(
        bq_emulator: BigQueryEmulator, bq_dataset: str, etl_home: Path) -> None:
    manager = sink(bq_emulator, bq_dataset, etl_home, write="merge", primary_key=["id", "name"])
    write(manager, [rows([1, 2, 3], DAY, "a")])
    write(manager, [rows([2, 3], NEXT_DAY, "a"), rows([3], NEXT_DAY, "b")], NEXT_DAY)
    given = pa.table({"id": [1, 2, 3, 3], "name": ["a1", "a2", "b3", "x3"]})
    assert manager.count_window(DAY, given) == WindowCount(rows=1, newer=2)


def test_count_window_without_a_key_on_an_integer_cursor(
        bq_emulator: BigQueryEmulator, bq_dataset: str, etl_home: Path) -> None:
    schema = pa.schema([pa.field("name", pa.string()), pa.field("seq", pa.int64())])
    spec = BigQuerySinkSpec(kind="bigquery", source="source", project=PROJECT, dataset=bq_dataset,
                            table="t", api_endpoint=bq_emulator.endpoint, write="append",
                            primary_key=[], retries=0)
    manager = BigQuerySinkIOManager(SinkSetup.of("seq_bq", spec, source_primary_key=[],
                                                 source_cursor="seq",
                                                 dead_letter_root=str(etl_home / "dl")))
    batch = pa.RecordBatch.from_pylist([{"name": "a", "seq": s} for s in (0, 1, 100, 100, 101)],
                                       schema)
    write(manager, [batch], Window(0, 100), schema)
    assert manager.count_window(Window(0, 100), None) == WindowCount(rows=3, newer=0)


def test_target_metadata_gives_the_tables_own_types_key_and_rows(
        bq_emulator: BigQueryEmulator, bq_dataset: str, etl_home: Path) -> None:
    # append: bqemulator updates a table's num_rows on load jobs only, not after a MERGE
    manager = sink(bq_emulator, bq_dataset, etl_home, write="append")
    table_id = f"{PROJECT}.{bq_dataset}.t"
    assert manager.target_metadata() == {"dagster/table_name": table_id}
    first = write(manager, [rows([1, 2], DAY)])
    second = write(manager, [rows([2, 3, 4], NEXT_DAY)], NEXT_DAY)
    assert (first["rows_written"], first["dagster/row_count"]) == (2, 2)
    assert (second["rows_written"], second["dagster/row_count"]) == (3, 5)
    assert second["dagster/table_name"] == table_id
    schema = second["dagster/column_schema"]
    assert isinstance(schema, TableSchema)
    legacy = {"INTEGER": "INT64"}
    assert [(c.name, legacy.get(c.type, c.type), c.constraints.nullable, c.constraints.unique)
            for c in schema.columns] == [("id", "INT64", True, False), ("name", "STRING", True, False),
                                         ("updated_at", "TIMESTAMP", True, False)]
    assert not (schema.constraints and schema.constraints.other)  # append: keys may repeat
    merged = sink(bq_emulator, bq_dataset, etl_home, write="merge").target_metadata()
    keyed = merged["dagster/column_schema"]
    assert isinstance(keyed, TableSchema) and keyed.constraints is not None
    assert keyed.constraints.other == ["primary key (id)"]
    assert [c.constraints.unique for c in keyed.columns] == [True, False, False]


def test_a_range_run_loads_each_partition_and_each_has_its_own_metadata(
        bq_emulator: BigQueryEmulator, bq_dataset: str, etl_home: Path,
        instance: DagsterInstance) -> None:
    manager = sink(bq_emulator, bq_dataset, etl_home, write="replace_partition")
    metadata = run_range(manager, {DAY: [rows([1, 2, 3], DAY)],
                                   NEXT_DAY: [rows([3, 4], NEXT_DAY), rows([5, 6], NEXT_DAY)]},
                         SCHEMA, instance)
    first, second = metadata[DAY.key], metadata[NEXT_DAY.key]
    assert (first["rows_written"], second["rows_written"]) == (3, 4)
    assert first["dagster/row_count"] == second["dagster/row_count"] == 7
    assert manager.count_window(DAY, None) == WindowCount(rows=3)
    assert manager.count_window(NEXT_DAY, keys([3])) == WindowCount(rows=1, newer=0)  # only key 3
    assert manager.count_window(NEXT_DAY, None) == WindowCount(rows=4)
    assert manager.count_window(DAY, keys([1, 3])) == WindowCount(rows=2, newer=0)


def test_kinds_and_description(bq_emulator: BigQueryEmulator, bq_dataset: str, etl_home: Path) -> None:
    spec = sink(bq_emulator, bq_dataset, etl_home).spec
    assert spec.asset_kinds() == {"bigquery"}
    assert spec.describe_target() == f"{PROJECT}.{bq_dataset}.t"
