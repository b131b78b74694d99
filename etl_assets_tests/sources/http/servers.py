"""What the HTTP source tests serve: a datasette table of timestamped rows, pouchdb documents,
the fault server's items; and reading a window of a source without Dagster."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa

from etl_assets.sources.http.source import open_http_source
from etl_assets.sources.http.spec import HttpSourceSpec
from etl_assets.spec import parse_spec
from etl_assets.watermark import Window
from etl_assets_testing.servers.datasette import Datasette
from etl_assets_testing.servers.fault_http import FaultServer

UTC = timezone.utc
T0 = datetime(2024, 3, 1, tzinfo=UTC)  # row i of a datasette table is updated at T0 + i minutes
WINDOW = Window(T0 + timedelta(minutes=10), T0 + timedelta(minutes=50))  # rows 11..50


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def datasette_rows(count: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": None if i % 7 == 0 else f"näme {i}", "amount": i * 1.25,
             "updated_at": iso(T0 + timedelta(minutes=i)), "meta": f'{{"n": {i}}}'}
            for i in range(1, count + 1)]


def datasette_table(datasette: Datasette, count: int = 60) -> str:
    """A new table of ``count`` rows (``datasette_rows``): its name."""
    name = f"items_{uuid.uuid4().hex[:8]}"
    datasette.create_table(name, [{"name": "id", "type": "integer"},
                                  {"name": "name", "type": "text"},
                                  {"name": "amount", "type": "float"},
                                  {"name": "updated_at", "type": "text"},
                                  {"name": "meta", "type": "text"}])
    datasette.insert(name, datasette_rows(count))
    return name


def in_window(rows: list[dict[str, Any]], window: Window) -> list[dict[str, Any]]:
    """``rows`` of ``window``, their ``updated_at`` as datetimes."""
    out = []
    for row in rows:
        updated = datetime.fromisoformat(row["updated_at"].replace("Z", "+00:00"))
        if window.lo < updated <= window.hi:
            out.append({**row, "updated_at": updated})
    return out


WINDOW_FILTERS = {"_shape": "objects", "updated_at__gt": "{lo}", "updated_at__lte": "{hi}",
                  "_sort": "id"}


def datasette_source(datasette: Datasette, table: str, **fields: object) -> dict[str, Any]:
    """A source reading ``table`` through datasette's table API, 7 rows a page."""
    return {"kind": "http", "url": f"{datasette.url}/{datasette.database}/{table}.json",
            "cursor": "updated_at", "primary_key": ["id"],
            "params": {**WINDOW_FILTERS, "_size": 7}, "records": "rows",
            "pagination": {"kind": "next_token"}, "retry_delay_s": 0.01, **fields}


def datasette_query_source(datasette: Datasette, table: str, paging: str,
                           **fields: object) -> dict[str, Any]:
    """A source reading ``table`` through datasette's SQL API, ``paging`` its LIMIT clause."""
    sql = (f"select * from [{table}] where updated_at > :lo and updated_at <= :hi "
           f"order by id {paging}")
    return {"kind": "http", "url": f"{datasette.url}/{datasette.database}/-/query.json",
            "cursor": "updated_at", "primary_key": ["id"],
            "params": {"sql": sql, "lo": "{lo}", "hi": "{hi}", "_shape": "objects"},
            "records": "rows", "retry_delay_s": 0.01, **fields}


def fault_items(server: FaultServer, count: int = 50) -> list[dict[str, Any]]:
    """``count`` items with an integer cursor ``seq`` (1..count) and a nested object."""
    server.items = [{"seq": i, "label": f"item {i}", "detail": {"size": i % 5, "tags": ["a"]}}
                    for i in range(1, count + 1)]
    return server.items


def fault_source(server: FaultServer, **fields: object) -> dict[str, Any]:
    """A source of the fault server's items by ``seq`` (its newest from ``latest``)."""
    return {"kind": "http", "url": f"{server.url}/items", "cursor": "seq",
            "cursor_type": "integer", "primary_key": ["seq"],
            "params": {"seq_gt": "{lo}", "seq_lte": "{hi}"}, "records": "data.items",
            "latest": {"params": {"order": "desc", "per_page": 1}, "path": "data.items.0.seq"},
            "retry_delay_s": 0.01, **fields}


def spec_of(fields: dict[str, Any]) -> HttpSourceSpec:
    spec = parse_spec({"sources": {"api": fields}, "sinks": {}}).sources["api"]
    assert isinstance(spec, HttpSourceSpec)
    return spec


def read_window(fields: dict[str, Any], window: Window) -> pa.Table:
    """The window's rows as the source gives them to staging."""
    source = open_http_source("api", spec_of(fields))
    try:
        stream = source.extract(window)
        return pa.Table.from_batches(list(stream), stream.schema)
    finally:
        source.dispose()
