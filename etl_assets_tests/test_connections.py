"""Connections: libpq keyword strings as PostgreSQL sources and sinks, and what a resource
gets from a spec's ``env`` or ``url`` (never a resolved secret)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from dagster import DagsterInstance
from sqlalchemy.engine import make_url

from etl_assets.connections import UnresolvedConnection, libpq_url, resolve_url
from etl_assets.factory import build_definitions
from etl_assets.settings import ConnectionSpec
from etl_assets.spec import parse_spec
from etl_assets.watermark import Window
from etl_assets_tests.conftest import PgSchema
from etl_assets_tests.sample_tables import create_pg_readings, rows_differing
from etl_assets_tests.test_factory import readings_spec, run_partition

UTC = timezone.utc
WHOLE = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, 2, tzinfo=UTC))


def keyword_string(url: str, password: str) -> str:
    parsed = make_url(url)
    return (f"host={parsed.host} port={parsed.port or 5432} dbname='{parsed.database}' "
            f"user={parsed.username} password='{password}' application_name='etl test'")


@pytest.mark.slow
def test_a_keyword_string_works_for_the_source_and_the_sink(
        pg: PgSchema, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SOURCE_URL", keyword_string(pg.url, "any thing"))
    monkeypatch.setenv("TEST_TARGET_URL", keyword_string(pg.url, "it\\'s trust"))
    source = create_pg_readings(pg, last=120)
    run_partition(build_definitions(parse_spec(readings_spec(pg, source))), instance, WHOLE)
    assert rows_differing(pg, source, pg.table("readings_copy")) == 0


def test_a_malformed_keyword_string_is_refused_without_showing_it() -> None:
    with pytest.raises(UnresolvedConnection) as error:
        libpq_url("host=h password=se cret-part", "sink 'x'")
    assert str(error.value).startswith("sink 'x': not a valid libpq keyword string")
    assert "cret" not in str(error.value)


def test_a_connection_is_an_env_var_or_a_url_without_secrets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELD_URL", "postgresql://u:pw@h/db")
    assert resolve_url(ConnectionSpec(env="HELD_URL"), "sink 'x'") == "postgresql://u:pw@h/db"
    monkeypatch.setenv("DB_HOST", "db.example")
    assert resolve_url(ConnectionSpec(url="postgresql://u@${DB_HOST}/db"),
                       "sink 'x'") == "postgresql://u@db.example/db"
    monkeypatch.delenv("HELD_URL")
    with pytest.raises(UnresolvedConnection, match=r"^sink 'x': environment variable HELD_URL is "
                                                   r"not set$"):
        resolve_url(ConnectionSpec(env="HELD_URL"), "sink 'x'")
    monkeypatch.setenv("HELD_URL", "postgresql://u:pw@h/db")
    with pytest.raises(UnresolvedConnection) as error:
        resolve_url(ConnectionSpec(url="${HELD_URL}"), "sink 'x'")
    assert str(error.value) == (
        "sink 'x': field 'connection.url' expands to a URL holding a secret (a password in "
        "the user info (user:password@)): put the whole URL in an environment variable and "
        "name it with `env` instead of `url`")
