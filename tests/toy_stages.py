"""Small real stages for testing the pipeline machinery (catalog, executors, resume) without media."""

from __future__ import annotations

import os
import time
from pathlib import Path

from v60k.core.stage import SkipVideo, Stage, StageError, StageResult, StageSettings, Video
from v60k.core.workdir import read_json, write_json


def _log_call(workdir: Path, stage: str, video_id: str) -> None:
    """Append one line per process() call (O_APPEND: safe across processes)."""
    with open(workdir / "calls.log", "a", encoding="utf-8") as log:
        log.write(f"{stage} {video_id} {os.getpid()}\n")


def calls(workdir: Path) -> list[tuple[str, str]]:
    path = Path(workdir) / "calls.log"
    if not path.exists():
        return []
    return [tuple(line.split()[:2]) for line in path.read_text().splitlines()]


class Measure(Stage):
    """Writes measure.json: the length of the video id times a factor."""

    name = "toy_measure"

    class Settings(StageSettings):
        factor: int = 1
        sleep_s: float = 0.0
        fail_ids: list[str] = []
        skip_ids: list[str] = []
        crash_marker: str | None = None  # a file naming a video id that raises RuntimeError while it exists

    def setup(self) -> None:
        with open(self.workdir.root / "setups.log", "a", encoding="utf-8") as log:
            log.write(f"{self.name} {os.getpid()}\n")

    def teardown(self) -> None:
        with open(self.workdir.root / "teardowns.log", "a", encoding="utf-8") as log:
            log.write(f"{self.name} {os.getpid()}\n")

    def process(self, video: Video) -> StageResult:
        _log_call(self.workdir.root, self.name, video.video_id)
        if video.video_id in self.settings.fail_ids:
            raise StageError(f"{video.video_id} is broken on purpose", error_class="broken_on_purpose")
        marker = Path(self.settings.crash_marker) if self.settings.crash_marker else None
        if marker is not None and marker.exists() and marker.read_text() == video.video_id:
            raise RuntimeError("disk on fire")
        if video.video_id in self.settings.skip_ids:
            raise SkipVideo("not applicable on purpose", error_class="not_applicable")
        time.sleep(self.settings.sleep_s)
        value = len(video.video_id) * self.settings.factor
        write_json(video.dir / "measure.json", {"value": value})
        # per-item outcomes: each video is measured in `value` parts, of which the id's digits are rejected
        digits = sum(ch.isdigit() for ch in video.video_id)
        items = {"done": value - digits, "rejected": {"digit": digits} if digits else {}, "failed": {}}
        return StageResult(outputs={"measure": "measure.json"}, usage={"requests": 1, "cost_usd": 0.5},
                           metrics={"items": items, "totals": {"measured": float(value), "half": value / 2}})


class Double(Stage):
    """Reads measure.json, writes double.json."""

    name = "toy_double"
    requires = ("toy_measure",)

    class Settings(StageSettings):
        sleep_s: float = 0.0

    def process(self, video: Video) -> StageResult:
        _log_call(self.workdir.root, self.name, video.video_id)
        if not (video.dir / "measure.json").exists():
            raise SkipVideo("no measure (upstream skipped)", error_class="no_input")
        time.sleep(self.settings.sleep_s)
        value = read_json(video.dir / "measure.json")["value"]
        write_json(video.dir / "double.json", {"value": 2 * value})
        return StageResult(outputs={"double": "double.json"})


class Expand(Stage):
    """A 'playlist' video (id starting with 'list') expands into three new videos."""

    name = "toy_expand"

    def process(self, video: Video) -> StageResult:
        _log_call(self.workdir.root, self.name, video.video_id)
        if video.video_id.startswith("list"):
            rows = [
                {"video_id": f"item{i}-of-{video.video_id}", "source_url": f"{video.source_url}/item{i}",
                 "series": video.series}
                for i in range(3)
            ]
            return StageResult(new_videos=rows, skip_reason="playlist expanded into 3 videos")
        write_json(video.dir / "expand.json", {"ok": True})
        return StageResult(outputs={"expand": "expand.json"})


class AfterExpand(Stage):
    """Reads what toy_expand wrote."""

    name = "toy_after_expand"
    requires = ("toy_expand",)

    def process(self, video: Video) -> StageResult:
        _log_call(self.workdir.root, self.name, video.video_id)
        read_json(video.dir / "expand.json")
        return StageResult()


def manifest_rows(n: int, prefix: str = "vid") -> list[dict]:
    return [{"video_id": f"{prefix}{i:03d}", "source_url": f"http://127.0.0.1/{prefix}{i:03d}.mp4"} for i in range(n)]


class Unsourced(Stage):
    """Fails every video under an old name for a missing input ('missing_source')."""

    name = "toy_unsourced"

    def process(self, video: Video) -> StageResult:
        raise StageError(f"no source for {video.video_id}", error_class="missing_source")
