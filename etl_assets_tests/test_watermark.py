import itertools
import re
from datetime import datetime, timedelta, timezone

import pytest

from etl_assets.sources.sql.spec import SqlSourceSpec
from etl_assets.watermark import (
    Window,
    WindowPolicy,
    decode_bound,
    encode_bound,
    parse_duration,
    plan_windows,
)

SAFE_KEY = re.compile(r"^[0-9A-Za-z:+._-]+$")
UTC = timezone.utc
DAY = timedelta(days=1)


def policy(**overrides: object) -> WindowPolicy:
    values: dict = dict(max_window=DAY, min_window=timedelta(0), lookback=timedelta(0),
                        max_delay=timedelta(hours=1))
    values.update(overrides)
    return WindowPolicy(**values)


@pytest.mark.parametrize("window", [
    Window(0, 50_000),
    Window(-10, 7),
    Window(datetime(2024, 1, 1), datetime(2024, 1, 2)),
    Window(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 0, 0, 0, 500, tzinfo=UTC)),
    Window(datetime(2023, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
           datetime(2024, 2, 29, 12, tzinfo=UTC)),
])
def test_window_key_round_trip(window: Window) -> None:
    key = window.key
    assert SAFE_KEY.match(key.replace("..", "")), key
    assert len(key) <= 50
    assert Window.from_key(key) == window


def test_aware_bounds_are_keyed_in_utc() -> None:
    cet = timezone(timedelta(hours=1))
    window = Window(datetime(2024, 1, 1, 1, tzinfo=cet), datetime(2024, 1, 1, 2, tzinfo=cet))
    assert window.key == "20240101T000000Z..20240101T010000Z"
    assert Window.from_key(window.key).lo == window.lo  # the same instant


def test_bad_keys_and_windows_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"not of the form lo\.\.hi"):
        Window.from_key("20240101")
    with pytest.raises(ValueError, match="neither an integer nor a timestamp"):
        decode_bound("yesterday")
    with pytest.raises(ValueError, match="lo < hi"):
        Window(5, 5)
    with pytest.raises(ValueError, match="lo < hi"):
        Window(1, datetime(2024, 1, 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_bound(True)


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("10m") == timedelta(minutes=10)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_duration("7d") == timedelta(days=7)


def test_empty_cursor_backfills_history_in_bounded_contiguous_windows() -> None:
    oldest, newest = datetime(2024, 1, 1, 0, 0), datetime(2024, 3, 10, 17, 30)
    plan = plan_windows(None, oldest, newest, policy(max_window=7 * DAY))
    windows = plan.windows
    assert len(windows) == 11  # 70.7 days from 2023-12-31 in 7-day windows
    assert windows[0].lo < oldest <= windows[0].hi  # the oldest row is in the first window
    assert windows[-1].hi == newest
    assert all(w.hi - w.lo <= 7 * DAY for w in windows)
    assert all(a.hi == b.lo for a, b in itertools.pairwise(windows))
    assert windows[0].lo == datetime(2023, 12, 31)  # rounded: readable keys


def test_integer_cursor_windows() -> None:
    plan = plan_windows(None, 1, 2_500, policy(max_window=1_000, min_window=0, lookback=0))
    assert [w.key for w in plan.windows] == ["0..1000", "1000..2000", "2000..2500"]
    plan = plan_windows(2_500, 1, 2_600, policy(max_window=1_000, min_window=0, lookback=50))
    assert [w.key for w in plan.windows] == ["2450..2600"]


def test_new_rows_make_a_window_that_overlaps_by_the_lookback() -> None:
    hi = datetime(2024, 1, 3, 5, tzinfo=UTC)
    plan = plan_windows(hi, None, hi + timedelta(minutes=30), policy(lookback=timedelta(minutes=10)))
    assert plan.windows == [Window(hi - timedelta(minutes=10), hi + timedelta(minutes=30))]


def test_nothing_new_gives_no_window() -> None:
    hi = datetime(2024, 1, 3, 5, tzinfo=UTC)
    plan = plan_windows(hi, None, hi, policy())
    assert plan.windows == []
    assert "no rows after the high watermark" in plan.reason
    assert plan_windows(None, None, None, policy()).windows == []


def test_min_window_waits_until_wide_enough_or_max_delay() -> None:
    hi = datetime(2024, 1, 3, 5)
    busy = policy(min_window=timedelta(minutes=15), max_delay=timedelta(hours=1))
    newest = hi + timedelta(minutes=5)
    assert plan_windows(hi, None, newest, busy, since_last_cut=timedelta(minutes=1)).windows == []
    assert plan_windows(hi, None, hi + timedelta(minutes=15), busy,
                        since_last_cut=timedelta(minutes=1)).windows
    # a quiet source is not starved: after max_delay even a narrow window is cut
    assert plan_windows(hi, None, newest, busy, since_last_cut=timedelta(hours=2)).windows


def test_busy_source_partition_count_is_bounded() -> None:
    """A tick every minute on a source with new rows every second: at most one window per
    min_window of data."""
    busy = policy(min_window=timedelta(minutes=15), max_delay=timedelta(hours=1))
    hi = datetime(2024, 1, 1)
    cut_at = datetime(2024, 1, 1)
    windows = 0
    for minute in range(1, 24 * 60 + 1):
        now = datetime(2024, 1, 1) + timedelta(minutes=minute)
        plan = plan_windows(hi, None, now, busy, since_last_cut=now - cut_at)
        if plan.windows:
            windows += len(plan.windows)
            hi, cut_at = plan.high_watermark, now
    assert windows == 24 * 60 // 15


def test_policy_from_spec_checks_units() -> None:
    spec = SqlSourceSpec(connection={"url": "sqlite://"}, table="t", cursor="c", lookback="10m",
                      max_window="6h", min_window="1m")
    got = WindowPolicy.from_spec(spec, "timestamp")
    assert (got.lookback, got.max_window, got.min_window) == (
        timedelta(minutes=10), timedelta(hours=6), timedelta(minutes=1))
    with pytest.raises(ValueError, match="give an integer for an integer cursor"):
        WindowPolicy.from_spec(spec, "integer")
    ints = SqlSourceSpec(connection={"url": "sqlite://"}, table="t", cursor="c", lookback=100)
    assert WindowPolicy.from_spec(ints, "integer").max_window == 1_000_000
    with pytest.raises(ValueError, match="give a duration"):
        WindowPolicy.from_spec(ints, "timestamp")
