"""The demo's source database: sensors with a code, a description and a date_updated."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from etl_assets.connections import resolve_url, sqlalchemy_url
from etl_assets.sources.sql.spec import SqlSourceSpec
from etl_assets.spec import PipelineSpec

SITES = ["Keyworth", "Edinburgh", "Wallingford", "Cardiff", "Belfast", "Lyell Centre"]
KINDS = ["piezometer", "rain gauge", "thermistor", "tiltmeter", "seismometer"]


def sensors_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "sensors", metadata,
        sa.Column("code", sa.String(16), primary_key=True),
        sa.Column("description", sa.String(200)),
        sa.Column("date_updated", sa.DateTime, nullable=False, index=True),
    )


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def create_sample_source(url: str, rows: int = 10_000, days: int = 30, seed: int = 42) -> None:
    """Create the ``sensors`` table at ``url`` with ``rows`` rows updated over ``days``."""
    rng = random.Random(seed)
    engine = sa.create_engine(sqlalchemy_url(url))
    metadata = sa.MetaData()
    table = sensors_table(metadata)
    metadata.create_all(engine)
    now = _now()
    with engine.begin() as conn:
        conn.execute(table.insert(), [
            {"code": f"SEN-{i:05d}",
             "description": f"{rng.choice(KINDS)} at {rng.choice(SITES)}",
             "date_updated": now - timedelta(seconds=rng.randrange(days * 86_400))}
            for i in range(1, rows + 1)
        ])
    engine.dispose()


def add_sample_changes(url: str, updated: int = 20, new: int = 5) -> int:
    """Touch ``updated`` existing sensors and add ``new`` ones; returns rows changed."""
    engine = sa.create_engine(sqlalchemy_url(url))
    table = sensors_table(sa.MetaData())
    now = _now()
    with engine.begin() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        codes = conn.execute(sa.select(table.c.code).order_by(sa.func.random())
                             .limit(updated)).scalars().all()
        for code in codes:
            conn.execute(table.update().where(table.c.code == code).values(
                description=f"recalibrated {now:%Y-%m-%d %H:%M}", date_updated=now))
        conn.execute(table.insert(), [
            {"code": f"SEN-{count + i:05d}", "description": "new sensor", "date_updated": now}
            for i in range(1, new + 1)
        ])
    engine.dispose()
    return len(codes) + new


def ensure_demo_source(spec: PipelineSpec) -> None:
    """Generate the demo's SQLite source database unless it exists."""
    for name, source in spec.sources.items():
        if not isinstance(source, SqlSourceSpec):
            continue
        url = resolve_url(source.connection, f"source {name!r}")
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite" or not parsed.database:
            continue
        path = Path(parsed.database)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        create_sample_source(url)
