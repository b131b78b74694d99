"""The MySQL sink's error (its own module so the table machinery can raise it too)."""

from etl_assets.errors import DataError, EtlAssetsError


class MysqlSinkError(EtlAssetsError):
    """A batch or table that could not be written; the message names the table (and the
    column and row where a value is at fault)."""


class RefusedRows(MysqlSinkError, DataError):
    """A value the table refused (strict sql_mode); ``row`` is its row in the batch, when the
    server named it."""

    def __init__(self, message: str, row: int | None) -> None:
        super().__init__(message)
        self.row = row
