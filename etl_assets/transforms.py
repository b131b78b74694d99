"""Loading a sink's ``transform`` (``package.module:function``)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any


class TransformError(ImportError):
    """A transform reference that does not name a callable."""


def load_transform(reference: str, owner: str) -> Callable[..., Any]:
    """Import the function ``reference`` names; ``owner`` names the sink in errors."""
    module_name, _, attribute = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise TransformError(f"{owner}: transform {reference}: cannot import {module_name}: "
                             f"{exc}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise TransformError(f"{owner}: transform {reference}: {module_name} has no {part}")
        target = getattr(target, part)
    if not callable(target):
        raise TransformError(f"{owner}: transform {reference} is not callable")
    return target


def code_of(function: Callable[..., Any]) -> str:
    """The source text of ``function`` (its repr when the source is not available)."""
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return repr(function)
