"""Loading what a spec names by reference (``package.module:name``): transforms, tables."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from etl_assets.errors import ConfigurationError


class TransformError(ConfigurationError, ImportError):
    """A reference that does not name what it should (a callable, a table)."""


def import_reference(reference: str, owner: str, what: str = "transform") -> object:
    """The object ``reference`` names; ``owner`` names the sink and ``what`` the field."""
    module_name, _, attribute = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise TransformError(f"{owner}: {what} {reference}: cannot import {module_name}: "
                             f"{exc}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise TransformError(f"{owner}: {what} {reference}: {module_name} has no {part}")
        target = getattr(target, part)
    return target


def load_transform(reference: str, owner: str) -> Callable[..., Any]:
    """Import the function ``reference`` names; ``owner`` names the sink in errors."""
    target = import_reference(reference, owner)
    if not callable(target):
        raise TransformError(f"{owner}: transform {reference} is not callable")
    return target


def code_of(function: Callable[..., Any]) -> str:
    """The source text of ``function`` (its repr when the source is not available)."""
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return repr(function)
