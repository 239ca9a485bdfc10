"""The catalog's own cost on a simulated 60,000-video run: stages that do nothing, no media.

Figures: ingest, planning (first run's set-up before any item runs), the full run, the resume check (a second
run over a finished work dir) and `status`, in seconds. Goal: planning, resume check and status each < 2 s.
"""

from __future__ import annotations

import shutil
import time

from bench.common import Row, scratch
from v60k.core import pipeline
from v60k.core.catalog import Catalog
from v60k.core.stage import Stage, StageResult, Video

N_VIDEOS = 60_000


class NoopFirst(Stage):
    name = "noop_first"

    def process(self, video: Video) -> StageResult:
        return StageResult()


class NoopSecond(Stage):
    name = "noop_second"
    requires = ("noop_first",)

    def process(self, video: Video) -> StageResult:
        return StageResult()


class _Timer:
    """A Progress that notes when the first item finishes: the run's planning time ends there."""

    def __init__(self) -> None:
        self.first_item_at: float | None = None

    def stage_started(self, stage: str, total: int) -> None: ...

    def item_finished(self, outcome) -> None:
        if self.first_item_at is None:
            self.first_item_at = time.perf_counter()

    def stage_finished(self, stage: str) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


def run() -> list[Row]:
    root = scratch("catalog")
    shutil.rmtree(root, ignore_errors=True)
    work = root / "work"
    rows = [{"video_id": f"v{i:06d}", "source_url": f"https://example.org/watch?v={i}"} for i in range(N_VIDEOS)]
    start = time.perf_counter()
    with Catalog(work) as catalog:
        catalog.add_videos(rows)
    ingest = time.perf_counter() - start

    timer = _Timer()
    start = time.perf_counter()
    summary = pipeline.run(work, stages=[NoopFirst, NoopSecond], progress=timer)
    full = time.perf_counter() - start
    planning = (timer.first_item_at or start) - start
    assert summary.counts["noop_second"]["done"] == N_VIDEOS

    start = time.perf_counter()
    again = pipeline.run(work, stages=[NoopFirst, NoopSecond])
    resume = time.perf_counter() - start
    assert sum(again.processed.values()) == 0

    start = time.perf_counter()
    pipeline.status(work)
    status = time.perf_counter() - start
    per_item_ms = 1000 * full / (2 * N_VIDEOS)
    return [
        Row("catalog", "ingest 60k manifest rows", ingest, "s"),
        Row("catalog", "planning (60k videos x 2 stages)", planning, "s", goal="< 2 s"),
        Row("catalog", "full no-op run, per item", per_item_ms, "ms"),
        Row("catalog", "resume check (all done)", resume, "s", goal="< 2 s"),
        Row("catalog", "status", status, "s", goal="< 2 s"),
    ]
