from pathlib import Path

import pytest

from etl_assets.spec import SpecError, load_spec, parse_spec

GOOD = """
sources:
  sensors:
    connection: {env: SOURCE_DB_URL}
    table: bgs.dic_sen_sensor
    cursor: date_updated
    primary_key: [code]
    chunk_rows: 50000
    lookback: 10m
sinks:
  sensors_pg: {source: sensors, kind: postgres, connection: {env: TARGET_PG_URL}, table: analytics.sensors}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipelines.yaml"
    path.write_text(text)
    return path


def test_a_good_spec_loads_with_defaults(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD))
    source = spec.sources["sensors"]
    assert source.table == "bgs.dic_sen_sensor"
    assert source.lookback == "10m"
    assert source.max_window is None and source.min_window == 0
    assert spec.sink_primary_key("sensors_pg") == ["code"]
    assert spec.staging.root == "${ETL_ASSETS_HOME}/staging"


@pytest.mark.parametrize(("change", "expected"), [
    (("chunk_rows: 50000", "chunk_rows: 0"),
     "source 'sensors': field 'chunk_rows': Input should be greater than 0"),
    (("chunk_rows: 50000", "chunk_rows: lots"),
     "source 'sensors': field 'chunk_rows': Input should be a valid integer"),
    (("lookback: 10m", "lookbak: 10m"),
     "source 'sensors': field 'lookbak': Extra inputs are not permitted"),
    (("lookback: 10m", "lookback: ten minutes"),
     "source 'sensors': field 'lookback': 'ten minutes' is not a duration"),
    (("table: analytics.sensors}", "table: analytics.sensors, colour: red}"),
     "sink 'sensors_pg': field 'colour': Extra inputs are not permitted"),
    (("{source: sensors, kind: postgres", "{source: sensorz, kind: postgres"),
     "sink 'sensors_pg': source 'sensorz' is not defined (sources: sensors)"),
    (("kind: postgres", "kind: oracle"),
     "sink 'sensors_pg': Input tag 'oracle' found using 'kind' does not match"),
    (("table: bgs.dic_sen_sensor", "query: select * from t"),
     "source 'sensors': `query` must use the bind parameters :lo, :hi"),
    (("    table: bgs.dic_sen_sensor\n", ""),
     "source 'sensors': give exactly one of `table` or `query`"),
    (("connection: {env: SOURCE_DB_URL}", "connection: {url: 'postgresql://u:secret@h/db'}"),
     "source 'sensors': field 'connection': `url` holds a password"),
    (("  sensors:\n", "  2sensors:\n"),
     "source '2sensors': a name must be letters, digits and _"),
    (("table: analytics.sensors}", "table: analytics.sensors, table_definition: models.Sensors}"),
     "sink 'sensors_pg': field 'table_definition': 'models.Sensors' is not of the form package.module:name"),
    (("table: analytics.sensors}", "table: analytics.sensors, without_key: upsert}"),
     "sink 'sensors_pg': field 'without_key': Input should be 'replace_window' or 'append'"),
])
def test_a_bad_spec_names_file_pipeline_and_field(tmp_path: Path, change: tuple[str, str],
                                                  expected: str) -> None:
    old, new = change
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert str(error.value).startswith(f"{path}: ")
    assert expected in str(error.value)


def test_yaml_syntax_and_missing_file_errors_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "sources: [unclosed")
    with pytest.raises(SpecError, match=f"^{path}: not valid YAML"):
        load_spec(path)
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "missing.yaml")


def test_python_api_is_the_same_models() -> None:
    spec = parse_spec({
        "sources": {"s": {"connection": {"url": "sqlite:///x.db"}, "query":
                          "select * from t where id > :lo and id <= :hi", "cursor": "id",
                          "cursor_type": "integer"}},
    })
    assert spec.sources["s"].cursor_type == "integer"
    with pytest.raises(SpecError, match=r"`cursor_type` .* is required with `query`"):
        parse_spec({"sources": {"s": {"connection": {"url": "sqlite:///x.db"}, "query":
                                      "select * from t where id > :lo and id <= :hi",
                                      "cursor": "id"}}}, "api")


def test_keyed_sinks_default_to_newest_wins_and_http_needs_revisions_for_it(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD + """
  sensors_lake: {source: sensors, kind: parquet, path: /tmp/lake, mode: update, cursor_column: changed}
  sensors_api: {source: sensors, kind: http, url: "http://couch:5984/db/_bulk_docs",
                format: json_array_bulk, wrap: docs, couchdb_revisions: true}
  sensors_es: {source: sensors, kind: http, url: "http://es:9200/s/_bulk", format: ndjson_bulk}
"""))
    assert spec.sinks["sensors_pg"].conflict == "newest"  # type: ignore[union-attr]
    assert spec.sink_cursor_column("sensors_pg") == "date_updated"
    assert spec.sink_cursor_column("sensors_lake") == "changed"
    assert spec.sinks["sensors_api"].conflict_rule == "newest"  # type: ignore[union-attr]
    assert spec.sinks["sensors_es"].conflict_rule == "last_write"  # type: ignore[union-attr]
    assert spec.sources["sensors"].retry_policy().retries == 3
    assert spec.sinks["sensors_pg"].retries == 5  # type: ignore[union-attr]

    bad = GOOD + """
  sensors_es: {source: sensors, kind: http, url: "http://es:9200/s/_bulk", format: ndjson_bulk,
               conflict: newest}
"""
    with pytest.raises(SpecError, match=r"sink 'sensors_es': conflict newest needs couchdb_revisions: "
                                        r"true .* set conflict: last_write"):
        load_spec(write(tmp_path, bad))
    with pytest.raises(SpecError, match="sink 'sensors_pg': field 'conflict': Input should be 'newest' "
                                        "or 'last_write'"):
        load_spec(write(tmp_path, GOOD.replace("table: analytics.sensors}",
                                               "table: analytics.sensors, conflict: oldest}")))
