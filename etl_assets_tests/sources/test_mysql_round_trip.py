"""A MariaDB table of every type, through the whole pipeline (source, staging, sinks), lands
with values equal in PostgreSQL, MariaDB (the MySQL sink), parquet and JSON lines."""

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pymysql
import pytest
from dagster import DagsterInstance

from etl_assets.factory import build_definitions
from etl_assets.spec import parse_spec
from etl_assets.watermark import Window
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sources.test_fast_readers import mariadb_table
from etl_assets_tests.test_factory import run_partition

UTC = timezone.utc

DDL = """
CREATE TABLE `{t}` (
    id INT PRIMARY KEY, flag BOOLEAN, tiny TINYINT(4), doc JSON, born YEAR, bits BIT(5),
    took TIME(6), tags SET('a', 'b'), kind ENUM('x', 'y'), `we``ird` INT, dbl DOUBLE,
    big BIGINT UNSIGNED, money DECIMAL(65, 30), at DATETIME(6), day DATE, raw VARBINARY(8),
    note TEXT, stamp TIMESTAMP(6) NULL)
"""
ROWS = ("(1, TRUE, 5, '{\"a\": [1, null]}', 2024, b'10101', '-838:59:59', 'a,b', 'y', 3, "
        "0.1e0 + 0.2e0, 18446744073709551615, -0.000000000000000000000000000001, "
        "'2024-01-01 12:00:00.123456', '2024-02-29', x'00ff', 'hé €', '2024-01-01 12:00:00.5'), "
        "(2, FALSE, -128, '[]', 1901, b'0', '12:00:00.5', '', 'x', NULL, -21.5e-300, 0, "
        "12345678901234567890123456789012345.123456789012345678901234567890, "
        "'1970-01-01 00:00:00', '1000-01-01', x'', '', '0000-00-00 00:00:00'), "
        "(3" + ", NULL" * 17 + ")")
# written by a session in +05:30 that lets a zero date in: row 1's TIMESTAMP is 06:30 UTC


@pytest.mark.slow
def test_every_mariadb_type_round_trips_into_postgres_mysql_parquet_and_json_lines(
        mysql_url: str, pg: PgSchema, instance: DagsterInstance, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    table = mariadb_table(mysql_url, DDL, ROWS, session="sql_mode = '', time_zone = '+05:30'")
    monkeypatch.setenv("TEST_SOURCE_URL", mysql_url)
    monkeypatch.setenv("TEST_TARGET_URL", pg.url)
    spec = {"sources": {"readings": {"connection": {"env": "TEST_SOURCE_URL"}, "table": table,
                                     "cursor": "id", "primary_key": ["id"]}},
            "sinks": {"every_pg": {"source": "readings", "kind": "postgres",
                                   "connection": {"env": "TEST_TARGET_URL"},
                                   "table": pg.table("every")},
                      "every_mysql": {"source": "readings", "kind": "mysql",
                                      "connection": {"env": "TEST_SOURCE_URL"},
                                      "table": f"{table}_copy"},
                      "every_parquet": {"source": "readings", "kind": "parquet",
                                        "path": str(tmp_path / "lake"), "mode": "replace"},
                      "every_json": {"source": "readings", "kind": "parquet", "format": "json",
                                     "path": str(tmp_path / "json"), "mode": "replace"}}}
    metadata = run_partition(build_definitions(parse_spec(spec)), instance, Window(0, 3))
    assert metadata["readings"]["zero_dates_as_null"].value == {"stamp": 1}

    expected = [
        {"id": 1, "flag": True, "tiny": 5, "doc": {"a": [1, None]}, "born": 2024, "bits": 21,
         "took": -timedelta(hours=838, minutes=59, seconds=59), "tags": "a,b", "kind": "y",
         "we`ird": 3, "dbl": 0.30000000000000004, "big": 2**64 - 1,
         "money": Decimal("-0.000000000000000000000000000001"), "day": "2024-02-29",
         "raw": b"\x00\xff", "note": "hé €", "stamp": datetime(2024, 1, 1, 6, 30, 0, 500000, tzinfo=UTC)},
        {"id": 2, "flag": False, "tiny": -128, "doc": [], "born": 1901, "bits": 0,
         "took": timedelta(hours=12, microseconds=500_000), "tags": "", "kind": "x",
         "we`ird": None, "dbl": -21.5e-300, "big": 0,
         "money": Decimal("12345678901234567890123456789012345.123456789012345678901234567890"),
         "day": "1000-01-01", "raw": b"", "note": "", "stamp": None}]

    got = pg.execute(f'SELECT id, flag, tiny, doc, born, bits, took, tags, kind, "we`ird", dbl, '
                     f"big, money, day::text, raw, note, stamp FROM {pg.table('every')} ORDER BY id")
    names = list(expected[0])
    landed = [dict(zip(names, row, strict=True)) for row in got]
    for row in landed:
        row["raw"] = bytes(row["raw"]) if row["raw"] is not None else None
    assert landed[:2] == expected
    assert all(v is None for k, v in landed[2].items() if k != "id")

    database = mysql_url.rsplit("/", 1)[1]
    conn = pymysql.connect(host="127.0.0.1", user="root", database=database)
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(f"SELECT * FROM `{table}_copy` ORDER BY id")
        copied = cur.fetchall()
        cur.execute(f"SHOW COLUMNS FROM `{table}_copy`")
        types = {c["Field"]: c["Type"] for c in cur.fetchall()}
    conn.close()
    assert types["flag"] == "tinyint(1)" and types["big"] == "bigint(20) unsigned"
    assert types["money"] == "decimal(65,30)" and types["took"] == "time(6)"
    assert types["stamp"] == "datetime(6)"  # the UTC instant, as UTC wall time
    for row, want in zip(copied, expected, strict=False):
        stamp = row["stamp"] and row["stamp"].replace(tzinfo=UTC)
        assert {**row, "flag": bool(row["flag"]), "doc": json.loads(row["doc"]),
                "day": row["day"].isoformat(), "stamp": stamp} == {**want, "at": row["at"]}
    assert copied[0]["at"].isoformat() == "2024-01-01T12:00:00.123456"
    assert all(v is None for k, v in copied[2].items() if k != "id")

    lake = pq.read_table(tmp_path / "lake").sort_by("id").to_pylist()
    for row, want in zip(lake, expected, strict=False):
        assert {**row, "doc": json.loads(row["doc"]), "day": row["day"].isoformat()} == {
            **want, "at": row["at"]}
    lines = [json.loads(line) for f in sorted((tmp_path / "json").rglob("*.json*"))
             for line in f.read_text().splitlines()]
    by_id = {d["id"]: d for d in lines}
    assert by_id[1]["big"] == 2**64 - 1 and by_id[1]["money"] == "-0.000000000000000000000000000001"
    assert by_id[1]["took"] == -(838 * 3600 + 59 * 60 + 59) and by_id[1]["doc"] == {"a": [1, None]}
    assert by_id[2]["flag"] is False and by_id[2]["bits"] == 0 and by_id[2]["dbl"] == -21.5e-300
    assert by_id[3]["flag"] is None and by_id[3]["took"] is None
    assert by_id[1]["stamp"].startswith("2024-01-01T06:30:00.5") and by_id[2]["stamp"] is None
    assert pg.execute(f"SELECT data_type FROM information_schema.columns WHERE table_schema = "
                      f"'{pg.name}' AND table_name = 'every' AND column_name = 'stamp'") == [
        ("timestamp with time zone",)]
