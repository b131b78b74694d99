"""A window's bounds in an HTTP source's query parameters: ``{lo}``, ``{hi}`` (ISO 8601 text
for timestamps, ``2024-03-01T00:00:00Z`` when the bound is in UTC; plain integers for integer
cursors), ``{lo_epoch}``, ``{hi_epoch}`` (seconds since the epoch) and ``{lo_epoch_ms}``,
``{hi_epoch_ms}`` (milliseconds), for timestamps only; a naive bound is UTC.
``{lo:<strftime format>}`` writes a timestamp bound (in UTC) as the API's own text, e.g.
``{lo:%Y-%m-%dT%H:%M:%S.%f+00:00}`` for an API that compares stored ``+00:00`` text with the
bound as text (``Z`` sorts after ``.``: ``{lo}`` would leave out a row a fraction of a second
after ``lo``). Epoch values
round ``lo`` down and ``hi`` up: an answer may be wider than the window, never narrower (the
source keeps each window to its rows)."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone

from etl_assets.watermark import Bound, Window

BOUNDS = ("lo", "hi")
EPOCH = ("lo_epoch", "hi_epoch", "lo_epoch_ms", "hi_epoch_ms")
PLACEHOLDERS = (*BOUNDS, *EPOCH)
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]+))?\}")


def placeholders(template: str) -> set[str]:
    """The ``{name}`` placeholders of ``template``."""
    return {name for name, _format in _PLACEHOLDER.findall(template)}


def check_template(template: str) -> str:
    """``template`` when each of its placeholders is known; else a ValueError naming them."""
    formatted = sorted({n for n, f in _PLACEHOLDER.findall(template) if f and n not in BOUNDS})
    if formatted:
        raise ValueError(f"a format is for {{lo}} and {{hi}} only, not "
                         f"{', '.join('{' + f + '}' for f in formatted)}")
    unknown = sorted(placeholders(template) - set(PLACEHOLDERS))
    if unknown:
        raise ValueError(f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)} "
                         f"in {template!r}; known: "
                         f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    return template


def iso_text(value: datetime) -> str:
    """``value`` in ISO 8601: in UTC with ``Z`` when aware, as it is when naive; microseconds
    only when there are some."""
    if value.tzinfo is None:
        return value.isoformat()
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"


def _epoch(value: datetime, scale: int, up: bool) -> int:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    seconds = (aware - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds() * scale
    return math.ceil(seconds) if up else math.floor(seconds)


def bound_values(window: Window) -> dict[str, str | Bound]:
    """Each placeholder's text for ``window`` (the epoch ones only for timestamps), and the
    bounds themselves (``lo:``, ``hi:``) for formats."""
    values: dict[str, str | Bound] = {"lo:": window.lo, "hi:": window.hi}
    for name, bound, up in (("lo", window.lo, False), ("hi", window.hi, True)):
        values[name] = _text(bound)
        if isinstance(bound, datetime):
            values[f"{name}_epoch"] = str(_epoch(bound, 1, up))
            values[f"{name}_epoch_ms"] = str(_epoch(bound, 1000, up))
    return values


def _text(bound: Bound) -> str:
    return iso_text(bound) if isinstance(bound, datetime) else str(bound)


def render(template: str, values: dict[str, str | Bound]) -> str:
    """``template`` with its placeholders replaced by ``values``; a KeyError names one that
    has no value (an epoch placeholder with integer bounds)."""

    def replace(match: re.Match[str]) -> str:
        name, form = match.group(1), match.group(2)
        if form is not None:
            bound = values[f"{name}:"]
            if not isinstance(bound, datetime):
                raise KeyError(f"{{{name}:{form}}}: a format is for timestamp cursors")
            aware = bound if bound.tzinfo is not None else bound.replace(tzinfo=timezone.utc)
            return aware.astimezone(timezone.utc).strftime(form)
        if name not in values:
            raise KeyError(f"{{{name}}} has no value for integer bounds: it is for timestamp "
                           f"cursors")
        return str(values[name])

    return _PLACEHOLDER.sub(replace, template)
