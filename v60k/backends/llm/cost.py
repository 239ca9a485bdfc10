"""Token usage and its estimated cost."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass


@dataclass
class Usage:
    """Tokens one or more requests used, as the server reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens)

    @classmethod
    def of(cls, usage: object) -> Usage:
        """From an openai ``CompletionUsage`` or a dict (absent → zeros)."""
        if usage is None:
            return cls()
        get = usage.get if isinstance(usage, dict) else (lambda key: getattr(usage, key, None))
        return cls(int(get("prompt_tokens") or 0), int(get("completion_tokens") or 0))


def cost_usd(usage: Usage, price_input_per_1m: float, price_output_per_1m: float, factor: float = 1.0) -> float:
    """Estimated cost of ``usage`` at per-million-token prices (``factor``: e.g. the Batch API discount)."""
    return factor * (usage.prompt_tokens * price_input_per_1m + usage.completion_tokens * price_output_per_1m) / 1e6


@dataclass
class UsageTotals:
    requests: int = 0  # HTTP requests sent (retries and repairs included)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: int = 0  # answers served from the response cache
    cost_usd: float = 0.0

    def to_dict(self) -> dict[str, float]:
        data = asdict(self)
        data["cost_usd"] = round(self.cost_usd, 6)
        return data

    def __sub__(self, other: UsageTotals) -> UsageTotals:
        return UsageTotals(self.requests - other.requests, self.prompt_tokens - other.prompt_tokens,
                           self.completion_tokens - other.completion_tokens, self.cached - other.cached,
                           self.cost_usd - other.cost_usd)


def summed_usage(*usages: dict[str, float]) -> dict[str, float]:
    """Usage dicts (``UsageTotals.to_dict()`` or stored ones) added key by key."""
    out: dict[str, float] = {}
    for usage in usages:
        for key, value in usage.items():
            out[key] = round(out.get(key, 0) + value, 6)
    return out


class UsageMeter:
    """Thread-safe running totals; ``snapshot()`` differences give one video's usage."""

    def __init__(self, price_input_per_1m: float = 0.0, price_output_per_1m: float = 0.0):
        self.prices = (price_input_per_1m, price_output_per_1m)
        self._totals = UsageTotals()
        self._lock = threading.Lock()

    def add(self, usage: Usage, *, requests: int = 0, cached: int = 0, price_factor: float = 1.0) -> None:
        with self._lock:
            self._totals.requests += requests
            self._totals.cached += cached
            self._totals.prompt_tokens += usage.prompt_tokens
            self._totals.completion_tokens += usage.completion_tokens
            self._totals.cost_usd += cost_usd(usage, *self.prices, factor=price_factor)

    def snapshot(self) -> UsageTotals:
        with self._lock:
            return UsageTotals(**asdict(self._totals))
