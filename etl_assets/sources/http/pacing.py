"""``requests_per_second``: requests (retries included) started no closer together than
``1 / requests_per_second`` seconds."""

from __future__ import annotations

import asyncio


class Pace:
    """Spaces the starts of requests (``per_second`` None: no limit)."""

    def __init__(self, per_second: float | None) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        """Return when the next request may start."""
        if not self.interval:
            return
        loop = asyncio.get_running_loop()
        delay = self._next - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        self._next = max(self._next, loop.time()) + self.interval
