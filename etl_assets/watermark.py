"""Windows of a cursor column and the partition keys that name them.

A partition is an immutable window ``(lo, hi]`` of a source's cursor column, a timestamp or
an integer. Its key is short and safe (``[0-9A-Za-z:+._-]`` and ``..``), sorts in time order
for keys of one shape, and converts back to the same window.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

from etl_assets.settings import DURATION_PATTERN, Step

Bound = datetime | int
"""A cursor value: an integer id or a timestamp (naive, or aware in any zone)."""

Size = timedelta | int
"""A distance between cursor values: a timedelta for timestamps, an int for ids."""

KEY_SEPARATOR = ".."
_TS_KEY = re.compile(r"^(\d{8}T\d{6})(?:\.(\d{1,6}))?(Z?)$")
_UNITS = {"us": timedelta(microseconds=1), "ms": timedelta(milliseconds=1),
          "s": timedelta(seconds=1), "m": timedelta(minutes=1), "h": timedelta(hours=1),
          "d": timedelta(days=1), "w": timedelta(weeks=1)}

DEFAULT_MAX_WINDOW: dict[str, Size] = {"timestamp": timedelta(days=1), "integer": 1_000_000}


# Arithmetic on cursor values: a timestamp goes with a timedelta, an id with an int. Mixing
# kinds raises TypeError, as the operators themselves would.

def before(a: Bound, b: Bound) -> bool:
    """``a < b`` for two cursor values of one kind."""
    if isinstance(a, datetime) and isinstance(b, datetime):
        return a < b
    if isinstance(a, int) and isinstance(b, int):
        return a < b
    raise TypeError(f"cannot compare cursor values {a!r} and {b!r}")


def distance(lo: Bound, hi: Bound) -> Size:
    """``hi - lo`` for two cursor values of one kind."""
    if isinstance(lo, datetime) and isinstance(hi, datetime):
        return hi - lo
    if isinstance(lo, int) and isinstance(hi, int):
        return hi - lo
    raise TypeError(f"cannot subtract cursor value {lo!r} from {hi!r}")


def shifted(value: Bound, step: Size, times: int = 1) -> Bound:
    """``value + step * times`` (``times`` < 0: back), for a step of ``value``'s kind."""
    if isinstance(value, datetime) and isinstance(step, timedelta):
        return value + step * times
    if isinstance(value, int) and isinstance(step, int):
        return value + step * times
    raise TypeError(f"cannot move cursor value {value!r} by {step!r}")


def narrower(a: Size, b: Size) -> bool:
    """``a < b`` for two sizes of one kind."""
    if isinstance(a, timedelta) and isinstance(b, timedelta):
        return a < b
    if isinstance(a, int) and isinstance(b, int):
        return a < b
    raise TypeError(f"cannot compare sizes {a!r} and {b!r}")


def _steps(size: Size, step: Size) -> float:
    """``size / step`` for two sizes of one kind."""
    if isinstance(size, timedelta) and isinstance(step, timedelta):
        return size / step
    if isinstance(size, int) and isinstance(step, int):
        return size / step
    raise TypeError(f"cannot divide size {size!r} by {step!r}")


def parse_duration(text: str) -> timedelta:
    """``"90s"``, ``"10m"``, ``"6h"``, ``"7d"`` -> timedelta."""
    match = DURATION_PATTERN.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 10m, 6h, 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def encode_bound(value: Bound) -> str:
    """A cursor value as a key part: ``12345`` or ``20240131T235959[.5][Z]`` (Z = UTC)."""
    if isinstance(value, bool):
        raise TypeError("a cursor value is an int or a datetime, not a bool")
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, datetime):
        raise TypeError(f"a cursor value is an int or a datetime, not {type(value).__name__}")
    suffix = ""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc)
        suffix = "Z"
    text = value.strftime("%Y%m%dT%H%M%S")
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    return text + suffix


def decode_bound(text: str) -> Bound:
    """Inverse of :func:`encode_bound`."""
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    match = _TS_KEY.match(text)
    if not match:
        raise ValueError(f"{text!r} is neither an integer nor a timestamp like 20240131T235959Z")
    value = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S")
    if match.group(2):
        value = value.replace(microsecond=int(match.group(2).ljust(6, "0")))
    if match.group(3):
        value = value.replace(tzinfo=timezone.utc)
    return value


def partitions_name(source_name: str) -> str:
    """The name of the dynamic partitions (one per window) of source ``source_name``."""
    return f"{source_name}_windows"


@dataclass(frozen=True, order=True)
class Window:
    """Rows with ``lo < cursor <= hi``."""

    lo: Bound
    hi: Bound

    def __post_init__(self) -> None:
        if type(self.lo) is not type(self.hi) or not before(self.lo, self.hi):
            raise ValueError(f"a window needs lo < hi of one type, got ({self.lo!r}, {self.hi!r}]")

    @property
    def key(self) -> str:
        return f"{encode_bound(self.lo)}{KEY_SEPARATOR}{encode_bound(self.hi)}"

    @classmethod
    def from_key(cls, key: str) -> Window:
        lo, sep, hi = key.partition(KEY_SEPARATOR)
        if not sep:
            raise ValueError(f"partition key {key!r} is not of the form lo..hi")
        return cls(decode_bound(lo), decode_bound(hi))

    @classmethod
    def of_partition(cls, key: str | None) -> Window | None:
        """The window a partition key names; None for no partition or a key added by hand
        that is no window."""
        if key is None:
            return None
        try:
            return cls.from_key(key)
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"({self.lo}, {self.hi}]"


class WindowSettings(Protocol):
    """A source spec's settings that cut windows (see ``SourceSpecBase``)."""

    @property
    def lookback(self) -> Step: ...
    @property
    def min_window(self) -> Step: ...
    @property
    def max_delay(self) -> str: ...
    @property
    def max_window(self) -> Step | None: ...
    @property
    def start(self) -> str | int | None: ...


@dataclass(frozen=True)
class WindowPolicy:
    """How a source's new rows are cut into windows.

    ``max_window`` bounds a window's width (an empty cursor backfills in pieces this wide);
    a window narrower than ``min_window`` waits until ``max_delay`` has passed since the last
    cut, which bounds the partition count on a busy source; each new window starts
    ``lookback`` before the last one ended, to catch rows that arrive late.
    """

    max_window: Size
    min_window: Size
    lookback: Size
    max_delay: timedelta
    start: Bound | None = None

    @classmethod
    def from_spec(cls, spec: WindowSettings, cursor_type: str) -> WindowPolicy:
        def size(step: Step | None, default: Size) -> Size:
            if step is None:
                return default
            if cursor_type == "timestamp":
                if isinstance(step, int):
                    if step == 0:
                        return timedelta(0)
                    raise ValueError(
                        f"give a duration like '10m' for a timestamp cursor, not {step}")
                return parse_duration(step)
            if isinstance(step, str):
                raise ValueError(f"give an integer for an integer cursor, not {step!r}")
            return step

        zero: Size = timedelta(0) if cursor_type == "timestamp" else 0
        start: Bound | None = None
        if spec.start is not None:
            if cursor_type == "integer":
                start = int(spec.start)
            else:
                start = datetime.fromisoformat(str(spec.start))
        policy = cls(
            max_window=size(spec.max_window, DEFAULT_MAX_WINDOW[cursor_type]),
            min_window=size(spec.min_window, zero),
            lookback=size(spec.lookback, zero),
            max_delay=parse_duration(spec.max_delay),
            start=start,
        )
        if not narrower(zero, policy.max_window):
            raise ValueError("max_window must be greater than zero")
        if narrower(policy.max_window, policy.min_window):
            raise ValueError("min_window is wider than max_window")
        return policy


def _floor(value: Bound, step: Size) -> Bound:
    """``value`` rounded down to a multiple of ``step`` (timestamps: to a calendar unit)."""
    if isinstance(value, int):
        assert isinstance(step, int)
        return (value // step) * step
    assert isinstance(step, timedelta)
    if step >= timedelta(days=1):
        return value.replace(hour=0, minute=0, second=0, microsecond=0)
    if step >= timedelta(hours=1):
        return value.replace(minute=0, second=0, microsecond=0)
    if step >= timedelta(minutes=1):
        return value.replace(second=0, microsecond=0)
    if step >= timedelta(seconds=1):
        return value.replace(microsecond=0)
    return value


def first_lo(oldest: Bound, policy: WindowPolicy) -> Bound:
    """Exclusive lower bound of the first window: just below ``oldest``, on a round value."""
    if policy.start is not None:
        return _coerce_like(policy.start, oldest)
    one: Size = 1 if isinstance(oldest, int) else timedelta(microseconds=1)
    if isinstance(oldest, datetime) and oldest.tzinfo is not None:
        oldest = oldest.astimezone(timezone.utc)  # round in UTC, where keys are written
    return _floor(shifted(oldest, one, -1), policy.max_window)


def _coerce_like(value: Bound, like: Bound) -> Bound:
    """``value`` with ``like``'s awareness, so the two compare (naive starts are UTC)."""
    if isinstance(value, datetime) and isinstance(like, datetime):
        if like.tzinfo and not value.tzinfo:
            return value.replace(tzinfo=timezone.utc)
        if value.tzinfo and not like.tzinfo:
            return value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def split(lo: Bound, hi: Bound, max_window: Size) -> list[Window]:
    """``(lo, hi]`` cut into consecutive windows no wider than ``max_window``."""
    windows = []
    count = math.ceil(_steps(distance(lo, hi), max_window))
    for i in range(count):
        upper = shifted(lo, max_window, i + 1)
        windows.append(Window(shifted(lo, max_window, i), upper if before(upper, hi) else hi))
    return windows


@dataclass(frozen=True)
class Plan:
    """What a sensor tick decided: the new windows, or why there are none."""

    windows: Sequence[Window]
    reason: str

    @property
    def high_watermark(self) -> Bound | None:
        return self.windows[-1].hi if self.windows else None


def plan_windows(
    requested_hi: Bound | None,
    oldest: Bound | None,
    newest: Bound | None,
    policy: WindowPolicy,
    since_last_cut: timedelta | None = None,
) -> Plan:
    """The windows to create now.

    ``requested_hi`` is the high watermark already requested (None: nothing yet);
    ``oldest``/``newest`` are the source's min and max cursor values (None: empty source);
    ``since_last_cut`` is the wall-clock time since the last window was cut.
    """
    if newest is None:
        return Plan([], "the source has no rows")
    if requested_hi is None:
        lo = first_lo(oldest if oldest is not None else newest, policy)
        if not before(lo, newest):
            return Plan([], f"no rows after the start {encode_bound(lo)}")
        return Plan(split(lo, newest, policy.max_window), "first windows (backfill)")
    requested_hi = _coerce_like(requested_hi, newest)
    if not before(requested_hi, newest):
        return Plan([], f"no rows after the high watermark {encode_bound(requested_hi)}")
    waited = since_last_cut is not None and since_last_cut >= policy.max_delay
    if narrower(distance(requested_hi, newest), policy.min_window) and not waited:
        return Plan([], f"new rows up to {encode_bound(newest)} make a window narrower than "
                        f"min_window; waiting up to max_delay")
    lo = shifted(requested_hi, policy.lookback, -1)
    return Plan(split(lo, newest, policy.max_window), "new rows")
