"""Named locks (``GET_LOCK``) the MySQL sink serializes its runs with: DDL of a table, its
watermark, a delete-all replacement's builder. A named lock belongs to its session: a run
killed or cut off releases it."""

from __future__ import annotations

import hashlib

from etl_assets.errors import TransientError
from etl_assets.sinks.mysql.table import Cursor

LOCK_WAIT_S = 60
"""Seconds a run waits for another run's lock before the attempt fails (and is retried)."""


def named_lock(purpose: str, database: str, name: str) -> str:
    """A lock name (at most 64 characters) for ``purpose`` on ``database.name``."""
    digest = hashlib.sha1(f"{database}.{name}".encode()).hexdigest()[:32]
    return f"etl_assets.{purpose[:16]}:{digest}"


def take_lock(cur: Cursor, lock: str, what: str, wait_s: float = LOCK_WAIT_S) -> None:
    """Take ``lock``, waiting up to ``wait_s``; a TransientError (retried) after that."""
    cur.execute("SELECT GET_LOCK(%s, %s)", (lock, wait_s))
    row = cur.fetchone()
    if not row or row[0] != 1:
        raise TransientError(f"{what}: another run held the lock for more than {wait_s:g} s")


def release_lock(cur: Cursor, lock: str) -> None:
    cur.execute("SELECT RELEASE_LOCK(%s)", (lock,))
