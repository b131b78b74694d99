"""GETs of an HTTP source: one aiohttp session for one extraction of a window (or one sensor
tick), on an event loop of its own so that the synchronous reader of the window asks for one
page at a time. The session and each attempt are those of the HTTP sink
(:class:`~etl_assets.sinks.http.client.HttpClient`); retries follow the source's one policy
(``RetryPolicy.call_async``): connection errors, timeouts, 5xx and 429, Retry-After honoured,
each retry a warning in the log. What still fails, and any other error status, fails the
window on one line naming the URL (masked) and the status: the window is not read again from
its beginning, its pages have had their retries."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from etl_assets.errors import EtlAssetsError
from etl_assets.logs import Log
from etl_assets.retries import RetryPolicy
from etl_assets.secrets import mask_text, mask_url
from etl_assets.sinks.http.client import Answer, HttpClient
from etl_assets.sources.http.pacing import Pace

_SHOWN_BODY = 200  # characters of an error answer shown in the message


class HttpSourceError(EtlAssetsError):
    """A page the API refused or that cannot be read (terminal: its retries are spent); the
    message names the source, the URL (masked) and the status or the cause."""


def _reason(answer: Answer) -> str:
    if answer.status is None:
        return mask_text(answer.text)
    return f"HTTP {answer.status}"


def _body(answer: Answer) -> str:
    text = " ".join(answer.text.split())
    if not text:
        return ""
    shown = text[:_SHOWN_BODY] + ("..." if len(text) > _SHOWN_BODY else "")
    return f": {mask_text(shown)}"


class PageClient:
    """GETs JSON pages on one session; ``with`` it (or ``close()``) to release it. ``what``
    names the source (and window) in messages."""

    def __init__(self, what: str, policy: RetryPolicy, headers: dict[str, str],
                 timeout_s: float, ca_file: str | None = None,
                 requests_per_second: float | None = None, log: Log | None = None) -> None:
        self.what = what
        self.policy = policy
        self.log = log
        self.requests = 0
        self.retried = 0
        self._pace = Pace(requests_per_second)
        self._loop = asyncio.new_event_loop()
        self._client = HttpClient(1, timeout_s, headers, policy, ca_file=ca_file)
        try:
            self._loop.run_until_complete(self._client.__aenter__())
        except BaseException:
            self._loop.close()
            raise

    def __enter__(self) -> PageClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the session and its event loop (again: nothing)."""
        if self._loop.is_closed():
            return
        try:
            self._loop.run_until_complete(self._client.__aexit__(None, None, None))
        finally:
            self._loop.close()

    def get(self, url: str) -> Answer:
        """The answer to ``GET url`` with a 2xx status, after retries; else
        :class:`HttpSourceError`."""
        answer = self._loop.run_until_complete(self._get(url))
        if answer.status is not None and 200 <= answer.status < 300:
            return answer
        shown = f"{self.what}: GET {mask_url(url)}: {_reason(answer)}{_body(answer)}"
        if answer.retryable:
            attempts = self.policy.retries + 1
            shown += f" (gave up after {attempts} attempt{'s' if attempts > 1 else ''})"
        raise HttpSourceError(shown)

    def get_json(self, url: str) -> tuple[Any, Answer]:
        """The parsed JSON of ``GET url`` and the answer it came in."""
        answer = self.get(url)
        try:
            return json.loads(answer.text), answer
        except ValueError as exc:
            raise HttpSourceError(f"{self.what}: GET {mask_url(url)}: the answer is not JSON "
                                  f"({exc}){_body(answer)}") from None

    async def _get(self, url: str) -> Answer:
        assert self._client.session is not None

        async def attempt() -> Answer:
            await self._pace.wait()
            self.requests += 1
            return await self._client.send_once("GET", url, None, None)

        retries = 0

        def warn(answer: Answer, wait_s: float) -> None:
            nonlocal retries
            retries += 1
            self.retried += 1
            if self.log is not None:
                self.log.warning(f"{self.what}: GET {mask_url(url)}: {_reason(answer)}; "
                                 f"attempt {retries + 1} of {self.policy.retries + 1} in "
                                 f"{wait_s:.1f} s")

        return await self.policy.call_async(attempt, should_retry=lambda a: a.retryable,
                                            retry_after_s=lambda a: a.retry_after_s,
                                            on_retry=warn)
