"""The HTTP sink against real servers on loopback: pouchdb-server (CouchDB API), datasette
(JSON insert API) and a fault-injecting aiohttp server; documents read back from each."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from dagster import build_op_context

from etl_assets.dead_letters import DeadLetterStore
from etl_assets.json_documents import documents
from etl_assets.sinks.base import SinkSetup
from etl_assets.sinks.http.io_manager import HttpApiIOManager, HttpSinkError
from etl_assets.sinks.http.spec import HttpSinkSpec
from etl_assets.watermark import Window
from etl_assets_testing.servers.datasette import Datasette
from etl_assets_testing.servers.fault_http import FaultServer, start_fault_server_process
from etl_assets_testing.servers.loopback import call
from etl_assets_testing.servers.pouchdb import PouchDB
from etl_assets_tests.sinks.sink_runs import run_sink

UTC = timezone.utc
DAY = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))
SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string()),
                    pa.field("amount", pa.decimal128(8, 2)),
                    pa.field("updated_at", pa.timestamp("us", tz="UTC"))])


def batch(ids: range | list[int], name: str = "doc") -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([
        {"id": i, "name": f"{name} {i} \"quoted\" ü", "amount": None if i % 5 == 0 else Decimal(i) * Decimal("1.25"),
         "updated_at": datetime(2024, 3, 1, 1, i % 60, tzinfo=UTC)} for i in ids], SCHEMA)


def batches(count: int, size: int = 250, name: str = "doc") -> list[pa.RecordBatch]:
    return [batch(range(start, min(start + size, count)), name) for start in range(0, count, size)]


def sink(etl_home: Path, **config: Any) -> HttpApiIOManager:
    """The IO manager of a sink fed by a source keyed by id whose cursor is updated_at."""
    settings = {"retries": 8, "retry_delay_s": 0.01, "max_retry_delay_s": 0.2, "timeout_s": 5,
                "concurrency": 8}
    spec = HttpSinkSpec(kind="http", source="source", **{**settings, **config})
    return HttpApiIOManager(SinkSetup.of("readings_api", spec, source_primary_key=["id"],
                                         source_cursor="updated_at",
                                         dead_letter_root=str(etl_home / "dead_letters")))


def write(manager: HttpApiIOManager, data: list[pa.RecordBatch]) -> dict[str, Any]:
    return run_sink(manager, data, SCHEMA, DAY, "readings_api")


def expected(data: list[pa.RecordBatch]) -> dict[str, dict[str, Any]]:
    return {str(d["id"]): d for b in data for d in documents(b)}


@pytest.mark.slow
def test_single_puts_to_couchdb_by_id_and_a_rerun_updates_instead_of_duplicating(
        pouchdb: PouchDB, etl_home: Path) -> None:
    database = pouchdb.create("single_put")
    manager = sink(etl_home, url=f"{database}/{{id}}", method="PUT", couchdb_revisions=True)
    metadata = write(manager, batches(300))
    assert metadata["rows_written"] == 300 and metadata["documents_failed"] == 0
    assert pouchdb.documents("single_put") == expected(batches(300))
    changed = batches(300, name="changed")
    write(manager, changed)
    assert pouchdb.count("single_put") == 300
    assert pouchdb.documents("single_put") == expected(changed)


def test_bulk_docs_to_couchdb_with_ids_and_revisions(pouchdb: PouchDB, etl_home: Path) -> None:
    database = pouchdb.create("bulk_docs")
    manager = sink(etl_home, url=f"{database}/_bulk_docs", format="json_array_bulk",
                   wrap="docs", id_key="_id", couchdb_revisions=True, bulk_docs=100)
    assert write(manager, batches(1000))["rows_written"] == 1000
    changed = batches(1000, name="changed")
    metadata = write(manager, changed)
    assert metadata["rows_written"] == 1000 and metadata["documents_failed"] == 0
    assert pouchdb.count("bulk_docs") == 1000
    assert pouchdb.documents("bulk_docs") == expected(changed)


def test_a_couchdb_conflict_without_revisions_is_a_dead_letter(pouchdb: PouchDB, etl_home: Path) -> None:
    database = pouchdb.create("conflicts")
    manager = sink(etl_home, url=f"{database}/_bulk_docs", format="json_array_bulk", wrap="docs",
                   id_key="_id", on_error="dead_letter")
    write(manager, [batch([1, 2])])
    metadata = write(manager, [batch([2, 3], "again")])
    assert metadata["rows_written"] == 1 and metadata["dead_letters"] == 1
    store = DeadLetterStore(etl_home / "dead_letters")
    (letters,) = store.files("readings_api")
    dead = store.read(letters)
    assert dead.payload.column("id").to_pylist() == ["2"] and "conflict" in dead.errors[0]


@pytest.mark.slow
def test_datasette_bulk_insert_and_single_rows_with_a_token_from_env(
        datasette: Datasette, etl_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_DATASETTE_AUTH", f"Bearer {datasette.token}")
    columns = [{"name": "id", "type": "integer"}, {"name": "name", "type": "text"},
               {"name": "amount", "type": "text"}, {"name": "updated_at", "type": "text"}]
    bulk_url = datasette.create_table("bulk_rows", columns) + "/-/insert"
    single_url = datasette.create_table("single_rows", columns) + "/-/insert"
    auth = {"Authorization": "TEST_DATASETTE_AUTH"}
    bulk = sink(etl_home, url=bulk_url, format="json_array_bulk", wrap="rows",
                body_extra={"replace": True}, headers_from_env=auth, bulk_docs=100)  # its maximum
    single = sink(etl_home, url=single_url, wrap="row", body_extra={"replace": True},
                  headers_from_env=auth)
    for manager in (bulk, single):
        write(manager, batches(500))
        write(manager, batches(500, name="changed"))  # replace: by primary key
    want = sorted(expected(batches(500, name="changed")).values(), key=lambda d: d["id"])
    assert datasette.rows("bulk_rows") == want
    assert datasette.rows("single_rows") == want


def test_a_missing_token_env_var_names_the_header_and_variable(etl_home: Path) -> None:
    manager = sink(etl_home, url="http://127.0.0.1:9/x", headers_from_env={"Authorization": "NO_SUCH_TOKEN_VAR"})
    with pytest.raises(HttpSinkError, match=r"header Authorization comes from \$NO_SUCH_TOKEN_VAR"):
        write(manager, [batch([1])])


def test_user_info_from_env_and_an_authorization_header_fail_once_not_per_document(
        fault_server: FaultServer, etl_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_API_URL", f"http://user:pw-in-url@127.0.0.1:{fault_server.port}")
    monkeypatch.setenv("TEST_API_AUTH", "Bearer token-in-header")
    manager = sink(etl_home, url="${TEST_API_URL}/docs/{id}", method="PUT",
                   headers_from_env={"authorization": "TEST_API_AUTH"})
    with pytest.raises(HttpSinkError) as error:
        write(manager, [batch(range(10))])
    assert str(error.value) == (
        "sink readings_api: the URL holds user info (user:password@) and the Authorization "
        "header is set too: a request takes one of them")
    assert fault_server.requests == 0


def test_single_posts_survive_503s_429s_drops_and_slow_answers(fault_server: FaultServer, etl_home: Path) -> None:
    fault_server.faults.unavailable = 0.05
    fault_server.faults.rate_limited = 0.05
    fault_server.faults.retry_after = "0.05"
    fault_server.faults.dropped = 0.02
    fault_server.faults.slow = 0.02
    manager = sink(etl_home, url=f"{fault_server.url}/docs/{{id}}", method="PUT", concurrency=16)
    metadata = write(manager, batches(2000))
    assert metadata["rows_written"] == 2000 and metadata["documents_failed"] == 0
    assert metadata["retries"] > 0 and fault_server.requests > 2000
    assert fault_server.documents == expected(batches(2000))


def test_ndjson_bulk_retries_the_items_the_answer_rate_limits_and_keeps_the_refused(
        fault_server: FaultServer, etl_home: Path) -> None:
    fault_server.faults.item_rate_limited = 0.2
    fault_server.faults.unavailable = 0.1
    fault_server.faults.refused_ids = {"7", "1234"}
    manager = sink(etl_home, url=f"{fault_server.url}/_bulk", format="ndjson_bulk", bulk_docs=100,
                   on_error="dead_letter")
    metadata = write(manager, batches(2000))
    assert metadata["rows_written"] == 1998 and metadata["dead_letters"] == 2
    want = expected(batches(2000))
    assert fault_server.documents == {k: v for k, v in want.items() if k not in {"7", "1234"}}
    store = DeadLetterStore(etl_home / "dead_letters")
    (letters,) = store.files("readings_api")
    dead = store.read(letters)
    assert sorted(dead.payload.column("id").to_pylist()) == ["1234", "7"]
    assert all("mapper_parsing_exception" in e for e in dead.errors)
    assert [json.loads(d) for d in dead.payload.column("document").to_pylist()] == [
        want[i] for i in dead.payload.column("id").to_pylist()]

    fault_server.faults.refused_ids = set()  # the server takes them now: the replay posts them
    with build_op_context() as context:
        report = manager.replay_dead_letters(context, "readings_api")
    assert (report.replayed, report.still_failing) == (2, 0)
    assert store.files("readings_api") == [] and fault_server.documents == want


def test_a_bulk_request_too_large_for_the_server_goes_again_in_halves(
        fault_server: FaultServer, etl_home: Path) -> None:
    data = batches(1000)
    one_document = len(json.dumps(expected(data)["999"])) + 40  # with its action line
    fault_server.faults.max_body_bytes = 30 * one_document  # 413 above ~30 documents
    manager = sink(etl_home, url=f"{fault_server.url}/_bulk", format="ndjson_bulk",
                   bulk_docs=200)

    metadata = write(manager, data)

    assert metadata["rows_written"] == 1000 and metadata["documents_failed"] == 0
    # each batch of 250: 200 -> 2 x 100 -> 4 x 50 -> 8 x 25 (7 splits), 50 -> 2 x 25 (1)
    assert metadata["bulk_requests_split"] == 4 * 8
    assert fault_server.documents == expected(data)


def test_on_error_fail_stops_and_names_the_document_and_the_answer(
        fault_server: FaultServer, etl_home: Path) -> None:
    fault_server.faults.refused_ids = {"42"}
    manager = sink(etl_home, url=f"{fault_server.url}/docs/{{id}}", method="PUT", concurrency=4)
    with pytest.raises(HttpSinkError, match=r"id '42', HTTP 400: .*document 42 is not welcome"):
        write(manager, batches(5000))
    assert "42" not in fault_server.documents
    assert len(fault_server.documents) < 5000  # it stopped sending


def test_tls_is_verified_by_default_and_a_ca_file_makes_a_private_ca_trusted(
        tmp_path: Path, etl_home: Path) -> None:
    import ssl

    import trustme

    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    server = FaultServer(ssl_context=server_context)
    server.start()
    try:
        url = f"https://127.0.0.1:{server.port}/docs/{{id}}"
        untrusted = sink(etl_home, url=url, method="PUT", retries=0)
        with pytest.raises(HttpSinkError, match=r"TLS: .*certificate verify failed"):
            write(untrusted, [batch([1, 2])])
        assert server.documents == {}
        trusted = sink(etl_home, url=url, method="PUT", ca_file=str(ca_file))
        assert write(trusted, [batch([1, 2])])["rows_written"] == 2
        assert server.documents == expected([batch([1, 2])])
    finally:
        server.stop()


MEMORY_PROBE = textwrap.dedent("""
    import re, sys, tempfile
    import pyarrow as pa
    import pyarrow.compute as pc
    from dagster import AssetKey, build_output_context
    from etl_assets.batches import RecordBatchStream
    from etl_assets.sinks.base import SinkSetup
    from etl_assets.sinks.http.io_manager import HttpApiIOManager
    from etl_assets.sinks.http.spec import HttpSinkSpec
    url, count, format = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    schema = pa.schema([("id", pa.int64()), ("pad", pa.string())])
    def batches():  # made as they are read, as staging reads them
        for start in range(0, count, 5000):
            ids = pa.array(range(start, min(start + 5000, count)), pa.int64())
            pad = pc.binary_join_element_wise(pc.cast(ids, pa.string()), "x" * 500, "")
            yield pa.record_batch([ids, pad], schema=schema)
    # in memory at once: about concurrency x 3 requests (queued and in flight) and two batches
    spec = HttpSinkSpec(kind="http", source="probe", url=url, format=format, method="PUT",
                        concurrency=4, bulk_docs=500)
    manager = HttpApiIOManager(SinkSetup.of("probe", spec, source_primary_key=["id"],
                                            source_cursor="id",
                                            dead_letter_root=tempfile.mkdtemp()))
    context = build_output_context(asset_key=AssetKey("probe"))
    with open("/proc/self/clear_refs", "w") as peak:  # the peak from here on (Linux)
        peak.write("5")
    manager.handle_output(context, RecordBatchStream(schema, batches()))
    status = open("/proc/self/status").read()
    print(int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) // 1024)
""")


@pytest.mark.slow
@pytest.mark.parametrize("format", ["ndjson_bulk", "single"])
def test_peak_memory_does_not_grow_with_the_documents(format: str) -> None:
    """Posting 10-12x the documents must not need more memory: the peak RSS while writing
    (reset after the imports) stays put where holding them would add ~500 bytes each."""
    server, url = start_fault_server_process()
    try:
        def peak_mb(count: int) -> int:
            call("DELETE", f"{url}/docs")
            target = f"{url}/_bulk" if format == "ndjson_bulk" else f"{url}/docs/{{id}}"
            out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, target, str(count), format],
                                 capture_output=True, text=True)
            assert out.returncode == 0, f"probe exited {out.returncode}: {out.stderr[-3000:]}"
            assert call("GET", f"{url}/_count")["documents"] == count
            return int(out.stdout.strip())

        counts = (20_000, 200_000) if format == "ndjson_bulk" else (5_000, 60_000)
        small, large = peak_mb(counts[0]), peak_mb(counts[1])
    finally:
        server.terminate()
    held_mb = (counts[1] - counts[0]) * 500 // 2**20  # what holding them would add
    assert large - small < held_mb // 2, (
        f"peak RSS {small} MB for {counts[0]:,} documents, {large} MB for {counts[1]:,} "
        f"(holding them would add {held_mb} MB)")


def test_integers_beyond_2_53_reach_a_javascript_target_exactly_as_strings(
        pouchdb: PouchDB, etl_home: Path) -> None:
    """pouchdb-server keeps numbers as JavaScript doubles: 18446744073709551614 would come back
    as 18446744073709552000. By default such integers go as strings; small ones stay numbers;
    decimals go in plain notation."""
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("u", pa.uint64()),
                        pa.field("d", pa.decimal128(20, 10)),
                        pa.field("updated_at", pa.timestamp("us", tz="UTC"))])
    at = datetime(2024, 3, 1, 1, tzinfo=UTC)
    rows = pa.RecordBatch.from_pylist([
        {"id": 2**53 + 1, "u": 2**64 - 2, "d": Decimal("0E-10"), "updated_at": at},
        {"id": -(2**53) - 1, "u": 2**53 - 1, "d": Decimal("-1E-10"), "updated_at": at},
        {"id": 7, "u": None, "d": None, "updated_at": at}], schema)
    exact = pouchdb.create("big_integers")
    write_exact = sink(etl_home, url=f"{exact}/{{id}}", method="PUT", couchdb_revisions=True)
    assert run_sink(write_exact, [rows], schema, DAY, "readings_api")["documents_failed"] == 0
    stored = pouchdb.documents("big_integers")
    assert stored[str(2**53 + 1)] == {"id": str(2**53 + 1), "u": str(2**64 - 2),
                                      "d": "0.0000000000", "updated_at": "2024-03-01T01:00:00Z"}
    assert stored[str(-(2**53) - 1)]["u"] == 2**53 - 1 and stored[str(-(2**53) - 1)]["d"] == "-0.0000000001"
    assert stored["7"]["id"] == 7
    rounded = pouchdb.create("big_numbers")
    write_numbers = sink(etl_home, url=f"{rounded}/{{id}}", method="PUT", big_integers="number")
    run_sink(write_numbers, [rows], schema, DAY, "readings_api")
    assert pouchdb.documents("big_numbers")[str(2**53 + 1)]["u"] != 2**64 - 2  # rounded by JS
