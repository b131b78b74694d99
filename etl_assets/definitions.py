"""``defs``: what ``dagster dev`` / ``dagster job execute -m etl_assets.definitions`` load."""

from etl_assets.code_location import load_definitions

defs = load_definitions()
