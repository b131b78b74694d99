"""``defs``: what ``dagster dev`` / ``dagster job execute -m etl_assets.definitions`` load, and
``dg`` (the code location of ``[tool.dg.project]`` in pyproject.toml)."""

from etl_assets.code_location import load_definitions

defs = load_definitions()
