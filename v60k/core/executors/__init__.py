"""Executors run one stage over many videos. They know nothing of what a stage does: they build it from
a ``StageSpec`` once per worker (``setup()``), call ``process`` per video and yield ``ItemOutcome``s."""

from __future__ import annotations

from v60k.core.executors.base import Executor, StageSpec, run_one


def make_executor(kind: str, workers: int = 1, ray_address: str | None = None, **options) -> Executor:
    if kind == "local":
        from v60k.core.executors.local import LocalExecutor

        return LocalExecutor(workers=workers)
    if kind == "ray":
        from v60k.core.executors.ray import RayExecutor

        return RayExecutor(workers=workers, address=ray_address, **options)
    raise ValueError(f"unknown executor {kind!r} (local or ray)")


__all__ = ["Executor", "StageSpec", "make_executor", "run_one"]
