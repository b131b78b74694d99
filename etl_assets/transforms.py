"""Loading what a spec names by reference (``package.module:name``): transforms, tables."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from types import CodeType, FunctionType
from typing import Any, TypeGuard

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
    """The source text of ``function`` and of what it uses from its own module: the functions
    and classes it calls (and, transitively, those they call) and the constants it reads. So
    editing a helper of a transform changes the text; editing an unrelated function of the
    module does not. What comes from other modules (libraries) is not included. A callable
    object is given by its class's code (not its state), a builtin by its name."""
    target = inspect.unwrap(function)
    if inspect.isbuiltin(target):
        return f"{target.__module__}.{target.__qualname__}"
    if not (inspect.isfunction(target) or inspect.isclass(target)):
        target = type(target)
    module = inspect.getmodule(target)
    if module is None or not _defined_in(target, module.__name__):
        return f"{target.__module__}.{target.__qualname__}"
    texts: list[str] = []
    seen: set[int] = set()
    pending: list[FunctionType | type] = [target]
    while pending:
        item = pending.pop(0)
        if id(item) in seen:
            continue
        seen.add(id(item))
        texts.append(_source(item))
        for name in sorted(_global_names(item)):
            value = module.__dict__.get(name)
            value = inspect.unwrap(value) if callable(value) else value
            if _defined_in(value, module.__name__):
                pending.append(value)
            elif _is_constant(value):
                texts.append(f"{name} = {value!r}")
    return "\n".join(texts)


def _source(item: FunctionType | type) -> str:
    """``item``'s source text; without one (made by exec), its name and bytecode."""
    try:
        return inspect.getsource(item)
    except (OSError, TypeError):
        code = item.__code__.co_code.hex() if isinstance(item, FunctionType) else ""
        return f"{item.__qualname__} {code}"


def _defined_in(value: object, module_name: str) -> TypeGuard[FunctionType | type]:
    """True for a function or class defined in module ``module_name``."""
    return ((inspect.isfunction(value) or inspect.isclass(value))
            and getattr(value, "__module__", None) == module_name)


def _is_constant(value: object) -> bool:
    """A value whose repr is its content and the same in every process: None, a number, a
    string, bytes or a tuple of those (not a set: its order changes with the hash seed)."""
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return True
    return isinstance(value, tuple) and all(_is_constant(v) for v in value)


def _global_names(item: FunctionType | type) -> set[str]:
    """The names ``item``'s code loads (a superset of the globals it reads: attribute names
    are among them), through nested functions, lambdas and comprehensions; for a class, its
    methods' and its bases'."""
    if inspect.isclass(item):
        names = {base.__name__ for base in item.__bases__}
        for member in vars(item).values():
            for part in (member, getattr(member, "__func__", None),
                         getattr(member, "fget", None), getattr(member, "fset", None)):
                if inspect.isfunction(part):
                    names |= _global_names(part)
        return names
    return _code_names(inspect.unwrap(item).__code__)


def _code_names(code: CodeType) -> set[str]:
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            names |= _code_names(constant)
    return names
