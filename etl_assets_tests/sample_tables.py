"""Source tables with awkward values (NULLs, time zones, numerics, JSON) for the tests."""

from __future__ import annotations

from etl_assets_tests.conftest import PgSchema

PG_READINGS_DDL = """
CREATE TABLE {table} (
    id bigint PRIMARY KEY,
    code varchar(16) NOT NULL,
    description text,
    updated_at timestamptz NOT NULL,
    local_time timestamp,
    amount numeric(12, 3),
    ratio numeric,
    score double precision,
    active boolean,
    day date,
    attrs jsonb,
    tags text[],
    ref uuid,
    blob bytea
)"""

PG_READINGS_ROWS = """
INSERT INTO {table}
SELECT g,
       'SEN-' || lpad(g::text, 5, '0'),
       CASE WHEN g % 7 = 0 THEN NULL WHEN g % 7 = 1 THEN '' ELSE 'reading "' || g || E'",\\n ok' END,
       timestamptz '2024-03-01 00:00:00+00' + make_interval(mins => g),
       CASE WHEN g % 5 = 0 THEN NULL ELSE timestamp '2024-03-01 12:00' + make_interval(secs => g * 1.5) END,
       CASE WHEN g % 9 = 0 THEN NULL ELSE (g * 1.125)::numeric(12, 3) END,
       CASE WHEN g % 4 = 0 THEN NULL ELSE g / 7.0 END,
       CASE WHEN g % 11 = 0 THEN 'NaN'::float8 ELSE g * 0.1 END,
       CASE WHEN g % 3 = 0 THEN NULL ELSE g % 2 = 0 END,
       date '2024-01-01' + g,
       CASE WHEN g % 6 = 0 THEN NULL ELSE jsonb_build_object('n', g, 'nested', jsonb_build_array(1, 'two', null), 'ü', 'ß') END,
       CASE WHEN g % 8 = 0 THEN NULL ELSE ARRAY['a' || g, NULL, 'c'] END,
       md5(g::text)::uuid,
       CASE WHEN g % 10 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END
FROM generate_series({first}, {last}) AS g
"""

READINGS_COLUMNS = ("id, code, description, updated_at, local_time, amount, ratio, score, "
                    "active, day, attrs, tags, ref, blob")


def create_pg_readings(pg: PgSchema, table: str = "readings", first: int = 1,
                       last: int = 500) -> str:
    """A PostgreSQL table of readings ``first..last``; row g is updated at 2024-03-01 + g min."""
    qualified = pg.table(table)
    pg.execute(PG_READINGS_DDL.format(table=qualified))
    add_pg_readings(pg, qualified, first, last)
    return qualified


def add_pg_readings(pg: PgSchema, qualified: str, first: int, last: int) -> None:
    pg.execute(PG_READINGS_ROWS.format(table=qualified, first=first, last=last))


def rows_differing(pg: PgSchema, left: str, right: str, columns: str = READINGS_COLUMNS) -> int:
    """Rows of ``left`` not in ``right`` plus rows of ``right`` not in ``left`` (NaN = NaN)."""
    (count,) = pg.execute(
        f"SELECT (SELECT count(*) FROM (SELECT {columns} FROM {left} EXCEPT "
        f"SELECT {columns} FROM {right}) a) + (SELECT count(*) FROM (SELECT {columns} "
        f"FROM {right} EXCEPT SELECT {columns} FROM {left}) b)")[0]
    return count
