"""Paths and URLs as descriptions and metadata show them: never a secret, in any position."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl_assets.home import expand_home
from etl_assets.secrets import described_location, shown_location

SECRET = "sup3r-s3cret-value"


@pytest.fixture(autouse=True)
def variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUCKET", "lake-bucket")
    monkeypatch.setenv("API_TOKEN", SECRET)
    monkeypatch.setenv("DB_PASSWORD", SECRET)
    monkeypatch.setenv("SECRET_URL", f"https://user:{SECRET}@host/x")


@pytest.mark.parametrize(("template", "shown"), [
    ("s3://${BUCKET}/x", "s3://lake-bucket/x"),
    ("https://api/x?token=${API_TOKEN}&a=1", "https://api/x?token=***&a=1"),
    ("https://api/${API_TOKEN}/x", "https://api/${API_TOKEN}/x"),  # named like a secret: kept
    ("https://u:${DB_PASSWORD}@h/x", "https://***@h/x"),
    ("postgresql://u:${DB_PASSWORD}@h/db", "postgresql://u:***@h/db"),
    ("${SECRET_URL}", "https://***@host/x"),  # a plain name bringing a secret: masked after
    ("/data/${NOT_SET_HERE}/y", "/data/${NOT_SET_HERE}/y"),
])
def test_shown_location_resolves_plain_variables_and_never_shows_a_secret(
        template: str, shown: str) -> None:
    assert shown_location(template) == shown
    assert SECRET not in shown_location(template)


def test_shown_location_expands_the_home_folder(etl_home: Path) -> None:
    assert shown_location("${ETL_ASSETS_HOME}/lake") == f"{etl_home}/lake"


@pytest.mark.parametrize("template", [
    "s3://${BUCKET}/x", "https://api/x?token=${API_TOKEN}", "https://api/${API_TOKEN}/x",
    "https://u:${DB_PASSWORD}@h/x", "${SECRET_URL}"])
def test_described_location_resolves_nothing_but_the_home_folder(template: str) -> None:
    assert described_location(template) == template


def test_described_location_expands_the_home_folder_and_masks_a_literal_secret(
        etl_home: Path) -> None:
    assert described_location("${ETL_ASSETS_HOME}/lake/${BUCKET}") == f"{etl_home}/lake/${{BUCKET}}"
    assert described_location("https://u:literal-pw@h/x") == "https://***@h/x"
    assert expand_home("${ETL_ASSETS_HOME}/a/${BUCKET}") == f"{etl_home}/a/${{BUCKET}}"
