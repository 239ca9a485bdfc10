"""Progress display: rich bars per stage on a terminal, plain lines otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from v60k.core.catalog import ItemOutcome


class Progress:
    """Receives pipeline events. The base class is silent (library use)."""

    def stage_started(self, stage: str, total: int) -> None: ...

    def item_finished(self, outcome: ItemOutcome) -> None: ...

    def stage_finished(self, stage: str) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


class PlainProgress(Progress):
    """One line per finished item (at most every ``interval`` seconds for big stages) and per stage."""

    def __init__(self, stream: TextIO | None = None, interval: float = 5.0):
        self.stream = stream or sys.stderr
        self.interval = interval
        self._stage: dict[str, Any] = {}

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def stage_started(self, stage: str, total: int) -> None:
        self._stage = {"name": stage, "total": total, "done": 0, "start": time.time(), "last": 0.0}
        self._print(f"[{stage}] {total} to process")

    def item_finished(self, outcome: ItemOutcome) -> None:
        st = self._stage
        st["done"] += 1
        now = time.time()
        small = st["total"] <= 200
        if small or outcome.state == "failed" or now - st["last"] >= self.interval or st["done"] == st["total"]:
            st["last"] = now
            rate = st["done"] / max(now - st["start"], 1e-9)
            eta = (st["total"] - st["done"]) / rate if rate > 0 else 0.0
            detail = f" {outcome.error_class}: {(outcome.error_message or '').splitlines()[0][:120]}" if outcome.state != "done" else ""
            self._print(
                f"[{st['name']}] {st['done']}/{st['total']} {outcome.state:7s} {outcome.video_id}"
                f" ({outcome.finished_at - outcome.started_at:.1f}s, {rate:.2f}/s, eta {eta:.0f}s){detail}"
            )

    def stage_finished(self, stage: str) -> None:
        st = self._stage
        if st:
            self._print(f"[{stage}] finished {st['done']} in {time.time() - st['start']:.1f}s")

    def message(self, text: str) -> None:
        self._print(text)


class RichProgress(Progress):
    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bars

        self.bars = Bars(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("[red]{task.fields[failed]}"),
            transient=False,
        )
        self.bars.start()
        self.tasks: dict[str, Any] = {}
        self.failed: dict[str, int] = {}
        self.started: dict[str, float] = {}

    def stage_started(self, stage: str, total: int) -> None:
        self.tasks[stage] = self.bars.add_task(stage, total=total, rate="", failed="")
        self.failed[stage] = 0
        self.started[stage] = time.time()

    def item_finished(self, outcome: ItemOutcome) -> None:
        stage = outcome.stage
        if outcome.state == "failed":
            self.failed[stage] += 1
        task = self.tasks[stage]
        done = self.bars.tasks[task].completed + 1
        rate = done / max(time.time() - self.started[stage], 1e-9)
        failed = f"{self.failed[stage]} failed" if self.failed[stage] else ""
        self.bars.update(task, advance=1, rate=f"{rate:.2f}/s", failed=failed)

    def message(self, text: str) -> None:
        self.bars.console.print(text)

    def close(self) -> None:
        self.bars.stop()


def default_progress(quiet: bool = False) -> Progress:
    if quiet:
        return Progress()
    return RichProgress() if sys.stderr.isatty() else PlainProgress()
