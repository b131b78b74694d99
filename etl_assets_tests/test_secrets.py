"""Masking secrets in URLs, libpq keyword strings, free text and exceptions."""

from __future__ import annotations

import psycopg
import pytest

from etl_assets.secrets import (
    MaskedError,
    mask_parameters,
    mask_text,
    mask_url,
    masked_errors,
    remember_secret,
    secret_parts,
)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://postgres:pw@127.0.0.1:5432/db", "postgresql://postgres:***@127.0.0.1:5432/db"),
    ("postgresql://postgres@h/db?password=pw&sslpassword=spw&application_name=x",
     "postgresql://postgres@h/db?password=***&sslpassword=***&application_name=x"),
    ("postgresql+psycopg://u:p/a?s#s@h:5/db", "postgresql+psycopg://u:***@h:5/db"),
    ("mysql+pymysql://root@127.0.0.1:3306/db", "mysql+pymysql://root@127.0.0.1:3306/db"),
    ("https://tok@api.example/x?Access_Token=t&y=1#access_token=f",
     "https://***@api.example/x?Access_Token=***&y=1#access_token=***"),
    ("https://u:p@h/x?PWD=1&apikey=2&api_key=3&key=4&secret=5&token=6&refresh_token=7"
     "&client_secret=8&X-Amz-Signature=9&primary_key=10",
     "https://***@h/x?PWD=***&apikey=***&api_key=***&key=***&secret=***&token=***"
     "&refresh_token=***&client_secret=***&X-Amz-Signature=***&primary_key=10"),
    ("host=h port=5 password='a b\\' c' user=u sslpassword=x",
     "host=h port=5 password=*** user=u sslpassword=***"),
])
def test_urls_and_keyword_strings_keep_all_but_their_secrets(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_free_text_masks_urls_keywords_json_and_headers() -> None:
    text = ("connect to postgresql://u:pw1@h/db?password=pw2 failed; dsn was host=h "
            "password='pw 3' port=1; body {\"token\": \"pw4\", \"n\": 1}; "
            "sent Authorization: Bearer pw5, Cookie=pw6; {'api_key': 'pw7'}")
    shown = mask_text(text)
    assert not any(f"pw{i}" in shown for i in range(1, 8)), shown
    assert shown.startswith("connect to postgresql://u:***@h/db?password=*** failed; dsn "
                            "was host=h password=*** port=1; body {\"token\": ***, \"n\": 1}")


def test_names_a_spec_adds_and_values_read_from_env_are_masked_too() -> None:
    mask_parameters(["Sig2"])
    assert mask_url("https://h/x?sig2=abc&b=1") == "https://h/x?sig2=***&b=1"
    remember_secret("echoed-by-a-server")
    assert mask_text("the server said: echoed-by-a-server") == "the server said: ***"
    remember_secret("short")  # too short to be told from words: left to the patterns
    assert mask_text("short") == "short"


def test_secret_parts_name_what_holds_a_secret() -> None:
    assert secret_parts("postgresql://u@h/db") == []
    assert secret_parts("postgresql://u:${PW}@h/db") == [
        "a password in the user info (user:password@)"]
    assert secret_parts("postgresql://u@h/db?sslpassword=x&sig=y") == [
        "parameter sslpassword", "parameter sig"]
    assert secret_parts("host=h password=x") == ["keyword password"]
    assert secret_parts("https://h/x?token2=1", ["TOKEN2"]) == ["parameter token2"]


def test_errors_leave_masked_with_their_type_causes_and_contexts() -> None:
    with pytest.raises(psycopg.OperationalError) as raised, masked_errors():
        try:
            raise ValueError("inner postgresql://u:inner-pw@h/db")
        except ValueError as inner:
            raise psycopg.OperationalError("dsn host=h password=outer-pw") from inner
    error = raised.value
    assert str(error) == "dsn host=h password=***"
    assert str(error.__cause__) == "inner postgresql://u:***@h/db"


class _FormatsItself(Exception):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def __str__(self) -> str:
        return f"cannot open {self.url}"


def test_an_error_that_formats_itself_is_replaced_by_its_masked_text() -> None:
    with pytest.raises(MaskedError, match=r"^_FormatsItself: cannot open https://\*\*\*@h/$"), \
            masked_errors():
        raise _FormatsItself("https://user:pw@h/")
