"""code_of: the text a transform's code version is made from."""

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from etl_assets.transforms import code_of

MODULE = '''
import pyarrow as pa

FACTOR = {factor}
NAMES = ("a", "b")


def clean(batch):
    return pa.RecordBatch.from_pylist([scaled(row) for row in batch.to_pylist()])


def scaled(row):
    return {{key: value * FACTOR for key, value in row.items() if Checker().ok(key)}}


class Checker:
    def ok(self, key):
        return {check}


def unrelated(batch):
    return {unrelated}
'''


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a module (a fresh name each time) from MODULE and import it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(factor: int = 2, check: str = "key in NAMES", unrelated: str = "batch"):
        name = f"transform_module_{len(written)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE.format(
            factor=factor, check=check, unrelated=unrelated)))
        written.append(name)
        return importlib.import_module(name)

    yield write
    for name in written:
        sys.modules.pop(name, None)


def test_the_code_holds_the_helpers_the_transform_calls(write_module) -> None:
    code = code_of(write_module().clean)
    for part in ("def clean(", "def scaled(", "class Checker:", "FACTOR = 2",
                 "NAMES = ('a', 'b')"):
        assert part in code
    assert "def unrelated(" not in code


def test_editing_a_helper_changes_the_code(write_module) -> None:
    base = code_of(write_module().clean)
    assert code_of(write_module(check="key not in NAMES").clean) != base  # a class's method
    assert code_of(write_module(factor=3).clean) != base  # a constant


def test_editing_an_unrelated_function_keeps_the_code(write_module) -> None:
    base = code_of(write_module().clean)
    assert code_of(write_module(unrelated="None").clean) == base


def test_a_builtin_is_named() -> None:
    assert code_of(abs) == "builtins.abs"
