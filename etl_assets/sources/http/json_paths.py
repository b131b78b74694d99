"""Dotted paths into a JSON answer: ``rows``, ``data.items``, ``rows.0.updated_at`` (a number
indexes a list, ``-1`` its last item); ``""`` is the answer itself. A key holding a dot
cannot be named."""

from __future__ import annotations

from typing import Any


class PathMissing(LookupError):
    """``path`` is not in the answer; the message says where it stops. ``empty``: it stops
    at a list too short (an empty answer, not a wrong path)."""

    def __init__(self, path: str, detail: str, empty: bool = False) -> None:
        super().__init__(f"no `{path}` in the answer: {detail}")
        self.path = path
        self.empty = empty


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return "null" if value is None else f"{type(value).__name__} {str(value)[:40]!r}"


def at_path(document: Any, path: str) -> Any:  # noqa: ANN401 -- parsed JSON in and out
    """The value at ``path`` in ``document``; :class:`PathMissing` when it is not there."""
    if not path:
        return document
    current = document
    walked: list[str] = []
    for part in path.split("."):
        where = "the answer" if not walked else f"`{'.'.join(walked)}`"
        if isinstance(current, dict):
            if part not in current:
                keys = ", ".join(list(current)[:12]) or "none"
                raise PathMissing(path, f"{where} has no key {part!r} (keys: {keys})")
            current = current[part]
        elif isinstance(current, list):
            try:
                index = int(part)
            except ValueError:
                raise PathMissing(path, f"{where} is a list; {part!r} is no index") from None
            if not -len(current) <= index < len(current):
                raise PathMissing(path, f"{where} is a list of {len(current)} item(s), no "
                                        f"index {index}", empty=True)
            current = current[index]
        else:
            raise PathMissing(path, f"{where} is {_kind(current)}, not an object or a list")
        walked.append(part)
    return current


def kind_of(value: object) -> str:
    """``an object``, ``a list``, ``null``, ``str '...'``: a JSON value in a message."""
    return _kind(value)
