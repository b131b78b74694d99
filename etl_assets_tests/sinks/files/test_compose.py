"""Compose: a file sink's shards merged into one file, by the function and by `etl-assets compose`."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from etl_assets.cli import main
from etl_assets.sinks.files.compose import compose
from etl_assets.sinks.files.formats import file_format
from etl_assets.sinks.files.target import FileTarget
from etl_assets.sinks.files.writer import FileSink
from etl_assets_tests.sinks.files.file_reading import rows_of


def write_shards(folder: Path, fmt: str, shards: dict[str, list[dict]]) -> None:
    sink = FileSink(FileTarget(str(folder)), file_format(fmt), "shard", where="sink t")
    for partition, rows in shards.items():
        batch = pa.RecordBatch.from_pylist(rows)
        sink.write(batch.schema, [batch], partition=partition, run_id="r")


SHARDS = {
    "0001..0002": [{"id": 1, "name": "a"}, {"id": 2, "name": 'q"uote,\nline'}],
    "0002..0003": [{"id": 3, "name": None}, {"id": 1, "name": "a v2"}],
    "0003..0004": [{"id": 4, "name": "", "unit": "kg"}],  # a column the others lack
}


@pytest.mark.parametrize("fmt", ["parquet", "json", "csv"])
def test_compose_concatenates_shards_in_partition_order(tmp_path: Path, fmt: str) -> None:
    write_shards(tmp_path / "lake", fmt, SHARDS)
    done = compose(str(tmp_path / "lake"), fmt)
    suffix = file_format(fmt).suffix
    assert done.rows == 5 and done.shards == [f"{k}{suffix}" for k in SHARDS]
    rows = rows_of(fmt, (tmp_path / "lake" / f"composed{suffix}").read_bytes())
    if fmt == "csv":
        assert [(r["id"], r["name"], r["unit"]) for r in rows] == [
            ("1", "a", ""), ("2", 'q"uote,\nline', ""), ("3", "", ""), ("1", "a v2", ""), ("4", "", "kg")]
        text = (tmp_path / "lake" / "composed.csv").read_text()  # values copied as text
        assert '\n"4","","kg"' in text and '\n"3",,\n' in text  # "" stays "", null stays empty
    else:
        want = [dict(r) for shard in SHARDS.values() for r in shard]
        if fmt == "parquet":
            want = [{"id": r["id"], "name": r["name"], "unit": r.get("unit")} for r in want]
        assert rows == want
    assert len(list((tmp_path / "lake").glob(f"*{suffix}"))) == 4  # the shards stay


@pytest.mark.parametrize("fmt", ["parquet", "json"])
def test_compose_by_key_keeps_the_latest_row_and_can_remove_the_shards(tmp_path: Path, fmt: str) -> None:
    write_shards(tmp_path / "lake", fmt, SHARDS)
    done = compose(str(tmp_path / "lake"), fmt, key=["id"], remove_shards=True, output="all" + file_format(fmt).suffix)
    assert done.rows == 4
    rows = rows_of(fmt, (tmp_path / "lake" / f"all{file_format(fmt).suffix}").read_bytes())
    assert sorted((r["id"], r["name"]) for r in rows) == [(1, "a v2"), (2, 'q"uote,\nline'), (3, None), (4, "")]
    assert [p.name for p in (tmp_path / "lake").iterdir()] == [f"all{file_format(fmt).suffix}"]


def test_etl_assets_compose_by_sink_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    write_shards(tmp_path / "lake", "parquet", SHARDS)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "sources": {"s": {"connection": {"env": "X"}, "table": "t", "cursor": "c", "primary_key": ["id"]}},
        "sinks": {"lake": {"source": "s", "kind": "parquet", "path": str(tmp_path / "lake")}}}))
    monkeypatch.setenv("ETL_ASSETS_SPEC", str(spec))
    assert main(["compose", "--sink", "lake", "--drop-duplicates"]) == 0
    assert "composed 3 shard(s), 4 rows" in capsys.readouterr().out
    table = pq.read_table(tmp_path / "lake" / "composed.parquet")
    assert sorted(table.column("id").to_pylist()) == [1, 2, 3, 4]
    assert main(["compose", "--sink", "nope"]) == 2
    assert "no parquet sink 'nope' (parquet sinks: lake)" in capsys.readouterr().err
    assert main(["compose", "--path", str(tmp_path / "empty")]) == 1
    assert "no .parquet shards" in capsys.readouterr().err
    # composing again leaves the composed file out of its own input
    assert main(["compose", "--path", str(tmp_path / "lake"), "--format", "parquet"]) == 0
    assert pq.read_table(tmp_path / "lake" / "composed.parquet").num_rows == 5


def test_integer_windows_compose_in_numeric_order(tmp_path: Path) -> None:
    write_shards(tmp_path / "lake", "json", {"1000..2000": [{"id": 3}], "200..300": [{"id": 2}], "0..200": [{"id": 1}]})
    done = compose(str(tmp_path / "lake"), "json")
    assert done.shards == ["0..200.jsonl", "200..300.jsonl", "1000..2000.jsonl"]
    assert [r["id"] for r in rows_of("json", (tmp_path / "lake" / "composed.jsonl").read_bytes())] == [1, 2, 3]
