"""The HTTP source's spec, its placeholders, JSON paths, flattening and Link headers: what is
decided without a server."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from etl_assets.errors import ConfigurationError
from etl_assets.sources.http.flatten import flattened
from etl_assets.sources.http.json_paths import PathMissing, at_path
from etl_assets.sources.http.pagination import (
    LinkHeaderPagination,
    NextTokenPagination,
    PageAnswer,
    PageRequest,
    PaginationError,
    next_link,
)
from etl_assets.sources.http.spec import HttpSourceSpec
from etl_assets.sources.http.templates import bound_values, iso_text, render
from etl_assets.sources.records import RecordsError
from etl_assets.spec import parse_spec
from etl_assets.watermark import Window

UTC = timezone.utc


def source(**fields: object) -> HttpSourceSpec:
    spec = {"kind": "http", "url": "https://api.example.com/items", "cursor": "updated_at",
            **fields}
    parsed = parse_spec({"sources": {"api": spec}, "sinks": {}})
    found = parsed.sources["api"]
    assert isinstance(found, HttpSourceSpec)
    return found


def refused(**fields: object) -> str:
    with pytest.raises(ConfigurationError) as caught:
        source(**fields)
    return str(caught.value)


def test_every_setting_reads_as_documented() -> None:
    spec = source(
        url="${API_BASE}/items.json",
        params={"updated_at__gt": "{lo}", "updated_at__lte": "{hi}", "_size": 50},
        params_from_env={"api_key": "API_KEY"}, records="data.items",
        pagination={"kind": "page", "size": 25}, headers={"Accept": "application/json"},
        headers_from_env={"Authorization": "API_TOKEN"}, requests_per_second=2.5,
        timeout_s=5, ca_file="/etc/ca.pem", flatten_depth=1,
        columns={"updated_at": "timestamp[us, tz=UTC]", "meta": "json"},
        latest={"path": "rows.0.updated_at", "params": {"_sort_desc": "updated_at"}},
        keep_raw=True, retries=2, retry_delay_s=0.1)
    assert spec.params == {"updated_at__gt": "{lo}", "updated_at__lte": "{hi}", "_size": "50"}
    assert spec.pagination.kind == "page"
    assert spec.pagination.parameters() == ["page", "per_page"]
    assert spec.latest is not None and spec.latest.url is None
    assert spec.describe() == "${API_BASE}/items.json"  # never resolved
    assert spec.asset_kinds() == {"http"}
    defaults = source()
    assert defaults.pagination.kind == "none" and defaults.records == ""
    assert defaults.flatten_depth == 0 and defaults.keep_raw is False


def test_secrets_are_refused_in_the_url_params_and_headers() -> None:
    assert "parameter api_key" in refused(url="https://api.example.com/x?api_key=${KEY}")
    assert "params_from_env" in refused(params={"token": "abc"})
    assert "headers_from_env" in refused(headers={"Authorization": "Bearer abc"})


def test_placeholders_are_checked() -> None:
    assert "{lo_date}" in refused(params={"since": "{lo_date}"})
    assert "timestamp cursors" in refused(params={"since": "{lo_epoch}"}, cursor_type="integer",
                                          latest={"path": "max"})
    assert "no placeholders" in refused(latest={"path": "max", "params": {"after": "{lo}"}})


def test_integer_cursor_needs_latest() -> None:
    assert "needs `latest`" in refused(cursor_type="integer")


def test_pagination_parameters_are_not_given_twice() -> None:
    assert "pagination offset sets" in refused(params={"limit": "10"},
                                               pagination={"kind": "offset"})
    assert "pagination next_token" in refused(params={"_next": "x"},
                                              pagination={"kind": "next_token"})


def test_bounds_as_iso_text_and_epoch() -> None:
    aware = Window(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 1, 0, 0, 1, 500, tzinfo=UTC))
    values = bound_values(aware)
    assert values["lo"] == "2024-03-01T00:00:00Z" and values["hi"] == "2024-03-01T00:00:01.000500Z"
    assert values["lo_epoch"] == "1709251200" and values["hi_epoch"] == "1709251202"  # hi rounds up
    assert values["lo_epoch_ms"] == "1709251200000" and values["hi_epoch_ms"] == "1709251201001"
    naive = bound_values(Window(datetime(2024, 3, 1), datetime(2024, 3, 2)))
    assert naive["lo"] == "2024-03-01T00:00:00" and naive["lo_epoch"] == "1709251200"  # as UTC
    integers = bound_values(Window(10, 20))
    assert render("id>{lo} and id<={hi}", integers) == "id>10 and id<=20"
    with pytest.raises(KeyError, match="timestamp cursors"):
        render("{lo_epoch}", integers)
    assert iso_text(datetime(2024, 3, 1, 2, tzinfo=timezone.utc)) == "2024-03-01T02:00:00Z"


def test_json_paths_say_where_they_stop() -> None:
    answer = {"data": {"items": [{"id": 1}]}, "rows": []}
    assert at_path(answer, "data.items.0.id") == 1
    assert at_path(answer, "data.items.-1") == {"id": 1}
    assert at_path(answer, "") is answer
    with pytest.raises(PathMissing, match=r"`data` has no key 'rows' \(keys: items\)") as missing:
        at_path(answer, "data.rows")
    assert not missing.value.empty
    with pytest.raises(PathMissing, match="a list of 0 item") as empty:
        at_path(answer, "rows.0.updated_at")
    assert empty.value.empty  # an empty answer, not a wrong path
    with pytest.raises(PathMissing, match="is int"):
        at_path(answer, "data.items.0.id.x")


def test_flattening_down_to_a_depth() -> None:
    record = {"id": 1, "a": {"b": 2, "c": {"d": 3}, "e": [1]}, "f": {}}
    assert flattened(record, 0) is record
    assert flattened(record, 1) == {"id": 1, "a.b": 2, "a.c": {"d": 3}, "a.e": [1]}
    assert flattened(record, 2) == {"id": 1, "a.b": 2, "a.c.d": 3, "a.e": [1]}
    with pytest.raises(RecordsError, match=r"'a\.b' is both"):
        flattened({"a.b": 1, "a": {"b": 2}}, 1, "here")


def test_link_headers_and_next_pages() -> None:
    assert next_link('<https://x/items?page=2>; rel="next", <https://x/items?page=9>; rel="last"') \
        == "https://x/items?page=2"
    assert next_link('<https://x/a>; rel="prev"') is None
    assert next_link(None) is None
    request = PageRequest("https://x/items", (("q", "1"),))
    link = LinkHeaderPagination(kind="link_header")
    following = link.following(request, PageAnswer({}, {"Link": '</items?page=2>; rel="next"'}, 5))
    assert following is not None and following.full_url == "https://x/items?page=2"
    with pytest.raises(PaginationError, match="another origin"):
        link.following(request, PageAnswer({}, {"Link": '<https://evil/x>; rel="next"'}, 5))
    token = NextTokenPagination(kind="next_token")
    second = token.following(request, PageAnswer({"next": "abc"}, {}, 5))
    assert second is not None and second.full_url == "https://x/items?q=1&_next=abc"
    assert token.following(second, PageAnswer({"next": None}, {}, 5)) is None
    with pytest.raises(PaginationError, match="never end"):
        token.following(second, PageAnswer({"next": "abc"}, {}, 5))


def test_a_bound_written_in_the_apis_own_format() -> None:
    from etl_assets.sources.http.templates import check_template

    window = Window(datetime(2024, 1, 1, tzinfo=timezone.utc),
                    datetime(2024, 1, 2, 5, 30, tzinfo=timezone.utc))
    template = "{lo:%Y-%m-%dT%H:%M:%S.%f+00:00}..{hi:%Y%m%d%H%M}"
    assert render(check_template(template), bound_values(window)) == \
        "2024-01-01T00:00:00.000000+00:00..202401020530"
    with pytest.raises(ValueError, match=r"a format is for \{lo\} and \{hi\} only"):
        check_template("{lo_epoch:%Y}")
    with pytest.raises(KeyError, match=r"a format is for timestamp cursors"):
        render("{lo:%Y}", bound_values(Window(0, 10)))
