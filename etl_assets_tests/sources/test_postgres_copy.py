"""The COPY fast path gives exactly what the driver path gives."""

import math
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from etl_assets.sources.sql.postgres_copy import copy_supported
from etl_assets.sources.sql.source import SqlSource
from etl_assets.sources.sql.spec import SqlSourceSpec
from etl_assets.watermark import Window
from etl_assets_tests.conftest import PgSchema

UTC = timezone.utc

DDL = """
CREATE TABLE {t} (
    id bigint PRIMARY KEY, n int, s smallint, code varchar(20), note text,
    at timestamptz NOT NULL, local timestamp, day date, clock time,
    amount numeric(12, 3), exact numeric, score float8, ratio real, flag boolean,
    doc jsonb, raw_doc json, ref uuid)
"""
ROWS = """
INSERT INTO {t}
SELECT g, g * 1000, (g % 300)::smallint, 'C-' || g,
       CASE g % 6 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN E'line\\nbreak "quoted", comma'
                  WHEN 3 THEN 'NaN' WHEN 4 THEN '\\N' ELSE 'plain ' || g END,
       timestamptz '2024-05-01 00:00:00+02' + make_interval(secs => g * 7.123457),
       CASE WHEN g % 5 = 0 THEN NULL ELSE timestamp '1999-12-31 23:59:59.999999' + make_interval(days => g) END,
       CASE WHEN g % 4 = 0 THEN NULL ELSE date '0001-01-01' + g * 1000 END,
       time '00:00:00.000001' + make_interval(mins => g),
       CASE WHEN g % 3 = 0 THEN NULL ELSE (g * -1.001)::numeric(12, 3) END,
       g / 3.0, CASE g % 7 WHEN 0 THEN 'NaN'::float8 WHEN 1 THEN 'Infinity' WHEN 2 THEN '-Infinity'
                            WHEN 3 THEN NULL ELSE g * 0.1 END,
       (g * 0.1)::real, CASE WHEN g % 3 = 0 THEN NULL ELSE g % 2 = 0 END,
       CASE WHEN g % 9 = 0 THEN NULL ELSE jsonb_build_object('g', g, 'text', E'a\\nb "c"') END,
       json_build_object('g', g), md5(g::text)::uuid
FROM generate_series(1, {n}) AS g
"""


def same(a: object, b: object) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_copy_path_equals_driver_path(pg: PgSchema) -> None:
    table = pg.table("wide_types")
    pg.execute(DDL.format(t=table))
    pg.execute(ROWS.format(t=table, n=1_000))
    spec = SqlSourceSpec(connection={"url": "sqlite://"}, table=table, cursor="at", chunk_rows=300)
    source = SqlSource("wide", spec, pg.url)
    assert copy_supported(source.schema)
    window = Window(datetime(2024, 4, 30, 22, 0, 30, tzinfo=UTC), datetime(2024, 5, 1, 1, tzinfo=UTC))
    fast = list(source.extract(window))
    slow = list(source._batches(window, source.schema))
    assert [b.num_rows for b in fast] == [b.num_rows for b in slow] == [300, 300, 300, 96]  # ids 5..1000
    assert all(b.schema.equals(source.schema, check_metadata=True) for b in fast)
    fast_rows = pa.Table.from_batches(fast).to_pylist()
    slow_rows = pa.Table.from_batches(slow).to_pylist()
    for got, expected in zip(fast_rows, slow_rows, strict=True):
        for column, value in expected.items():
            if column in ("doc", "raw_doc"):  # JSON text may differ in spacing only
                continue
            assert same(got[column], value), (column, got[column], value)
    notes = {r["id"] % 6: r["note"] for r in fast_rows}
    assert notes[0] is None and notes[1] == "" and notes[2] == 'line\nbreak "quoted", comma'
    assert notes[3] == "NaN" and notes[4] == "\\N"
    scores = [r["score"] for r in fast_rows if r["id"] % 7 == 0]
    assert scores and all(math.isnan(s) for s in scores)


def test_types_without_an_exact_csv_form_take_the_driver_path(pg: PgSchema) -> None:
    table = pg.table("blobs")
    pg.execute(f"CREATE TABLE {table} (id int, raw bytea, tags text[], took interval)")
    spec = SqlSourceSpec(connection={"url": "sqlite://"}, table=table, cursor="id")
    schema = SqlSource("blobs", spec, pg.url).schema
    assert not copy_supported(schema)
    assert copy_supported(schema.remove(3).remove(2).remove(1))


@pytest.mark.parametrize("rows", [0, 1, 299, 300, 301])
def test_copy_path_batch_sizes(pg: PgSchema, rows: int) -> None:
    table = pg.table("ids")
    pg.execute(f"CREATE TABLE {table} AS SELECT g AS id, 'x' || g AS v FROM generate_series(1, {rows}) g")
    spec = SqlSourceSpec(connection={"url": "sqlite://"}, table=table, cursor="id", chunk_rows=100)
    batches = list(SqlSource("ids", spec, pg.url).extract(Window(0, 1_000)))
    assert sum(b.num_rows for b in batches) == rows
    assert all(b.num_rows == 100 for b in batches[:-1])
    ids = [i for b in batches for i in b.column("id").to_pylist()]
    assert ids == list(range(1, rows + 1))
