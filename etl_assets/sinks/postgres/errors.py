"""The PostgreSQL sink's error (its own module so the table machinery can raise it too)."""

from etl_assets.errors import EtlAssetsError


class PostgresSinkError(EtlAssetsError):
    """A batch that could not be written; the message names the table, column and row."""
