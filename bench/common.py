"""Shared pieces of the benchmarks: a result row, a timer, a scratch dir."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One printed figure: what was measured, its value, and (for ratios) the baseline it is compared with."""

    bench: str
    metric: str
    value: float
    unit: str = ""
    baseline: str = ""
    goal: str = ""

    def fmt(self) -> str:
        return f"{self.value:.3f}" if isinstance(self.value, float) else str(self.value)


def timed(func: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time over ``repeat`` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def scratch(name: str) -> Path:
    root = Path(tempfile.gettempdir()) / "v60k-bench" / name
    root.mkdir(parents=True, exist_ok=True)
    return root
