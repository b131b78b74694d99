"""One long-lived aiohttp session that sends requests with a bounded number in flight and
retries what is worth retrying: connection errors, timeouts, 5xx and 429 (honouring
Retry-After), by the shared policy (:mod:`etl_assets.retries`)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from etl_assets.retries import RETRYABLE_HTTP_STATUS, RetryPolicy


@dataclass(frozen=True)
class Answer:
    """What the server said: ``status`` (None: no answer), its body as text and its headers
    (case-insensitive; empty without an answer)."""

    status: int | None
    text: str
    retry_after_s: float | None = None
    fatal: bool = False  # e.g. a certificate that is not trusted: retrying will not help
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def retryable(self) -> bool:
        return not self.fatal and (self.status is None or self.status in RETRYABLE_HTTP_STATUS)


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class HttpClient:
    """Sends requests on one session; ``concurrency`` bounds the connections (and so the
    requests in flight). ``ca_file``: trust this CA bundle; TLS is always verified."""

    def __init__(self, concurrency: int, timeout_s: float, headers: dict[str, str],
                 policy: RetryPolicy, ca_file: str | None = None) -> None:
        self._content_types: dict[str, dict[str, str]] = {}
        self.concurrency = concurrency
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.headers = headers
        self.policy = policy
        self.ca_file = ca_file
        self.session: aiohttp.ClientSession | None = None
        self.retried = 0

    async def __aenter__(self) -> HttpClient:
        context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
        connector = aiohttp.TCPConnector(limit=self.concurrency, ssl=context)
        self.session = aiohttp.ClientSession(connector=connector, timeout=self.timeout,
                                             headers=self.headers)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def send_once(self, method: str, url: str, body: bytes | None,
                        content_type: str | None) -> Answer:
        """One attempt (``body`` None: a request without one, such as a GET); connection
        errors and timeouts are an answer without a status."""
        assert self.session is not None
        try:
            headers = None if content_type is None else \
                self._content_types.setdefault(content_type, {"Content-Type": content_type})
            async with self.session.request(method, url, data=body,
                                            headers=headers) as response:
                # read() + decode: text() guesses the charset (~20 us an answer)
                text = (await response.read()).decode("utf-8", errors="replace")
                return Answer(response.status, text,
                              retry_after_seconds(response.headers.get("Retry-After")),
                              headers=response.headers)
        except aiohttp.ClientSSLError as exc:
            return Answer(None, f"TLS: {exc}", fatal=True)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return Answer(None, f"{type(exc).__name__}: {exc}")

    async def send(self, method: str, url: str, body: bytes, content_type: str) -> Answer:
        """Send, retrying connection errors, timeouts, 5xx and 429; the last answer."""

        def counted(_answer: Answer, _wait_s: float) -> None:
            self.retried += 1

        return await self.policy.call_async(
            lambda: self.send_once(method, url, body, content_type),
            should_retry=lambda answer: answer.retryable,
            retry_after_s=lambda answer: answer.retry_after_s, on_retry=counted)

    async def get_json(self, method: str, url: str,
                       body: bytes | None = None) -> Any:  # noqa: ANN401 -- parsed JSON answer
        """A small JSON call (with retries); raises on an error status."""
        answer = await self.send(method, url, body or b"", "application/json")
        if answer.status is None or answer.status >= 400:
            raise aiohttp.ClientError(f"{method} {url}: HTTP {answer.status}: "
                                      f"{answer.text[:300]}")
        return json.loads(answer.text)
