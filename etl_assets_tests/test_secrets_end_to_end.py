"""Secrets, as a user runs pipelines: ``etl-assets`` and ``dagster job execute`` in
subprocesses over a persistent DAGSTER_HOME, real PostgreSQL and a real HTTP server.

Five secret forms, each with its own random marker: (1) a password in a PostgreSQL URL's user
info, (2) ``?password=`` and ``sslpassword=`` parameters, (3) a libpq keyword string with a
quoted password, (4) an HTTP sink URL with ``?access_token=${TOKEN}`` and (5) an Authorization
header from env; plus two failing sinks whose errors echo their URL (an HTTP server that is not
there, a PostgreSQL server refusing an option). No marker may appear in any output, nor in any
byte Dagster keeps under DAGSTER_HOME (run storage, event log and index databases, compute
logs), nor under ETL_ASSETS_HOME.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from etl_assets_testing.servers.fault_http import start_fault_server_process
from etl_assets_testing.servers.loopback import free_port
from etl_assets_tests.conftest import PgSchema, project_dagster_home
from etl_assets_tests.sample_tables import create_pg_readings

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def marker(form: str) -> str:
    return f"{form}{uuid.uuid4().hex[:12]}"


@pytest.fixture
def api_url() -> Iterator[str]:
    process, url = start_fault_server_process()
    yield url
    process.terminate()
    process.wait(timeout=10)


class User:
    """Runs the commands a user runs, with one environment; keeps everything they print."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.printed: list[str] = []

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(command, cwd=PROJECT, env=self.env, capture_output=True,
                              text=True, timeout=600)
        self.printed += [done.stdout, done.stderr]
        return done

    def execute(self, job: str, partition: str) -> subprocess.CompletedProcess[str]:
        return self.run(str(BIN / "dagster"), "job", "execute", "-m", "etl_assets.definitions",
                        "-j", job, "--tags", json.dumps({"dagster/partition": partition}))


def test_no_secret_form_reaches_output_or_dagster_storage(
        pg: PgSchema, api_url: str, tmp_path: Path) -> None:
    secrets = {form: marker(form) for form in
               ("userinfo", "query", "sslquery", "keywords", "token", "header", "deadtoken")}
    database = make_url(pg.url)
    source = create_pg_readings(pg, last=120)
    dagster_home, etl_home = project_dagster_home(tmp_path), tmp_path / "etl_home"
    closed = free_port()
    api = {"kind": "http", "method": "PUT", "retry_delay_s": 0.01,
           "transform": "etl_assets_tests.transforms_for_tests:reading_documents"}
    token = "access_token=${API_TOKEN}"

    def pipeline(source_name: str, prefix: str = "") -> dict:
        """PostgreSQL sinks through forms (1) (2) (3), an HTTP sink through (4) (5)."""
        pg_sinks = {f"{prefix}{form}": {
            "source": source_name, "kind": "postgres", "retries": 0, "table": pg.table(form),
            "connection": {"env": f"{prefix.upper()}{form.upper()}_URL"}}
            for form in ("userinfo", "query", "keywords")}
        return {**pg_sinks, f"{prefix}api": {
            **api, "source": source_name, "headers_from_env": {"Authorization": "API_AUTH"},
            "url": f"{api_url}/{'refused' if prefix else 'docs'}/{{id}}?x=1&{token}"}}

    spec = {
        "sources": {name: {"connection": {"env": "USERINFO_URL"}, "table": source,
                           "cursor": "updated_at", "primary_key": ["id"], "max_window": "1d"}
                    for name in ("readings", "readings_bad")},
        "sinks": {
            **pipeline("readings"),
            # the same secrets where connecting fails (the server refuses an option) or
            # sending does (a server that echoes the Authorization header, one that is gone)
            **pipeline("readings_bad", "bad_"),
            "bad_gone": {**api, "source": "readings_bad", "retries": 0,
                         "url": f"http://127.0.0.1:{closed}/docs/{{id}}?access_token="
                                f"${{DEAD_TOKEN}}"},
        },
    }
    spec_path = tmp_path / "pipelines.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    bad_option = "-cwork_mem=bogus"
    with_password = database.set(password=secrets["userinfo"])
    with_query = database.update_query_dict({"password": secrets["query"],
                                             "sslpassword": secrets["sslquery"]})
    keywords = (f"host={database.host} port={database.port or 5432} "
                f"dbname={database.database} user={database.username} "
                f"password='{secrets['keywords']} x'")  # quoted, with a space
    user = User({
        **{k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_PG_", "ETL_"))},
        "DAGSTER_HOME": str(dagster_home), "ETL_ASSETS_HOME": str(etl_home),
        "ETL_ASSETS_SPEC": str(spec_path), "PYTHONPATH": str(PROJECT),  # the transform
        "USERINFO_URL": with_password.render_as_string(False),  # (1): trust takes any password
        "QUERY_URL": with_query.render_as_string(False),  # (2)
        "KEYWORDS_URL": keywords,  # (3)
        "API_TOKEN": secrets["token"], "API_AUTH": f"Bearer {secrets['header']}",  # (4) (5)
        "DEAD_TOKEN": secrets["deadtoken"],
        "BAD_USERINFO_URL": with_password.update_query_dict(
            {"options": bad_option}).render_as_string(False),
        "BAD_QUERY_URL": with_query.update_query_dict(
            {"options": bad_option}).render_as_string(False),
        "BAD_KEYWORDS_URL": f"{keywords} options={bad_option}",
    })

    check = user.run(str(BIN / "etl-assets"), "check")
    assert check.returncode == 0, check.stderr
    added = user.run(str(BIN / "etl-assets"), "add-partitions", "readings")
    assert added.returncode == 0, added.stderr
    keys = added.stdout.split()
    assert keys
    for key in keys:
        good = user.execute("readings_job", key)
        assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    for form in ("userinfo", "query", "keywords"):
        assert pg.execute(f"SELECT count(*) FROM {pg.table(form)}") == [(120,)]
    with urllib.request.urlopen(f"{api_url}/_count", timeout=10) as answer:
        assert json.load(answer)["documents"] == 120

    added = user.run(str(BIN / "etl-assets"), "add-partitions", "readings_bad")
    bad = user.execute("readings_bad_job", added.stdout.split()[0])
    assert bad.returncode != 0

    status = user.run(str(BIN / "etl-assets"), "status")
    assert status.returncode == 1
    for form in ("userinfo", "query", "keywords"):
        assert f"sink {form}: 120 rows" in status.stdout
        assert f"sink bad_{form}: OperationalError" in status.stderr

    stored = [p for p in dagster_home.rglob("*") if p.is_file()]
    databases = {p.name for p in stored if p.suffix == ".db"}
    assert {"runs.db", "index.db"} <= databases and len(databases) >= 4  # + one per run
    assert [p for p in stored if p.parent.name == "compute_logs" and p.suffix == ".err"]
    everything = b"".join(p.read_bytes() for p in stored)
    everything += b"".join(p.read_bytes() for p in etl_home.rglob("*") if p.is_file())
    printed = "".join(user.printed)
    leaks = {(form, where) for form, value in secrets.items()
             for where, found in (("printed", value in printed),
                                  ("stored", value.encode() in everything)) if found}
    assert not leaks, sorted(leaks)
    # the failures echo the URLs and the server's answer, masked, and Dagster stored them
    said = bad.stdout + bad.stderr
    for echoed in (f"127.0.0.1:{closed}/docs/{{id}}?access_token=***",
                   "/refused/{id}?x=1&access_token=***", '"authorization": "***"',
                   "cannot connect to postgresql://postgres:***@",
                   "?options=-cwork_mem%3Dbogus&password=***&sslpassword=***", "password=*** options="):
        assert echoed in said, (echoed, said[-5000:])
        as_json = json.dumps(echoed)[1:-1]  # as the event log's JSON holds it
        assert echoed.encode() in everything or as_json.encode() in everything, echoed
