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
    assert spec.sink_setup("sensors_pg").primary_key == ["code"]
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
    (("connection: {env: SOURCE_DB_URL}", "connection: {url: 'postgresql://u:${PW}@h/db'}"),
     "source 'sensors': field 'connection': `url` holds a password or another secret (a "
     "password in the user info (user:password@)): put the whole URL in an environment "
     "variable and name it with `env`"),
    (("connection: {env: SOURCE_DB_URL}", "connection: {url: 'postgresql://u@h/db?a=1&PassWord=x'}"),
     "source 'sensors': field 'connection': `url` holds a password or another secret "
     "(parameter PassWord)"),
    (("connection: {env: TARGET_PG_URL}", "connection: {url: 'postgresql://u@h/db?sslpassword=x'}"),
     "sink 'sensors_pg': field 'connection': `url` holds a password or another secret "
     "(parameter sslpassword)"),
    (("connection: {env: SOURCE_DB_URL}", "connection: {url: \"host=h password='a b'\"}"),
     "source 'sensors': field 'connection': `url` holds a password or another secret "
     "(keyword password)"),
    (("table: analytics.sensors}", "table: a.b.c}"),
     "sink 'sensors_pg': field 'table': 'a.b.c' has 3 parts; give schema.table"),
    (("table: bgs.dic_sen_sensor", "table: bgs..dic_sen_sensor"),
     "source 'sensors': field 'table': 'bgs..dic_sen_sensor': an empty part"),
    (("table: analytics.sensors}", "table: analytics.sensors, schema: other}"),
     "sink 'sensors_pg': field 'table': 'analytics.sensors' names a schema and so does "
     "`schema`"),
    (("table: analytics.sensors}", "table: '\"analytics.sensors'}"),
     "sink 'sensors_pg': field 'table': '\"analytics.sensors': a quoted part is not closed"),
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
    assert spec.sink_setup("sensors_pg").cursor_column == "date_updated"
    assert spec.sink_setup("sensors_lake").cursor_column == "changed"
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
def test_parameters_the_spec_adds_are_refused_in_a_url_too(tmp_path: Path) -> None:
    text = GOOD.replace("connection: {env: SOURCE_DB_URL}",
                        "connection: {url: 'postgresql://u@h/db?Sig9=x'}")
    assert load_spec(write(tmp_path, text))  # not a secret's name by default
    path = write(tmp_path, text + "masked_parameters: [sig9]\n")
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert str(error.value) == (
        f"{path}: source 'sensors': field 'connection.url': `url` holds a password or another "
        f"secret (parameter Sig9): put the whole URL in an environment variable and name it "
        f"with `env` instead of `url`")


def test_table_names_hold_quoted_dots_and_take_a_separate_schema(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD.replace(
        "table: analytics.sensors}", "table: '\"my.schema\".\"tbl.x\"\"y\"'}").replace(
        "table: bgs.dic_sen_sensor", "table: 'Dic Sen'\n    schema: bgs.x")))
    sink = spec.sinks["sensors_pg"]
    assert (sink.table_name.schema, sink.table_name.name) == ("my.schema", 'tbl.x"y')
    assert sink.table_name.display == '"my.schema"."tbl.x""y"'
    source = spec.sources["sensors"].table_name
    assert (source.schema, source.name, source.display) == ("bgs.x", "Dic Sen", '"bgs.x"."Dic Sen"')


@pytest.mark.parametrize("header", ["Authorization", "AUTHORIZATION", "authorization"])
def test_user_info_and_an_authorization_header_together_are_refused(header: str) -> None:
    sink = {"source": "s", "kind": "http", "url": "https://${API_USER}:${API_PASS}@h/d/{id}",
            "headers_from_env": {header: "TOKEN_VAR"}}
    spec = {"sources": {"s": {"connection": {"env": "X"}, "table": "t", "cursor": "id"}},
            "sinks": {"api": sink}}
    with pytest.raises(SpecError) as error:
        parse_spec(spec, "p.yaml")
    assert str(error.value) == (
        f"p.yaml: sink 'api': `url` holds user info (user:password@) and `{header}` is set "
        f"too: an HTTP request takes one of them; drop one")
    assert parse_spec({**spec, "sinks": {"api": {**sink, "url": "https://h/d/{id}"}}})
    assert parse_spec({**spec, "sinks": {"api": {**sink, "headers_from_env": {}}}})


@pytest.mark.parametrize(("url", "error"), [
    ("https://u:pw@h/d", "a password in the user info"),
    ("https://h/d?x=1&access_token=abc${T}", "parameter access_token"),
    ("https://h/d?sig=abc", "parameter sig"),
])
def test_http_urls_and_file_paths_take_secrets_only_from_env(url: str, error: str) -> None:
    source = {"s": {"connection": {"env": "X"}, "table": "t", "cursor": "id"}}
    good = {"source": "s", "kind": "http", "url": "https://${U}:${P}@h/d?access_token=${T}"}
    assert parse_spec({"sources": source, "sinks": {"api": good}})
    for sink in ({**good, "url": url}, {"source": "s", "kind": "parquet", "path": url}):
        with pytest.raises(SpecError) as raised:
            parse_spec({"sources": source, "sinks": {"out": sink}}, "p.yaml")
        field = "url" if sink["kind"] == "http" else "path"
        assert f"p.yaml: sink 'out': field '{field}': holds a secret ({error}" in \
            str(raised.value)


def test_a_source_is_sql_unless_it_names_another_kind(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD))
    assert type(spec.sources["sensors"]).__name__ == "SqlSourceSpec"
    assert spec.sources["sensors"].kind == "sql"
    assert load_spec(write(tmp_path, GOOD.replace("  sensors:\n", "  sensors:\n    kind: sql\n"))
                     ) == spec
    with pytest.raises(SpecError, match=r"source 'sensors': `kind` must be one of sql, "
                                        r"(?=.*http)(?=.*python)"):
        load_spec(write(tmp_path, GOOD.replace("  sensors:\n", "  sensors:\n    kind: api\n")))


def test_a_sink_gets_its_sources_key_and_cursor_unless_it_names_its_own(tmp_path: Path) -> None:
    text = GOOD + ("  sensors_lake: {source: sensors, kind: parquet, path: /tmp/lake, "
                   "primary_key: [code, site], cursor_column: changed}\n")
    spec = load_spec(write(tmp_path, text))
    pg, lake = spec.sink_setup("sensors_pg"), spec.sink_setup("sensors_lake")
    assert (pg.primary_key, pg.cursor_column) == (["code"], "date_updated")
    assert (lake.primary_key, lake.cursor_column) == (["code", "site"], "changed")
    assert pg.spec is spec.sinks["sensors_pg"]  # the validated model itself, not a copy
    assert pg.dead_letter_root == "${ETL_ASSETS_HOME}/dead_letters"
    assert spec.sinks_of("sensors") == ["sensors_pg", "sensors_lake"]


def test_staging_and_dead_letters_take_object_store_urls(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD + """
staging: {root: "s3://lake/staging", storage_options: {endpoint_url: "http://127.0.0.1:9000"}}
dead_letters: {root: "gs://lake/dead_letters"}
"""))
    assert spec.staging.folder().display == "s3://lake/staging"
    assert spec.sink_setup("sensors_pg").dead_letter_root == "gs://lake/dead_letters"


@pytest.mark.parametrize(("section", "error"), [
    ('staging: {root: "az://box/staging"}',
     "field 'staging.root': az:// needs the package adlfs, which is not installed "
     "(pip install 'etl_assets[azure]')"),
    ('dead_letters: {root: "nosuch://box/dl"}',
     "field 'dead_letters.root': nosuch://box/dl: fsspec knows no filesystem for "
     "nosuch://"),
    ('staging: {root: "s3://lake/x", storage_options: {secret: "s"}}',
     "field 'staging.storage_options': secret look like secrets"),
    ('staging: {root: "https://user:pw@host/x"}', "field 'staging.root': holds a secret"),
    ('dead_letters: {root: "out/dead_letters"}',
     "field 'dead_letters.root': 'out/dead_letters' is relative: each process would find it in "
     "its own working directory"),
])
def test_a_storage_url_this_installation_cannot_open_is_a_spec_error(
        tmp_path: Path, section: str, error: str) -> None:
    with pytest.raises(SpecError) as raised:
        load_spec(write(tmp_path, GOOD + section + "\n"))
    assert error in str(raised.value)
    assert "pw" not in str(raised.value)
