"""Newest wins in the PostgreSQL sink: partitions re-run in any order never replace a stored
row by an older version of it (the cursor decides), and the watermark never moves back."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from etl_assets.batches import RecordBatchStream
from etl_assets.sinks.base import SinkSetup
from etl_assets.sinks.postgres.errors import PostgresSinkError
from etl_assets.sinks.postgres.io_manager import PostgresUpsertIOManager
from etl_assets.sinks.postgres.spec import PostgresSinkSpec
from etl_assets.sinks.postgres.watermark import read_watermark
from etl_assets.watermark import Window
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sinks.sink_runs import run_sink

UTC = timezone.utc
T0 = datetime(2024, 3, 1, tzinfo=UTC)
SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("updated_at", pa.timestamp("us", tz="UTC")),
                    pa.field("v", pa.string())])
W1 = Window(T0, T0 + timedelta(hours=1))
W2 = Window(T0 + timedelta(hours=1), T0 + timedelta(hours=2))


def versions(ids: range, window: Window, v: str) -> list[pa.RecordBatch]:
    """Rows ``ids``, each updated inside ``window``, in batches of 30 (cursor order)."""
    rows = [{"id": i, "updated_at": window.lo + timedelta(seconds=i + 1), "v": v} for i in ids]
    return [pa.RecordBatch.from_pylist(rows[s:s + 30], SCHEMA) for s in range(0, len(rows), 30)]


def manager(pg: PgSchema, **settings: Any) -> PostgresUpsertIOManager:
    """The IO manager of a sink of ``pg``'s table ``target``, fed by a source keyed by id
    whose cursor is updated_at."""
    spec = PostgresSinkSpec(kind="postgres", source="source", connection={"url": pg.url},
                            table=pg.table("target"), **settings)
    return PostgresUpsertIOManager(SinkSetup.of("target", spec, source_primary_key=["id"],
                                                source_cursor="updated_at",
                                                dead_letter_root="/nonexistent"))


def table(pg: PgSchema) -> dict[int, tuple[str, datetime]]:
    return {i: (v, at) for i, v, at in pg.execute(
        f"SELECT id, v, updated_at FROM {pg.table('target')}")}


@pytest.mark.parametrize("older_first", [False, True])
def test_an_older_partition_rerun_after_newer_ones_changes_nothing(pg: PgSchema, older_first: bool) -> None:
    sink = manager(pg)
    # rows 1..100 were first written in W1; rows 1..80 changed again in W2
    run_sink(sink, versions(range(1, 101), W1, "old"), SCHEMA, W1, "target_pg")
    run_sink(sink, versions(range(1, 81), W2, "new"), SCHEMA, W2, "target_pg")
    before = table(pg)
    assert sum(v == "new" for v, _ in before.values()) == 80
    # the older partition again (re-executed from its staged rows), or in reverse order
    order = [W1] if not older_first else [W2, W1]
    for window in order:
        batches = versions(range(1, 101), W1, "old") if window is W1 else \
            versions(range(1, 81), W2, "new")
        run_sink(sink, batches, SCHEMA, window, "target_pg")
    assert table(pg) == before
    assert read_watermark(pg.url, pg.table("target")) == W2.hi


def test_last_write_lets_the_last_run_win(pg: PgSchema) -> None:
    sink = manager(pg, conflict="last_write")
    run_sink(sink, versions(range(1, 101), W1, "old"), SCHEMA, W1, "target_pg")
    run_sink(sink, versions(range(1, 81), W2, "new"), SCHEMA, W2, "target_pg")
    run_sink(sink, versions(range(1, 101), W1, "old"), SCHEMA, W1, "target_pg")
    assert {v for v, _ in table(pg).values()} == {"old"}
    assert read_watermark(pg.url, pg.table("target")) == W2.hi  # never backwards


def test_an_equal_cursor_replaces_so_a_rerun_with_corrected_rows_lands(pg: PgSchema) -> None:
    sink = manager(pg)
    run_sink(sink, versions(range(1, 11), W1, "first"), SCHEMA, W1, "target_pg")
    run_sink(sink, versions(range(1, 11), W1, "corrected"), SCHEMA, W1, "target_pg")
    assert {v for v, _ in table(pg).values()} == {"corrected"}


def test_a_stored_null_cursor_is_the_oldest(pg: PgSchema) -> None:
    sink = manager(pg)
    run_sink(sink, versions(range(1, 11), W1, "old"), SCHEMA, W1, "target_pg")
    pg.execute(f"ALTER TABLE {pg.table('target')} ALTER COLUMN updated_at DROP NOT NULL")
    pg.execute(f"UPDATE {pg.table('target')} SET updated_at = NULL WHERE id <= 5")
    run_sink(sink, versions(range(1, 11), W1, "again"), SCHEMA, W1, "target_pg")
    assert {v for v, _ in table(pg).values()} == {"again"}


def test_within_a_batch_the_newest_row_of_a_key_wins_whatever_its_place(pg: PgSchema) -> None:
    rows = [{"id": 1, "updated_at": T0 + timedelta(minutes=30), "v": "newest"},
            {"id": 1, "updated_at": T0 + timedelta(minutes=10), "v": "older, later in the batch"},
            {"id": 2, "updated_at": T0 + timedelta(minutes=5), "v": "a"},
            {"id": 2, "updated_at": T0 + timedelta(minutes=5), "v": "b: a tie, the last wins"}]
    run_sink(manager(pg), [pa.RecordBatch.from_pylist(rows, SCHEMA)], SCHEMA, W1, "target_pg")
    assert {i: v for i, (v, _) in table(pg).items()} == {1: "newest", 2: "b: a tie, the last wins"}


def test_a_transform_that_dropped_the_cursor_is_a_clear_error(pg: PgSchema) -> None:
    no_cursor = pa.schema([SCHEMA.field("id"), SCHEMA.field("v")])
    batch = pa.RecordBatch.from_pylist([{"id": 1, "v": "x"}], no_cursor)
    with pytest.raises(PostgresSinkError, match=r"target: conflict newest compares the cursor "
                                                r"column updated_at, which the rows do not have "
                                                r"\(columns: id, v\).*conflict: last_write"):
        run_sink(manager(pg), [batch], no_cursor, W1, "target_pg")
    # naming the column the transform renamed it to applies the rule to it
    renamed = SCHEMA.set(1, pa.field("changed", pa.timestamp("us", tz="UTC")))
    sink = manager(pg, cursor_column="changed")
    newer = pa.RecordBatch.from_pylist([{"id": 1, "changed": T0 + timedelta(minutes=50), "v": "new"}],
                                       renamed)
    older = pa.RecordBatch.from_pylist([{"id": 1, "changed": T0 + timedelta(minutes=5), "v": "old"}],
                                       renamed)
    run_sink(sink, [newer], renamed, W1, "target_pg2")
    run_sink(sink, [older], renamed, W1, "target_pg2")
    assert pg.execute(f"SELECT v FROM {pg.table('target')}") == [("new",)]


def test_the_cursor_in_the_key_needs_no_guard(pg: PgSchema) -> None:
    sink = manager(pg, primary_key=["id", "updated_at"])
    run_sink(sink, versions(range(1, 11), W2, "new"), SCHEMA, W2, "target_pg")
    run_sink(sink, versions(range(1, 11), W1, "old"), SCHEMA, W1, "target_pg")
    assert pg.execute(f"SELECT count(*) FROM {pg.table('target')}") == [(20,)]


def test_an_unknown_conflict_rule_is_refused(pg: PgSchema) -> None:
    with pytest.raises(ValidationError, match="conflict\n  Input should be 'newest' or 'last_write'"):
        manager(pg, conflict="oldest")


def test_a_stream_keeps_its_version_through_a_transform() -> None:
    stream = RecordBatchStream(SCHEMA, iter(versions(range(1, 3), W1, "x")), version=7)
    assert stream.version == 7 and stream.map(lambda b: b).version == 7
