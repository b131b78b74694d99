"""Print the requirements of the project and of the extras named, one a line, from pyproject.toml:
the Dockerfile installs them in a layer of their own, before it copies the code.

    python requirements.py pyproject.toml s3,gcs,celery,bigquery

An extra that pyproject.toml does not declare is an error (pip would only warn and leave it out).
"""

from __future__ import annotations

import sys
import tomllib


def requirements(pyproject: str, extras: list[str]) -> list[str]:
    with open(pyproject, "rb") as file:
        project = tomllib.load(file)["project"]
    declared = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in declared]
    if unknown:
        raise SystemExit(f"{pyproject}: no extra {', '.join(unknown)} "
                         f"(declared: {', '.join(sorted(declared))})")
    return [*project["dependencies"], *(r for extra in extras for r in declared[extra])]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    extras = [extra.strip() for extra in sys.argv[2].split(",") if extra.strip()]
    print("\n".join(requirements(sys.argv[1], extras)))
