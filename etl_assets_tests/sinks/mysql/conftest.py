import pytest

from etl_assets_tests.sinks.mysql.mariadb import MariaDb


@pytest.fixture
def maria(mysql_url: str) -> MariaDb:
    """A fresh table name in the session's MariaDB database."""
    return MariaDb(mysql_url)
