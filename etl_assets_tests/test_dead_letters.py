from pathlib import Path

import pyarrow as pa
import pytest
from dagster import ConfigurableIOManager, Definitions, OpExecutionContext

from etl_assets.dead_letters import (
    DeadLetterStore,
    ReplayReport,
    build_replay_job,
)


def docs(*ids: int) -> pa.Table:
    return pa.table({"id": list(ids), "doc": [f'{{"id": {i}}}' for i in ids]})


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> DeadLetterStore:
    """A store on local disk, and one on an object store (moto's S3)."""
    if request.param == "local":
        return DeadLetterStore(tmp_path / "dl")
    bucket = request.getfixturevalue("s3")
    return DeadLetterStore(bucket.url("dead_letters"), {"endpoint_url": bucket.server.endpoint})


def test_add_list_count_and_read(store: DeadLetterStore, tmp_path: Path) -> None:
    assert store.count("sink") == 0 and store.files("sink") == []
    first = store.add("sink", "0..10", docs(1, 2), ["503 busy", "400 bad doc"], run_id="run-a")
    store.add("sink", "10..20", docs(15), "timeout", run_id="run-b")
    assert store.add("sink", "10..20", docs(), "nothing", run_id="run-b") is None
    assert store.count("sink") == 3
    assert store.count("sink", "0..10") == 2
    assert [(f.partition, f.rows) for f in store.files("sink")] == [("0..10", 2), ("10..20", 1)]
    letters = store.read(first)
    assert letters.payload.to_pylist() == docs(1, 2).to_pylist()
    assert letters.errors == ["503 busy", "400 bad doc"] and letters.attempts == [1, 1]
    metadata = store.metadata("sink", "0..10")
    assert metadata["dead_letters"] == 2 and metadata["dead_letters_all_partitions"] == 3
    assert not list((tmp_path / "dl").rglob("*.tmp"))


def test_settle_keeps_only_what_still_fails_with_one_more_attempt(store: DeadLetterStore) -> None:
    file = store.add("sink", None, docs(1, 2, 3), "503", run_id="r1")
    assert file is not None
    first_failed = store.read(file).first_failed_at
    assert store.settle(file, [False, True, False], "still 503", run_id="r2") == 1
    (left,) = store.files("sink")
    letters = store.read(left)
    assert letters.payload.column("id").to_pylist() == [2]
    assert letters.errors == ["still 503"] and letters.attempts == [2]
    assert letters.first_failed_at == [first_failed[1]]
    assert store.settle(left, [False], "", run_id="r3") == 0
    assert store.files("sink") == []


def test_streamed_letters_and_supersede_by_version(store: DeadLetterStore) -> None:
    schema = docs(1).schema
    assert store.add_batches("sink", "0..10", schema, iter(()), "e", run_id="r") is None
    kept = store.add_batches("sink", "0..10", schema, iter(docs(1, 2).to_batches()), "413",
                             run_id="r1", version=5)
    store.add("sink", "0..10", docs(3), "503", run_id="r2", version=[9])
    assert kept is not None and kept.rows == 2 and store.count("sink", "0..10") == 3
    assert store.supersede("sink", "0..10", 7) == 2  # the rows of version 5
    (left,) = store.files("sink", "0..10")
    assert store.read(left).payload.column("id").to_pylist() == [3]
    assert store.read(left).version == 9


def test_reserved_column_names_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        DeadLetterStore(tmp_path).add("a", None, pa.table({"_dl_error": ["x"]}), "e", run_id="r")


class FileSink(ConfigurableIOManager):
    """Delivers dead letters by appending their ids to a file; ids in ``refuse`` fail."""

    store_root: str
    delivered_to: str
    refuse: list[int]

    def handle_output(self, context, obj) -> None:  # pragma: no cover - not used here
        raise NotImplementedError

    def load_input(self, context):  # pragma: no cover - not used here
        raise NotImplementedError

    def replay_dead_letters(self, context: OpExecutionContext, asset: str) -> ReplayReport:
        store = DeadLetterStore(self.store_root)
        replayed = failing = 0
        files = store.files(asset)
        for file in files:
            ids = store.read(file).payload.column("id").to_pylist()
            refused = [i in self.refuse for i in ids]
            with open(self.delivered_to, "a") as out:
                out.writelines(f"{i}\n" for i, bad in zip(ids, refused, strict=True) if not bad)
            still = store.settle(file, refused, "refused", run_id=context.run_id)
            failing += still
            replayed += len(ids) - still
        return ReplayReport(replayed, failing, len(files))


@pytest.mark.slow
def test_replay_job_resends_and_keeps_failures(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path / "dl")
    store.add("api", "0..10", docs(1, 2), "503", run_id="r1")
    store.add("api", "10..20", docs(11), "503", run_id="r1")
    delivered = tmp_path / "delivered.txt"
    sink = FileSink(store_root=str(tmp_path / "dl"), delivered_to=str(delivered), refuse=[2])
    defs = Definitions(jobs=[build_replay_job("api", "api_io_manager", "api")],
                       resources={"api_io_manager": sink})
    result = defs.resolve_job_def("api_replay_dead_letters").execute_in_process()
    assert result.success
    assert result.output_for_node("replay_api_dead_letters") == 1
    assert sorted(delivered.read_text().split()) == ["1", "11"]
    assert store.count("api") == 1 and store.read(store.files("api")[0]).attempts == [2]
