"""Shared pieces of the benchmarks: a result row, a timer, a scratch dir."""

from __future__ import annotations

import random
import resource
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


def measured(func: Callable[[], Any], repeat: int = 1) -> tuple[float, float, Any]:
    """Best wall and best CPU seconds (this process and its children) over ``repeat`` runs, and the last result."""
    best_wall = best_cpu = float("inf")
    result = None
    for _ in range(repeat):
        before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        start = time.perf_counter()
        result = func()
        wall = time.perf_counter() - start
        after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        cpu = sum((a.ru_utime + a.ru_stime) - (b.ru_utime + b.ru_stime) for a, b in zip(after, before, strict=True))
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    return best_wall, best_cpu, result


def random_scene_lengths(seed: int, longest_s: float, total_s: float = 150.0, shortest_s: float = 1.5) -> list[float]:
    """Scene lengths drawn uniformly in [shortest_s, longest_s] until they add up to ``total_s`` (seeded)."""
    rng = random.Random(seed)
    lengths: list[float] = []
    while sum(lengths) < total_s:
        lengths.append(round(rng.uniform(shortest_s, longest_s), 2))
    return lengths


def scratch(name: str) -> Path:
    root = Path(tempfile.gettempdir()) / "v60k-bench" / name
    root.mkdir(parents=True, exist_ok=True)
    return root
