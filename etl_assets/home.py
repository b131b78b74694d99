"""Where etl_assets keeps local state (staging, dead letters, the embedded database)."""

from __future__ import annotations

import os
import re
from pathlib import Path

HOME_ENV = "ETL_ASSETS_HOME"


def etl_home() -> Path:
    """``$ETL_ASSETS_HOME``, or ``~/.etl_assets`` when it is unset."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".etl_assets").absolute()


def expand_vars(value: str) -> str:
    """Replace ``${VAR}`` with the environment's value; ``${ETL_ASSETS_HOME}`` has a default.

    An unset variable is an error rather than an empty string, so a path never silently
    points at the filesystem root.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == HOME_ENV:
            return str(etl_home())
        if name not in os.environ:
            raise KeyError(f"environment variable {name} is not set (used in {value!r})")
        return os.environ[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", replace, value)


def expand_home(value: str) -> str:
    """``value`` with ``${ETL_ASSETS_HOME}`` replaced (by its default when unset); every other
    ``${VAR}`` is left as written. For text shown where the environment of a run is not the
    one at hand (asset descriptions): the home folder is no secret, another variable may be."""
    return value.replace("${" + HOME_ENV + "}", str(etl_home()))
