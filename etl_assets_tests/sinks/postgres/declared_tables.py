"""SQLAlchemy tables that tests name in ``table_definition``."""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

readings = sa.Table(
    "readings", metadata,
    sa.Column("code", sa.String(8), primary_key=True),
    sa.Column("id", sa.BigInteger, nullable=False),
    sa.Column("amount", sa.Numeric(10, 2)),
    sa.Column("at", sa.DateTime(timezone=True)),
    sa.Column("doc", postgresql.JSONB),
    sa.Column("note", sa.Text),
)

not_a_table = "readings"
