"""Table names with quoted parts (dots, spaces, quotes) from the spec to every statement: the
SQL source, the PostgreSQL sink, its watermark and ``etl-assets status``, on real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from dagster import DagsterInstance

from etl_assets.cli import main
from etl_assets.code_location import load_definitions
from etl_assets.sinks.postgres.watermark import read_watermark
from etl_assets.sources.sql.source import SqlSource
from etl_assets.spec import parse_spec
from etl_assets.table_names import TableName, TableNameError
from etl_assets.watermark import Window
from etl_assets_tests.conftest import PgSchema, project_dagster_home
from etl_assets_tests.sample_tables import create_pg_readings, rows_differing
from etl_assets_tests.test_factory import run_partition

UTC = timezone.utc
WHOLE = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, 2, tzinfo=UTC))


@pytest.mark.parametrize(("text", "schema", "name", "display"), [
    ("t", None, "t", "t"),
    ("Analytics.Sensors", "Analytics", "Sensors", "Analytics.Sensors"),
    ('"a.b"."c d"', "a.b", "c d", '"a.b"."c d"'),
    ('s."x""y.z"', "s", 'x"y.z', 's."x""y.z"'),
    ('Mixed "Case"', None, 'Mixed "Case"', '"Mixed ""Case"""'),
])
def test_names_are_read_as_written(text: str, schema: str | None, name: str,
                                   display: str) -> None:
    parsed = TableName.parse(text)
    assert (parsed.schema, parsed.name, parsed.display) == (schema, name, display)
    assert TableName.parse(parsed.display) == parsed


@pytest.mark.parametrize(("text", "error"), [
    ("a.b.c", "'a.b.c' has 3 parts"), ('"a.b".c."d"', "has 3 parts"),
    ("a..b", "an empty part"), (".b", "an empty part"), ('"".b', "an empty part"),
    ("a.", "an empty part after the last dot"), ('"a.b', "a quoted part is not closed"),
    ('"a"b.c', "a quoted part must end at a dot or the end"),
])
def test_bad_names_are_refused(text: str, error: str) -> None:
    with pytest.raises(TableNameError, match=error.replace(".", r"\.")):
        TableName.parse(text)


@pytest.fixture
def dotted_schema(pg: PgSchema) -> Iterator[str]:
    """A schema whose name holds a dot, dropped after the test."""
    name = f"{pg.name}.b"
    yield name
    pg.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.mark.slow
def test_a_table_named_with_a_dot_and_a_space_loads_keeps_its_watermark_and_reports(
        pg: PgSchema, dotted_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    source = create_pg_readings(pg, '"Src d"', last=120)
    target = f'"{dotted_schema}"."c d"'
    home = project_dagster_home(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "sources": {"readings": {
            "connection": {"env": "TEST_SOURCE_URL"}, "table": '"Src d"', "schema": pg.name,
            "cursor": "updated_at", "primary_key": ["id"], "chunk_rows": 50}},
        "sinks": {"readings_pg": {
            "source": "readings", "kind": "postgres", "connection": {"env": "TEST_SOURCE_URL"},
            "table": target}}}))
    for name, value in (("DAGSTER_HOME", str(home)), ("TEST_SOURCE_URL", pg.url),
                        ("ETL_ASSETS_SPEC", str(spec))):
        monkeypatch.setenv(name, value)

    with DagsterInstance.get() as instance:
        run_partition(load_definitions(), instance, WHOLE)
    assert rows_differing(pg, source, target) == 0
    schemas = pg.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                         (f"{pg.name}%",))
    assert sorted(s for (s,) in schemas) == [pg.name, dotted_schema]  # no other made up
    assert read_watermark(pg.url, target) == WHOLE.hi

    assert main(["status"]) == 0
    assert f'sink readings_pg: 120 rows in "{dotted_schema}"."c d", high watermark ' \
           f'20240301T020000Z' in capsys.readouterr().out


def test_the_fast_reader_quotes_a_dotted_schema_and_a_spaced_name(
        pg: PgSchema, dotted_schema: str) -> None:
    pg.execute(f'CREATE SCHEMA "{dotted_schema}"')
    pg.execute(f'CREATE TABLE "{dotted_schema}"."c d" (id int PRIMARY KEY, "Code" text, '
               f"updated_at timestamptz)")
    pg.execute(f'INSERT INTO "{dotted_schema}"."c d" SELECT g, \'c\' || g, timestamptz '
               f"'2024-03-01 00:00+00' + make_interval(mins => g) FROM generate_series(1, 150) g")
    spec = parse_spec({"sources": {"s": {
        "connection": {"env": "UNUSED"}, "table": f'"{dotted_schema}"."c d"',
        "cursor": "updated_at", "chunk_rows": 40}}}).sources["s"]
    source = SqlSource("s", spec, pg.url)
    try:
        assert source.reader() == "adbc-postgresql"
        rows = pa.Table.from_batches(list(source.extract(WHOLE)))
    finally:
        source.dispose()
    assert rows.column("id").to_pylist() == list(range(1, 121))
    assert rows.column("Code").to_pylist()[:2] == ["c1", "c2"]
