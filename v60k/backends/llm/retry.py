"""Retries: exponential backoff with full jitter on 429 / 5xx / timeouts / dropped connections,
honouring the server's Retry-After (or retry-after-ms) header."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class RetryPolicy:
    max_retries: int = 5
    base_s: float = 1.0
    max_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based): Retry-After when the server gave one,
        else a random wait in [0, min(max_s, base_s * 2**attempt)] (full jitter)."""
        if retry_after_s is not None:
            return max(0.0, retry_after_s)
        return self.rng.uniform(0.0, min(self.max_s, self.base_s * (2**attempt)))


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date); None when absent."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return float(raw_ms) / 1000.0
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(raw) if raw else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def classify(exc: BaseException) -> tuple[str, bool, float | None]:
    """(kind, retryable, retry_after_s) of an openai client exception."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout", True, None
    if isinstance(exc, openai.APIConnectionError):
        return "connection", True, None
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retry_after = parse_retry_after(getattr(exc.response, "headers", None))
        if status == 429:
            return "rate_limited", True, retry_after
        if status in (408, 409) or status >= 500:
            return ("server_error" if status >= 500 else f"http_{status}"), True, retry_after
        if status in (401, 403):
            return "auth", False, None
        if status == 404:
            return "not_found", False, None
        return "bad_request", False, None
    return type(exc).__name__, False, None


async def with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy, sleep: Sleep = asyncio.sleep,
                       on_attempt: Callable[[], None] | None = None,
                       give_up: Callable[[Exception], bool] | None = None) -> T:
    """Await ``call()``; on a retryable error wait and try again, at most ``policy.max_retries`` times
    (``give_up(exc)`` true: raise at once). A Retry-After longer than ``policy.max_s`` is not waited for: the
    error is raised (transient) for a later run to retry."""
    attempt = 0
    while True:
        if on_attempt is not None:
            on_attempt()
        try:
            return await call()
        except Exception as exc:
            _, retryable, retry_after = classify(exc)
            if not retryable or attempt >= policy.max_retries or (give_up is not None and give_up(exc)):
                raise
            if retry_after is not None and retry_after > policy.max_s:
                raise  # the server asks for a longer pause than one run should block: a later run retries
            await sleep(policy.delay(attempt, retry_after))
            attempt += 1
