"""RetryPolicy.call_async: the async form of the one retry policy (HTTP answers)."""

from __future__ import annotations

import asyncio
import time

from etl_assets.retries import RetryPolicy


def test_results_are_retried_until_one_is_good_honouring_retry_after() -> None:
    answers = iter([(503, None), (429, 0.2), (200, None), (500, None)])
    waits: list[float] = []

    async def attempt() -> tuple[int, float | None]:
        return next(answers)

    began = time.monotonic()
    result = asyncio.run(RetryPolicy(retries=5, delay_s=0.001, max_delay_s=0.1).call_async(
        attempt, should_retry=lambda a: a[0] >= 500 or a[0] == 429,
        retry_after_s=lambda a: a[1], on_retry=lambda _a, wait: waits.append(wait)))
    assert result == (200, None)
    assert len(waits) == 2 and waits[0] <= 0.001 < 0.2 <= waits[1]  # Retry-After (capped at 4 x 0.1 s) wins
    assert time.monotonic() - began >= 0.2
    assert next(answers) == (500, None)  # not called after the good answer


def test_the_last_result_is_returned_when_no_retry_is_left() -> None:
    calls = 0

    async def attempt() -> int:
        nonlocal calls
        calls += 1
        return 503

    result = asyncio.run(RetryPolicy(retries=2, delay_s=0, max_delay_s=0).call_async(
        attempt, should_retry=lambda status: status == 503))
    assert (result, calls) == (503, 3)
