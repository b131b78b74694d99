"""An older partition re-run after newer ones leaves every keyed sink unchanged: PostgreSQL,
parquet update mode, BigQuery merge and CouchDB (revisions), run by Dagster on real servers.

Rows 1..100 are loaded in the first window; rows 1..80 then change (their cursor moves into the
second window) and the second window is loaded. Re-running the first window's sinks from its
staged extraction (as re-executing them from the UI does) brings the old versions of rows
1..80 again: the newer ones must stay.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance

from etl_assets.factory import build_definitions
from etl_assets.spec import parse_spec
from etl_assets.watermark import Window
from etl_assets_testing.servers.bigquery import PROJECT, BigQueryEmulator
from etl_assets_testing.servers.pouchdb import PouchDB
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sample_tables import create_pg_readings
from etl_assets_tests.test_factory import run_partition

pytestmark = pytest.mark.slow

UTC = timezone.utc
FIRST = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, 2, tzinfo=UTC))
SECOND = Window(FIRST.hi, datetime(2024, 3, 1, 4, tzinfo=UTC))
SINKS = ["readings_pg", "readings_lake", "readings_bq", "readings_couch"]


def spec_for(source: str, pg: PgSchema, lake: Path, dataset: str, couch: str, **rule: str) -> dict:
    keyed = {"source": "readings", **rule}
    return {
        "sources": {"readings": {
            "connection": {"env": "TEST_SOURCE_URL"}, "table": source, "cursor": "updated_at",
            "primary_key": ["id"], "chunk_rows": 30, "max_window": "2h"}},
        "sinks": {
            "readings_pg": {**keyed, "kind": "postgres", "connection": {"env": "TEST_SOURCE_URL"},
                            "table": pg.table("readings_copy")},
            "readings_lake": {**keyed, "kind": "parquet", "path": str(lake), "mode": "update"},
            "readings_bq": {**keyed, "kind": "bigquery", "project": PROJECT, "dataset": dataset,
                            "table": "readings", "write": "merge",
                            "api_endpoint": "${TEST_BQ_ENDPOINT}",
                            "transform": "etl_assets_tests.transforms_for_tests:without_ratio",
                            "retries": 1, "retry_delay_s": 0, "request_timeout_s": 10},
            "readings_couch": {**keyed, "kind": "http", "url": f"{couch}/_bulk_docs",
                               "format": "json_array_bulk", "wrap": "docs", "id_key": "_id",
                               "couchdb_revisions": True, "retry_delay_s": 0.01},
        },
    }


def codes_everywhere(pg: PgSchema, lake: Path, bq: BigQueryEmulator, dataset: str,
                     couch: PouchDB, database: str) -> dict[str, dict[int, str]]:
    lake_rows = pq.read_table(lake / "data.parquet", columns=["id", "code"]).to_pylist()
    return {
        "readings_pg": dict(pg.execute(f"SELECT id, code FROM {pg.table('readings_copy')}")),
        "readings_lake": {r["id"]: r["code"] for r in lake_rows},
        "readings_bq": {r["id"]: r["code"] for r in bq.rows(f"{PROJECT}.{dataset}.readings")},
        "readings_couch": {int(i): d["code"] for i, d in couch.documents(database).items()},
    }


@pytest.mark.parametrize("rule", ["newest", "last_write"])
def test_an_older_partition_rerun_after_newer_ones_leaves_every_keyed_sink_unchanged(
        pg: PgSchema, instance: DagsterInstance, tmp_path: Path, bq_emulator: BigQueryEmulator,
        bq_dataset: str, pouchdb: PouchDB, monkeypatch: pytest.MonkeyPatch, rule: str) -> None:
    monkeypatch.setenv("TEST_SOURCE_URL", pg.url)
    monkeypatch.setenv("TEST_BQ_ENDPOINT", bq_emulator.endpoint)
    database = f"readings_{rule}_{bq_dataset[-6:]}".lower()
    couch = pouchdb.create(database)
    source = create_pg_readings(pg, last=100)  # rows at 00:01 .. 01:40: the first window
    defs = build_definitions(parse_spec(spec_for(source, pg, tmp_path / "lake", bq_dataset,
                                                 couch, conflict=rule)))
    run_partition(defs, instance, FIRST)
    pg.execute(f"UPDATE {source} SET code = 'NEW-' || id, "
               f"updated_at = updated_at + interval '2 hours' WHERE id <= 80")
    run_partition(defs, instance, SECOND)
    want = dict(pg.execute(f"SELECT id, code FROM {source}"))
    assert sum(code.startswith("NEW-") for code in want.values()) == 80
    before = codes_everywhere(pg, tmp_path / "lake", bq_emulator, bq_dataset, pouchdb, database)
    assert before == {sink: want for sink in SINKS}

    # the first window's sinks again, from its staged (older) extraction
    rerun = defs.resolve_job_def("readings_job").execute_in_process(
        instance=instance, partition_key=FIRST.key, asset_selection=[AssetKey(s) for s in SINKS])
    assert rerun.success
    after = codes_everywhere(pg, tmp_path / "lake", bq_emulator, bq_dataset, pouchdb, database)
    if rule == "newest":
        assert after == before
        metadata = _metadata(rerun)
        assert metadata["readings_lake"]["rows_kept_newer"] == 80
        assert metadata["readings_couch"]["documents_kept_newer"] == 80
    else:  # the last write wins: the older versions come back, in every sink
        regressed = {sink: sum(code != want[i] for i, code in rows.items())
                     for sink, rows in after.items()}
        assert regressed == {sink: 80 for sink in SINKS}


def _metadata(result: Any) -> dict[str, dict[str, Any]]:
    return {str(e.asset_key.path[-1]): {k: getattr(v, "value", v) for k, v in
                                         e.event_specific_data.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()}
