"""A pipeline whose staging and dead letters are on an object store (moto's S3): nothing is
written to the local disk, the sinks read what the source staged there, undelivered rows are
kept there."""

import json
import socket
import urllib.request
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from etl_assets.dead_letters import DeadLetterStore
from etl_assets.factory import build_definitions
from etl_assets.spec import parse_spec
from etl_assets_testing.servers.pouchdb import PouchDB
from etl_assets_testing.servers.s3 import S3Bucket
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sample_tables import create_pg_readings, rows_differing
from etl_assets_tests.test_factory import (  # noqa: F401 (urls: a fixture)
    WHOLE,
    readings_spec,
    run_partition,
    urls,
)


@pytest.mark.slow
@pytest.mark.usefixtures("urls")
def test_staging_and_dead_letters_on_s3_leave_the_local_disk_alone(
        pg: PgSchema, s3: S3Bucket, pouchdb: PouchDB, instance: DagsterInstance,
        etl_home: Path) -> None:
    source = create_pg_readings(pg, last=120)
    couch = pouchdb.create("readings_docs")
    request = urllib.request.Request(f"{couch}/7", data=json.dumps({"name": "there"}).encode(),
                                     method="PUT", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request).close()  # the run's document 7 conflicts: a dead letter
    options = {"endpoint_url": s3.server.endpoint}
    spec = readings_spec(pg, source)
    spec["sinks"]["readings_docs"] = {
        "source": "readings", "kind": "http", "url": f"{couch}/_bulk_docs",
        "format": "json_array_bulk", "wrap": "docs", "id_key": "_id",
        "on_error": "dead_letter"}
    spec["staging"] = {"root": s3.url("staging"), "storage_options": options}
    spec["dead_letters"] = {"root": s3.url("dead_letters"), "storage_options": options}
    defs = build_definitions(parse_spec(spec))

    metadata = run_partition(defs, instance, WHOLE)

    assert metadata["readings"]["dagster/row_count"].value == 120
    assert metadata["readings"]["path"].value == f"{s3.url('staging')}/readings/{WHOLE.key}"
    assert rows_differing(pg, source, pg.table("readings_copy")) == 0
    assert metadata["readings_docs"]["dead_letters"].value == 1
    assert pouchdb.count("readings_docs") == 120
    staged = s3.keys(f"staging/readings/{WHOLE.key}/")
    assert f"staging/readings/{WHOLE.key}/_current.json" in staged
    assert any(k.endswith("/part-00000.parquet") for k in staged)
    store = DeadLetterStore(s3.url("dead_letters"), options)
    (letters,) = store.files("readings_docs")
    assert store.read(letters).payload.column("id").to_pylist() == ["7"]
    assert not [p for p in etl_home.rglob("*") if p.is_file()]  # nothing on the local disk


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.usefixtures("urls")
def test_a_sink_whose_partition_is_not_staged_says_where_it_looked(
        pg: PgSchema, instance: DagsterInstance, request: pytest.FixtureRequest,
        where: str) -> None:
    spec = readings_spec(pg, create_pg_readings(pg, last=10))
    if where == "s3":
        s3 = request.getfixturevalue("s3")
        spec["staging"] = {"root": s3.url("staging"),
                           "storage_options": {"endpoint_url": s3.server.endpoint}}
    defs = build_definitions(parse_spec(spec))
    instance.add_dynamic_partitions("readings_windows", [WHOLE.key])
    result = defs.resolve_job_def("readings_job").execute_in_process(
        instance=instance, partition_key=WHOLE.key, asset_selection=[AssetKey("readings_pg")],
        raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    message = error.cause.message if error.cause else error.message
    assert f"readings: partition {WHOLE.key} is not staged at " in message
    if where == "s3":
        assert f"{s3.url('staging')}/readings/{WHOLE.key}" in message
    else:
        assert f"on host {socket.gethostname()}" in message
        assert "staging.root on an object store such as s3://" in message
