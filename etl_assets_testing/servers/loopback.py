"""A server on loopback: a free port for it, waiting until it answers, calling its JSON API."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from typing import Any


def free_port() -> int:
    """A TCP port nothing listens on now (nothing will until someone binds it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_answer(url: str, process: subprocess.Popen[bytes] | None, what: str,
                    log_tail: Callable[[], str] = lambda: "") -> None:
    """Return once ``url`` answers with a success status (an error status, like no answer,
    means not ready yet); raise when ``process`` exits or 60 s pass, with ``log_tail()`` in
    the message."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer at {url} in 60 s: {log_tail()}")


def call(method: str, url: str, body: object = None,
         headers: dict[str, str] | None = None) -> Any:  # noqa: ANN401 (decoded JSON)
    """One JSON request; its decoded answer (None for an empty body)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")
