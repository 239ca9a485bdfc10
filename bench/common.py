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
        cpu_before, start = cpu_seconds(), time.perf_counter()
        result = func()
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_before
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    return best_wall, best_cpu, result


def cpu_seconds() -> float:
    """User + system seconds of this process and its waited-for children."""
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


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
