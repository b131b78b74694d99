"""The bundled demo: a generated SQLite source of sensors and an embedded PostgreSQL target."""

from pathlib import Path

DEMO_SPEC = Path(__file__).with_name("demo.yaml")
