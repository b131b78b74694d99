"""The file sink on local disk: modes, formats, keys and atomic writes, read back from the files."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl_assets.sinks.files.formats import file_format
from etl_assets.sinks.files.target import FileTarget
from etl_assets.sinks.files.writer import FileSink, FileSinkError
from etl_assets.spec import SpecError, parse_spec
from etl_assets_tests.sinks.files.file_reading import by_id, rows_of
from etl_assets_tests.sinks.postgres.test_postgres import EVERY_TYPE, ROWS

UTC = timezone.utc
SUFFIX = {"parquet": ".parquet", "json": ".jsonl", "csv": ".csv"}


def sink(folder: Path, fmt: str = "parquet", mode: str = "shard", **kwargs: object) -> FileSink:
    return FileSink(FileTarget(str(folder)), file_format(fmt), mode, where="sink test",  # type: ignore[arg-type]
                    **kwargs)  # type: ignore[arg-type]


def readings(*rows: tuple[int, str, float | None]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(
        [{"id": i, "name": name, "value": value} for i, name, value in rows],
        pa.schema([("id", pa.int64()), ("name", pa.string()), ("value", pa.float64())]))


def write(s: FileSink, *batches: pa.RecordBatch, partition: str | None = "p", run: str = "run-1"):
    return s.write(batches[0].schema, list(batches), partition=partition, run_id=run)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("fmt", ["parquet", "json", "csv"])
def test_shard_mode_writes_a_file_per_partition_and_a_rerun_replaces_it(tmp_path: Path, fmt: str) -> None:
    s = sink(tmp_path / "lake", fmt)
    write(s, readings((1, "a", 0.5), (2, 'q"uote,\n', None)), partition="0..10")
    write(s, readings((11, "b", 1.0)), partition="10..20")
    write(s, readings((1, "a again", 2.5)), partition="0..10", run="run-2")  # the re-run

    suffix = SUFFIX[fmt]
    assert listing(tmp_path / "lake") == [f"0..10{suffix}", f"10..20{suffix}"]
    first = rows_of(fmt, (tmp_path / "lake" / f"0..10{suffix}").read_bytes())
    second = rows_of(fmt, (tmp_path / "lake" / f"10..20{suffix}").read_bytes())
    if fmt == "csv":
        assert first == [{"id": "1", "name": "a again", "value": "2.5"}]
        assert second == [{"id": "11", "name": "b", "value": "1"}]
    else:
        assert first == [{"id": 1, "name": "a again", "value": 2.5}]
        assert second == [{"id": 11, "name": "b", "value": 1.0}]


@pytest.mark.parametrize("fmt", ["parquet", "json", "csv"])
def test_shard_values_are_exact_in_each_format(tmp_path: Path, fmt: str) -> None:
    s = sink(tmp_path / "lake", fmt)
    write(s, readings((1, 'q"uote,\n x', None), (2, "", -0.25), (3, None, 1e300)))
    got = by_id(rows_of(fmt, (tmp_path / "lake" / f"p{SUFFIX[fmt]}").read_bytes()))
    if fmt == "csv":  # CSV has no null: an empty field; an empty string is quoted
        assert got[1] == {"id": "1", "name": 'q"uote,\n x', "value": ""}
        assert got[3]["name"] == "" and float(got[3]["value"]) == 1e300
        raw = (tmp_path / "lake" / "p.csv").read_text()
        assert '\n2,"",' in raw and "\n3,," in raw
    else:
        assert got == {1: {"id": 1, "name": 'q"uote,\n x', "value": None},
                       2: {"id": 2, "name": "", "value": -0.25},
                       3: {"id": 3, "name": None, "value": 1e300}}


def test_every_type_round_trips_in_parquet(tmp_path: Path) -> None:
    s = sink(tmp_path / "lake")
    batch = pa.RecordBatch.from_pylist(ROWS, EVERY_TYPE)
    write(s, batch)
    table = pq.read_table(tmp_path / "lake" / "p.parquet")
    assert table.schema.names == EVERY_TYPE.names
    assert [f.metadata for f in table.schema] == [f.metadata for f in EVERY_TYPE]  # logical types kept
    got, want = table.to_pylist(), batch.to_pylist()
    for g, w in zip(got, want, strict=True):
        assert {k: v for k, v in g.items() if k != "score"} == {k: v for k, v in w.items() if k != "score"}
    assert [r["score"] for r in got][1:] == [float("-inf"), 0.0]


def test_every_type_in_json_lines_and_csv(tmp_path: Path) -> None:
    batch = pa.RecordBatch.from_pylist(ROWS, EVERY_TYPE)
    write(sink(tmp_path / "j", "json"), batch)
    write(sink(tmp_path / "c", "csv"), batch)
    docs = by_id(rows_of("json", (tmp_path / "j" / "p.jsonl").read_bytes()))
    assert docs[1]["at"] == "2024-01-01T12:00:00Z" and docs[1]["amount"] == "-123456789.125"
    assert docs[1]["doc"] == {"a": [1, None, "x"], "ü": "€"} and docs[1]["raw"] == "AP9ceA=="
    assert docs[1]["score"] is None and docs[2]["tags"] == [] and docs[3]["doc"] is None
    rows = by_id(rows_of("csv", (tmp_path / "c" / "p.csv").read_bytes()))
    assert rows[1]["tags"] == '["a",null,"b\\"c","{d}"]' and rows[1]["raw"] == "AP9ceA=="
    assert rows[1]["exact"] == "3.14159265358979323846264338327950288419716939937510"
    assert rows[2]["tags"] == "[]" and rows[3]["tags"] == "" and rows[3]["raw"] == ""


@pytest.mark.parametrize("fmt", ["parquet", "json", "csv"])
def test_update_merges_by_key_and_the_latest_row_wins(tmp_path: Path, fmt: str) -> None:
    s = sink(tmp_path / "lake", fmt, "update", primary_key=["id"])
    write(s, readings((1, "one", 1.0), (2, "two", 2.0), (3, "three", 3.0)), partition="a")
    # the next run: 2 changes twice (in two batches; the later wins), 4 is new, 1 and 3 stay
    result = write(s, readings((2, "two v2", 20.0), (4, "four", None)),
                   readings((2, "two v3", 200.0)), partition="b", run="run-2")
    assert (result.rows, result.rows_total) == (2, 4)
    assert listing(tmp_path / "lake") == [".update.lock", f"data{SUFFIX[fmt]}"]
    got = by_id(rows_of(fmt, (tmp_path / "lake" / f"data{SUFFIX[fmt]}").read_bytes()))
    assert sorted(got) == [1, 2, 3, 4]
    assert {i: r["name"] for i, r in got.items()} == {1: "one", 2: "two v3", 3: "three", 4: "four"}
    assert str(got[2]["value"]) in ("200.0", "200")


def test_update_keeps_columns_the_new_rows_lack_and_adds_new_ones(tmp_path: Path) -> None:
    s = sink(tmp_path / "lake", "parquet", "update", primary_key=["id"])
    write(s, readings((1, "one", 1.0), (2, "two", 2.0)))
    newer = pa.RecordBatch.from_pylist([{"id": 2, "name": "two v2", "unit": "kg"}])
    write(s, newer, run="run-2")
    got = by_id(pq.read_table(tmp_path / "lake" / "data.parquet").to_pylist())
    assert got == {1: {"id": 1, "name": "one", "unit": None, "value": 1.0},
                   2: {"id": 2, "name": "two v2", "unit": "kg", "value": None}}


def test_update_with_a_composite_key(tmp_path: Path) -> None:
    s = sink(tmp_path / "lake", "json", "update", primary_key=["site", "day"])
    rows = [{"site": "a", "day": 1, "n": 1}, {"site": "a", "day": 2, "n": 2}, {"site": "b", "day": 1, "n": 3}]
    write(s, pa.RecordBatch.from_pylist(rows))
    write(s, pa.RecordBatch.from_pylist([{"site": "a", "day": 2, "n": 20}, {"site": "b", "day": 2, "n": 4}]), run="r2")
    got = rows_of("json", (tmp_path / "lake" / "data.jsonl").read_bytes())
    assert sorted((r["site"], r["day"], r["n"]) for r in got) == [("a", 1, 1), ("a", 2, 20), ("b", 1, 3), ("b", 2, 4)]


def test_replace_mode_keeps_only_the_last_run(tmp_path: Path) -> None:
    s = sink(tmp_path / "lake", "parquet", "replace")
    write(s, readings((1, "one", 1.0), (2, "two", 2.0)), partition="a")
    write(s, readings((3, "three", 3.0)), partition="b", run="run-2")
    assert listing(tmp_path / "lake") == ["data.parquet"]
    assert pq.read_table(tmp_path / "lake" / "data.parquet").column("id").to_pylist() == [3]


def test_drop_duplicates_keeps_the_last_row_per_key_of_a_run(tmp_path: Path) -> None:
    s = sink(tmp_path / "lake", "csv", drop_duplicates=True, primary_key=["id"])
    write(s, readings((1, "a", 1.0), (2, "b", 2.0), (1, "a2", 3.0)), readings((2, "b2", 4.0)))
    got = rows_of("csv", (tmp_path / "lake" / "p.csv").read_bytes())
    assert got == [{"id": "1", "name": "a2", "value": "3"}, {"id": "2", "name": "b2", "value": "4"}]


def test_without_drop_duplicates_every_row_is_written(tmp_path: Path) -> None:
    write(sink(tmp_path / "lake"), readings((1, "a", 1.0), (1, "a2", 3.0)))
    assert pq.read_table(tmp_path / "lake" / "p.parquet").num_rows == 2


def test_a_run_that_fails_midway_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    for mode in ("shard", "update"):
        s = sink(tmp_path / mode, "parquet", mode, primary_key=["id"])
        write(s, readings((1, "kept", 1.0)))

        def failing() -> Iterator[pa.RecordBatch]:
            yield readings((2, "lost", 2.0))
            raise RuntimeError("source connection dropped")

        with pytest.raises(RuntimeError, match="dropped"):
            s.write(readings((0, "", 0.0)).schema, failing(), partition="p", run_id="run-2")
        name = "p.parquet" if mode == "shard" else "data.parquet"
        assert pq.read_table(tmp_path / mode / name).to_pylist() == [{"id": 1, "name": "kept", "value": 1.0}]
        assert not [p for p in (tmp_path / mode).iterdir() if p.name.endswith(".tmp")]


def test_null_key_and_missing_key_name_the_sink_and_row(tmp_path: Path) -> None:
    s = sink(tmp_path / "lake", "parquet", "update", primary_key=["id"])
    batch = pa.RecordBatch.from_pylist([{"id": 1, "name": "x"}, {"id": None, "name": "no key"}])
    with pytest.raises(ValueError, match=r"sink test: key column id is null in row 1 .*no key"):
        write(s, batch)
    with pytest.raises(ValueError, match=r"sink test: key column.*code.*not in the data"):
        write(sink(tmp_path / "lake", "parquet", "update", primary_key=["code"]), batch)
    assert not (tmp_path / "lake" / "data.parquet").exists()


def test_an_empty_run_writes_an_empty_shard_with_the_schema(tmp_path: Path) -> None:
    s = sink(tmp_path / "lake")
    empty = readings((1, "x", 1.0)).slice(0, 0)
    s.write(empty.schema, [], partition="p", run_id="r")
    table = pq.read_table(tmp_path / "lake" / "p.parquet")
    assert table.num_rows == 0 and table.schema.names == ["id", "name", "value"]


def test_unpartitioned_shards_are_named_by_run(tmp_path: Path) -> None:
    write(sink(tmp_path / "lake", "json"), readings((1, "x", 1.0)), partition=None, run="abc123")
    assert listing(tmp_path / "lake") == ["run-abc123.jsonl"]


def spec_with(**sink: object) -> dict:
    return {"sources": {"s": {"connection": {"env": "X"}, "table": "t", "cursor": "c", "primary_key": ["id"]}},
            "sinks": {"lake": {"source": "s", "kind": "parquet", "path": "/data/lake", **sink}}}


def test_spec_accepts_a_parquet_sink_and_rejects_secrets_and_typos() -> None:
    spec = parse_spec(spec_with(mode="update", format="csv", storage_options={"endpoint_url": "http://x"}))
    lake = spec.sinks["lake"]
    assert (lake.kind, lake.mode, lake.format) == ("parquet", "update", "csv")  # type: ignore[union-attr]
    with pytest.raises(SpecError, match=r"sink 'lake': field 'storage_options'.*secret.*environment"):
        parse_spec(spec_with(storage_options={"secret": "s3cr3t"}), "p.yaml")
    with pytest.raises(SpecError, match=r"p.yaml: sink 'lake': field 'mode'"):
        parse_spec(spec_with(mode="upsert"), "p.yaml")
    with pytest.raises(SpecError, match=r"sink 'lake': field 'fromat'"):
        parse_spec(spec_with(fromat="csv"), "p.yaml")


def test_target_paths_expand_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path))
    target = FileTarget("${LAKE_ROOT}/lake")
    with target.writing("x.txt") as out:
        out.write(b"hello")
    assert (tmp_path / "lake" / "x.txt").read_bytes() == b"hello"
    assert target.names() == ["x.txt"] and target.display == f"{tmp_path}/lake"


def test_timestamps_keep_their_zone_in_every_format(tmp_path: Path) -> None:
    at = datetime(2024, 3, 1, 12, 30, 15, 250_000, tzinfo=UTC)
    batch = pa.RecordBatch.from_pylist([{"id": 1, "at": at}],
                                       pa.schema([("id", pa.int64()), ("at", pa.timestamp("us", "UTC"))]))
    for fmt in ("parquet", "json", "csv"):
        write(sink(tmp_path / fmt, fmt), batch)
    assert pq.read_table(tmp_path / "parquet" / "p.parquet").column("at").to_pylist() == [at]
    assert rows_of("json", (tmp_path / "json" / "p.jsonl").read_bytes())[0]["at"] == "2024-03-01T12:30:15.250000Z"
    assert rows_of("csv", (tmp_path / "csv" / "p.csv").read_bytes())[0]["at"] == "2024-03-01 12:30:15.250000Z"


def test_dictionary_columns_are_written_as_their_values(tmp_path: Path) -> None:
    batch = pa.RecordBatch.from_pylist([{"id": 1, "site": "north"}, {"id": 2, "site": None}, {"id": 3, "site": "north"}])
    batch = batch.set_column(1, "site", pa.array(["north", None, "north"]).dictionary_encode())
    for fmt in ("csv", "json", "parquet"):
        write(sink(tmp_path / fmt, fmt), batch)
    assert [r["site"] for r in rows_of("csv", (tmp_path / "csv" / "p.csv").read_bytes())] == ["north", "", "north"]
    assert [r["site"] for r in rows_of("json", (tmp_path / "json" / "p.jsonl").read_bytes())] == ["north", None, "north"]
    assert pq.read_table(tmp_path / "parquet" / "p.parquet").column("site").to_pylist() == ["north", None, "north"]


def test_a_merge_that_cannot_cast_the_existing_rows_names_the_sink_and_file(tmp_path: Path) -> None:
    s = sink(tmp_path / "lake", "parquet", "update", primary_key=["id"])
    write(s, pa.RecordBatch.from_pylist([{"id": 1, "v": "not a number"}]))
    with pytest.raises(ValueError, match=r"sink test: cannot merge into .*data\.parquet: .*not a number"):
        write(s, pa.RecordBatch.from_pylist([{"id": 2, "v": 2.5}]), run="run-2")
    assert pq.read_table(tmp_path / "lake" / "data.parquet").to_pylist() == [{"id": 1, "v": "not a number"}]


def test_json_update_matches_keys_as_the_file_holds_them(tmp_path: Path) -> None:
    schema = pa.schema([("at", pa.timestamp("us", "UTC")), ("site", pa.string()), ("n", pa.int64())])
    s = sink(tmp_path / "lake", "json", "update", primary_key=["at", "site"])
    t1, t2 = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 0, 0, 0, 500, tzinfo=UTC)
    rows = [{"at": t1, "site": 'a"b', "n": 1}, {"at": t2, "site": 'a"b', "n": 2}, {"at": t1, "site": "c", "n": 3}]
    write(s, pa.RecordBatch.from_pylist(rows, schema))
    write(s, pa.RecordBatch.from_pylist([{"at": t2, "site": 'a"b', "n": 20}], schema), run="r2")
    got = rows_of("json", (tmp_path / "lake" / "data.jsonl").read_bytes())
    assert sorted((r["at"], r["site"], r["n"]) for r in got) == [
        ("2024-01-01T00:00:00.000500Z", 'a"b', 20), ("2024-01-01T00:00:00Z", 'a"b', 1), ("2024-01-01T00:00:00Z", "c", 3)]


def versioned(*rows: tuple[int, str, int]) -> pa.RecordBatch:
    """Rows (id, name, minute): updated_at is 2024-03-01 00:<minute> UTC."""
    return pa.RecordBatch.from_pylist(
        [{"id": i, "name": name, "updated_at": datetime(2024, 3, 1, 0, minute, tzinfo=UTC)}
         for i, name, minute in rows],
        pa.schema([("id", pa.int64()), ("name", pa.string()),
                   ("updated_at", pa.timestamp("us", tz="UTC"))]))


@pytest.mark.parametrize("fmt", ["parquet", "json", "csv"])
def test_update_keeps_a_stored_row_newer_than_the_runs(tmp_path: Path, fmt: str) -> None:
    s = sink(tmp_path / "lake", fmt, "update", primary_key=["id"], newest_by="updated_at")
    write(s, versioned((1, "new", 30), (2, "new", 30), (3, "old", 10)), partition="later")
    # an older run: 1 older (stays new), 2 as old as stored (replaces: a tie goes to the run),
    # 3 newer (replaces), 4 new
    result = write(s, versioned((1, "old", 10), (2, "tie", 30), (3, "newer", 20), (4, "four", 5)),
                   partition="earlier", run="run-2")
    assert (result.rows, result.rows_total, result.kept_newer) == (3, 4, 1)
    got = by_id(rows_of(fmt, (tmp_path / "lake" / f"data{SUFFIX[fmt]}").read_bytes()))
    assert {int(i): r["name"] for i, r in got.items()} == {1: "new", 2: "tie", 3: "newer", 4: "four"}


def test_update_by_a_composite_key_keeps_newer_stored_rows(tmp_path: Path) -> None:
    s = sink(tmp_path / "lake", "parquet", "update", primary_key=["site", "day"], newest_by="at")
    schema = pa.schema([("site", pa.string()), ("day", pa.int64()), ("at", pa.int64()), ("n", pa.int64())])

    def rows(*values: tuple[str, int, int | None, int]) -> pa.RecordBatch:
        return pa.RecordBatch.from_pylist([dict(zip(schema.names, v, strict=True)) for v in values], schema)

    write(s, rows(("a", 1, 50, 1), ("a", 2, None, 2), ("b", 1, 50, 3)))
    result = write(s, rows(("a", 1, 40, 10), ("a", 2, 1, 20), ("b", 1, 60, 30), ("b", 2, 1, 40)), run="r2")
    assert result.kept_newer == 1
    got = pq.read_table(tmp_path / "lake" / "data.parquet").to_pylist()
    assert sorted((r["site"], r["day"], r["n"]) for r in got) == [
        ("a", 1, 1), ("a", 2, 20), ("b", 1, 30), ("b", 2, 40)]  # a stored null cursor is the oldest


def test_drop_duplicates_keeps_the_newest_row_per_key_of_a_run(tmp_path: Path) -> None:
    s = sink(tmp_path / "lake", "parquet", drop_duplicates=True, primary_key=["id"], newest_by="updated_at")
    write(s, versioned((1, "newest", 30), (1, "older, later", 10), (2, "b", 5)))
    got = pq.read_table(tmp_path / "lake" / "p.parquet").to_pylist()
    assert [(r["id"], r["name"]) for r in got] == [(1, "newest"), (2, "b")]


def test_update_without_the_cursor_column_is_a_clear_error(tmp_path: Path) -> None:
    s = sink(tmp_path / "lake", "parquet", "update", primary_key=["id"], newest_by="updated_at")
    with pytest.raises(FileSinkError, match=r"sink test: conflict newest compares the cursor column "
                                            r"updated_at, which the rows do not have \(columns: id, "
                                            r"name, value\)"):
        write(s, readings((1, "a", 1.0)))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_shard_from_an_older_staged_version_does_not_replace_a_newer_one(tmp_path: Path, fmt: str) -> None:
    s = sink(tmp_path / "lake", fmt)
    s.write(SCHEMA_READINGS, [readings((1, "newer", 2.0))], partition="p", run_id="r2", version=20)
    late = s.write(SCHEMA_READINGS, [readings((1, "older", 1.0))], partition="p", run_id="r1", version=10)
    assert (late.rows, late.kept_newer) == (0, 1)
    again = s.write(SCHEMA_READINGS, [readings((1, "same version", 3.0))], partition="p", run_id="r3",
                    version=20)
    assert again.rows == 1
    got = rows_of(fmt, (tmp_path / "lake" / f"p{SUFFIX[fmt]}").read_bytes())
    assert [r["name"] for r in got] == ["same version"]
    assert listing(tmp_path / "lake") == [".versions", f"p{SUFFIX[fmt]}"]


SCHEMA_READINGS = readings((0, "", 0.0)).schema
