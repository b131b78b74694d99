"""The HTTP source against real servers: datasette (tokens, next URLs, Link headers, SQL with
LIMIT/OFFSET), pouchdb-server (``_all_docs`` by skip/limit) and the fault server (429 with
Retry-After, 503, dropped and slow answers, 4xx)."""

from __future__ import annotations

import json
import logging
import time
import tracemalloc
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from etl_assets.errors import ConfigurationError
from etl_assets.raw_pages import INDEX, RawPages
from etl_assets.sources.http.client import HttpSourceError
from etl_assets.sources.http.source import open_http_source
from etl_assets.storage import Folder
from etl_assets.watermark import Window
from etl_assets_testing.servers.datasette import Datasette
from etl_assets_testing.servers.fault_http import Faults, FaultServer, start_fault_server_process
from etl_assets_testing.servers.loopback import call
from etl_assets_testing.servers.pouchdb import PouchDB
from etl_assets_tests.sources.http.servers import (
    T0,
    UTC,
    WINDOW,
    datasette_query_source,
    datasette_source,
    datasette_table,
    fault_items,
    fault_source,
    in_window,
    read_window,
    spec_of,
)

SECRET_TOKEN = "Bearer sEcReT-t0ken-4242"
SECRET_KEY = "k3y-value-9876"


@pytest.fixture
def table(datasette: Datasette) -> str:
    return datasette_table(datasette)


# -- every pagination kind, values equal to the server's ------------------------------------


@pytest.mark.parametrize("pagination", [
    {"kind": "next_token", "path": "next", "param": "_next"},
    {"kind": "next_url", "path": "next_url"},
    {"kind": "link_header"},
])
def test_datasette_pages_give_the_window_rows_as_stored(datasette: Datasette, table: str,
                                                        pagination: dict) -> None:
    got = read_window(datasette_source(datasette, table, pagination=pagination), WINDOW)
    expected = in_window(datasette.rows(table), WINDOW)
    assert len(expected) == 40
    assert got.to_pylist() == [{k: row[k] for k in got.column_names} for row in expected]
    assert got.schema.field("updated_at").type == pa.timestamp("us", tz="UTC")
    assert got.column_names == ["updated_at", "id", "name", "amount", "meta"]  # the cursor first


@pytest.mark.parametrize(("paging", "pagination"), [
    ("limit cast(:limit as integer) offset cast(:offset as integer)",
     {"kind": "offset", "offset_param": "offset", "limit_param": "limit", "limit": 6}),
    ("limit cast(:per_page as integer) offset (cast(:page as integer) - 1) * :per_page",
     {"kind": "page", "param": "page", "start": 1, "size_param": "per_page", "size": 6}),
])
def test_offsets_and_page_numbers_through_datasette_sql(datasette: Datasette, table: str,
                                                        paging: str, pagination: dict) -> None:
    fields = datasette_query_source(datasette, table, paging, pagination=pagination)
    got = read_window(fields, WINDOW)
    assert got.column("id").to_pylist() == list(range(11, 51))
    assert got.to_pylist() == [{k: row[k] for k in got.column_names}
                               for row in in_window(datasette.rows(table), WINDOW)]


def test_pouchdb_all_docs_by_skip_and_limit_flattened(pouchdb: PouchDB) -> None:
    database = pouchdb.create(f"docs_{int(time.time() * 1e6)}")
    documents = [{"_id": f"doc-{i:03d}", "updated": i, "owner": {"name": f"o{i}", "age": i % 9},
                  "tags": [i, "x"]} for i in range(1, 31)]
    call("POST", f"{database}/_bulk_docs", {"docs": documents})
    fields = {"kind": "http", "url": f"{database}/_all_docs", "cursor": "doc.updated",
              "cursor_type": "integer", "latest": {"path": "total_rows"},
              "params": {"include_docs": "true"}, "records": "rows", "flatten_depth": 2,
              "pagination": {"kind": "offset", "offset_param": "skip", "limit_param": "limit",
                             "limit": 8}}
    got = read_window(fields, Window(5, 25))  # no filter on the server: the window keeps its rows
    assert got.column("doc.updated").to_pylist() == list(range(6, 26))
    assert got.column("doc.owner.name").to_pylist() == [f"o{i}" for i in range(6, 26)]
    assert json.loads(got.column("doc.tags").to_pylist()[0]) == [6, "x"]  # a list: json
    assert got.schema.field("doc.tags").metadata == {b"etl_assets.logical_type": b"json"}
    assert "id" in got.column_names and "value.rev" in got.column_names


def test_fault_server_link_header_offset_and_page(fault_server: FaultServer) -> None:
    fault_items(fault_server)
    fault_server.max_page_size = 4  # fewer than asked: offsets follow what came
    window = Window(10, 40)
    for pagination, size in (({"kind": "link_header"}, {"per_page": "4"}),  # the server's size
                             ({"kind": "offset", "limit": 9}, {}), ({"kind": "page", "size": 4}, {})):
        fields = fault_source(fault_server, pagination=pagination,
                              params={"seq_gt": "{lo}", "seq_lte": "{hi}", **size})
        got = read_window(fields, window)
        assert got.column("seq").to_pylist() == list(range(11, 41)), pagination
        assert json.loads(got.column("detail").to_pylist()[0]) == {"size": 1, "tags": ["a"]}
    assert fault_server.queries[0] == "/items?seq_gt=10&seq_lte=40&per_page=4"


# -- retries, faults, errors ------------------------------------------------------------------


def test_429_with_retry_after_and_503_and_dropped_connections_are_retried(
        fault_server: FaultServer, caplog: pytest.LogCaptureFixture) -> None:
    fault_items(fault_server, 60)
    fault_server.faults = Faults(rate_limited=0.3, retry_after="0.2", unavailable=0.15,
                                 dropped=0.1)
    fields = fault_source(fault_server, pagination={"kind": "page", "size": 5}, retries=12,
                          retry_delay_s=0, max_retry_delay_s=1)
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    got = read_window(fields, Window(0, 60))
    elapsed = time.monotonic() - started
    assert got.column("seq").to_pylist() == list(range(1, 61))
    pages = 13  # 12 full pages and the empty one
    warnings = [r.getMessage() for r in caplog.records if "attempt" in r.getMessage()]
    # aiohttp itself asks again once when a kept-alive connection was dropped: not logged
    assert fault_server.requests >= pages + len(warnings)
    rate_limited = [w for w in warnings if "HTTP 429" in w]
    assert rate_limited and any("HTTP 503" in w for w in warnings)
    assert elapsed >= 0.2 * len(rate_limited)  # Retry-After honoured (the backoff is 0)
    assert all("in 0.2 s" in w for w in rate_limited)


def test_slow_answers_time_out_and_the_last_attempt_names_them(fault_server: FaultServer) -> None:
    fault_items(fault_server, 5)
    fault_server.faults = Faults(slow=1.0, slow_s=0.6)
    fields = fault_source(fault_server, timeout_s=0.2, retries=1)
    with pytest.raises(HttpSourceError) as caught:
        read_window(fields, Window(0, 5))
    message = str(caught.value)
    assert "\n" not in message
    assert "TimeoutError" in message and "(gave up after 2 attempts)" in message
    assert fault_server.requests == 2
    fault_server.faults = Faults(slow=1.0, slow_s=0.05)  # slow, within the timeout
    assert read_window(fields, Window(0, 5)).num_rows == 5


def test_a_4xx_fails_on_one_line_naming_the_masked_url_and_status(
        fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_API_KEY", SECRET_KEY)
    fields = fault_source(fault_server, url=f"{fault_server.url}/status/404",
                          params_from_env={"api_key": "TEST_API_KEY"})
    with pytest.raises(HttpSourceError) as caught:
        read_window(fields, Window(0, 5))
    message = str(caught.value)
    assert message == (f"source 'api' window (0, 5]: GET {fault_server.url}/status/404?"
                       f"seq_gt=0&seq_lte=5&api_key=***: HTTP 404: "
                       f'{{"error": "status 404 as asked"}}')
    assert fault_server.requests == 1  # a 4xx is not retried
    assert fault_server.headers_seen[0]["Host"]
    unrouted = fault_source(fault_server, url=f"{fault_server.url}/nothing")
    with pytest.raises(HttpSourceError, match=r"/nothing\?seq_gt=0&seq_lte=5: HTTP 404: 404: "
                                              r"Not Found$"):
        read_window(unrouted, Window(0, 5))


def test_headers_from_env_are_sent_and_masked_in_logs_and_errors(
        fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TEST_API_TOKEN", SECRET_TOKEN)
    fault_items(fault_server, 10)
    fields = fault_source(fault_server, headers_from_env={"Authorization": "TEST_API_TOKEN"},
                          headers={"Accept": "application/json"})
    assert read_window(fields, Window(0, 10)).num_rows == 10
    assert fault_server.headers_seen[-1]["Authorization"] == SECRET_TOKEN
    assert fault_server.headers_seen[-1]["Accept"] == "application/json"
    caplog.set_level(logging.WARNING)
    monkeypatch.setenv("TEST_API_KEY", SECRET_KEY)
    fault_server.faults = Faults(unavailable=1.0)
    keyed = fault_source(fault_server, retries=1, params_from_env={"api_key": "TEST_API_KEY"},
                         headers_from_env={"Authorization": "TEST_API_TOKEN"})
    with pytest.raises(HttpSourceError) as unavailable:  # 503, then 503: a retry is logged
        read_window(keyed, Window(0, 10))
    assert "HTTP 503" in str(unavailable.value) and "gave up after 2 attempts" in str(unavailable.value)
    fault_server.faults = Faults()
    refused = fault_source(fault_server, url=f"{fault_server.url}/refused",
                           headers_from_env={"Authorization": "TEST_API_TOKEN"})
    with pytest.raises(HttpSourceError) as caught:  # 401 whose answer echoes the token
        read_window(refused, Window(0, 10))
    message = str(caught.value)
    assert "HTTP 401" in message and "not authorized" in message
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "api_key=***: HTTP 503; attempt 2 of 2" in logged
    for text in (message, logged, str(unavailable.value)):
        assert "sEcReT" not in text and SECRET_KEY not in text


def test_an_unset_header_variable_fails_when_the_source_opens(fault_server: FaultServer) -> None:
    fields = fault_source(fault_server, headers_from_env={"Authorization": "TEST_UNSET_TOKEN"})
    with pytest.raises(ConfigurationError, match=r"header Authorization comes from "
                                                 r"\$TEST_UNSET_TOKEN, which is not set"):
        open_http_source("api", spec_of(fields))


def test_a_missing_records_path_names_the_url_and_the_path(datasette: Datasette,
                                                           table: str) -> None:
    fields = datasette_source(datasette, table, records="data.items")
    with pytest.raises(HttpSourceError) as caught:
        read_window(fields, WINDOW)
    message = str(caught.value)
    assert f"GET {datasette.url}/{datasette.database}/{table}.json?_shape=objects" in message
    assert "no `data.items` in the answer: the answer has no key 'data' (keys: ok, next, " \
           "next_url, rows, truncated)" in message
    assert "(`records`)" in message


def test_an_empty_window_is_an_empty_stream(datasette: Datasette, table: str) -> None:
    empty = Window(T0 + timedelta(days=1), T0 + timedelta(days=2))
    assert read_window(datasette_source(datasette, table), empty).num_rows == 0
    declared = read_window(datasette_source(datasette, table, columns={
        "id": "int64", "updated_at": "timestamp[us, tz=UTC]"}), empty)
    assert declared.num_rows == 0 and declared.column_names == ["id", "updated_at"]


def test_pages_are_read_one_at_a_time(fault_server: FaultServer) -> None:
    fault_items(fault_server, 40)
    source = open_http_source("api", spec_of(fault_source(fault_server,
                                                          pagination={"kind": "page", "size": 5})))
    stream = source.extract(Window(0, 40))
    assert fault_server.requests == 1  # the first page: the schema
    batches = iter(stream)
    next(batches)
    next(batches)
    assert fault_server.requests == 2  # a page is asked for when it is read
    assert sum(b.num_rows for b in batches) == 30
    assert fault_server.requests == 9


def test_requests_per_second_spaces_the_requests(fault_server: FaultServer) -> None:
    fault_items(fault_server, 20)
    fields = fault_source(fault_server, pagination={"kind": "page", "size": 5},
                          requests_per_second=10)
    started = time.monotonic()
    assert read_window(fields, Window(0, 20)).num_rows == 20
    assert time.monotonic() - started >= 0.4  # 5 requests: 4 intervals of 0.1 s


# -- the newest cursor value ------------------------------------------------------------------


def test_newest_from_latest_timestamp_and_integer(datasette: Datasette, table: str,
                                                  fault_server: FaultServer) -> None:
    fields = datasette_source(datasette, table, latest={
        "params": {"_sort_desc": "updated_at", "_size": 1, "_shape": "objects"},
        "path": "rows.0.updated_at"})
    source = open_http_source("api", spec_of(fields))
    assert source.cursor_type == "timestamp"
    assert source.cursor_range() == (None, T0 + timedelta(minutes=60))
    fault_items(fault_server, 33)
    integer = open_http_source("api", spec_of({**fault_source(fault_server), "cursor_type": None}))
    assert integer.cursor_type == "integer"  # from the value latest gives
    assert integer.cursor_range() == (None, 33)
    fault_server.items = []
    assert open_http_source("api", spec_of(fault_source(fault_server))).cursor_range() \
        == (None, None)  # an empty list: no rows
    wrong = fault_source(fault_server, latest={"path": "data.newest"})
    with pytest.raises(HttpSourceError, match=r"has no key 'newest'.*latest\.path"):
        open_http_source("api", spec_of(wrong)).cursor_range()


def test_without_latest_windows_go_up_to_now(datasette: Datasette, table: str) -> None:
    source = open_http_source("api", spec_of(datasette_source(datasette, table)))
    oldest, newest = source.cursor_range()
    assert oldest is None and isinstance(newest, datetime)
    assert abs((datetime.now(UTC) - newest).total_seconds()) < 5


# -- raw pages ----------------------------------------------------------------------------------


def test_raw_pages_as_received(datasette: Datasette, table: str, tmp_path: Path) -> None:
    source = open_http_source("api", spec_of(datasette_source(datasette, table, keep_raw=True)))
    stream = source.extract(WINDOW)
    raw = stream.notes.raw_pages
    assert isinstance(raw, RawPages)
    raw.write_into(Folder(str(tmp_path / "raw")))
    assert sum(b.num_rows for b in stream) == 40
    raw.finish()
    pages = sorted((tmp_path / "raw").glob("page-*.json"))
    assert len(pages) == raw.pages == 6  # 40 rows, 7 a page
    assert (tmp_path / "raw" / INDEX).read_text().count("\n") == 6
    assert b'"rows": [{"id": 11, "name": "n\\u00e4me 11"' in pages[0].read_bytes() or \
        '"näme 11"'.encode() in pages[0].read_bytes()
    assert stream.notes.metadata() == {"raw_pages": 6}


def test_rows_outside_the_window_are_dropped(fault_server: FaultServer) -> None:
    fault_items(fault_server, 30)
    fields = fault_source(fault_server, params={"seq_gt": "0"})  # the server does not filter
    assert read_window(fields, Window(10, 20)).column("seq").to_pylist() == list(range(11, 21))


@pytest.mark.slow
def test_memory_stays_flat_in_the_record_count() -> None:
    """The server in a process of its own: only the reader's allocations are traced."""
    process, url = start_fault_server_process()
    try:
        server = FaultServer()  # only to make the items
        call("PUT", f"{url}/_items", fault_items(server, 40_000))
        server.port = int(url.rsplit(":", 1)[1])
        fields = fault_source(server, pagination={"kind": "page", "size": 200})

        def peak(records: int) -> int:
            source = open_http_source("api", spec_of(fields))
            tracemalloc.start()
            try:
                rows = sum(batch.num_rows for batch in source.extract(Window(0, records)))
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
                assert rows == records

        small, large = peak(2_000), peak(40_000)  # 10 pages, 200 pages
        # ~0.6 MB and ~0.7 MB here (bounded caches: yarl's URLs...); all pages held: ~20x
        assert large < 2 * small, (small, large)
    finally:
        process.terminate()
        process.wait(timeout=10)
