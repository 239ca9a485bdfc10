"""What every executor shares: the picklable stage spec and the per-video call that never raises."""

from __future__ import annotations

import importlib
import logging
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from v60k.core.catalog import ItemOutcome
from v60k.core.errors import EXPANDED, WORKER_CRASHED
from v60k.core.stage import Resources, SkipVideo, Stage, StageContext, StageError, Video
from v60k.core.workdir import WorkDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageSpec:
    """Everything a worker needs to build a stage: class path, settings, work dir, shared config."""

    class_path: str  # "package.module:ClassName"
    settings: dict[str, Any] = field(default_factory=dict)
    workdir: str = "."
    shared: dict[str, Any] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)

    @classmethod
    def of(cls, stage: Stage, resources: Resources | None = None) -> StageSpec:
        klass = type(stage)
        return cls(
            class_path=f"{klass.__module__}:{klass.__qualname__}",
            settings=stage.settings.model_dump(mode="python"),
            workdir=str(stage.workdir.root),
            shared=dict(stage.context.shared if stage.context else {}),
            resources=resources or stage.worker_resources(),
        )

    @property
    def stage_class(self) -> type[Stage]:
        module, _, name = self.class_path.partition(":")
        return getattr(importlib.import_module(module), name)

    def build(self) -> Stage:
        klass = self.stage_class
        return klass(klass.Settings(**self.settings), StageContext(WorkDir(self.workdir), self.shared))


def run_one(stage: Stage, video: Video) -> ItemOutcome:
    """Process one video; every exception becomes a classified outcome (never raised)."""
    started = time.time()
    outcome = ItemOutcome(video_id=video.video_id, stage=stage.name, state="done", started_at=started, finished_at=started)
    try:
        result = stage.process(video)
        outcome.outputs = dict(result.outputs)
        outcome.metrics = dict(result.metrics)
        outcome.usage = dict(result.usage)
        outcome.new_videos = list(result.new_videos)
        if result.skip_reason:  # a row that expanded into new videos (a playlist) is not a video itself
            outcome.state, outcome.error_message = "skipped", result.skip_reason
            outcome.error_class = EXPANDED if result.new_videos else "skipped"
    except SkipVideo as skip:
        outcome.state, outcome.error_class, outcome.error_message = "skipped", skip.error_class, skip.reason
    except StageError as exc:
        outcome.state, outcome.error_class, outcome.error_message = "failed", exc.error_class, str(exc)
    except Exception as exc:  # an unexpected bug or library error: keep the batch going, keep the trace
        outcome.state, outcome.error_class = "failed", type(exc).__name__
        outcome.error_message = f"{exc}\n{traceback.format_exc(limit=6)}"
        log.debug("stage %s failed on %s", stage.name, video.video_id, exc_info=True)
    outcome.finished_at = time.time()
    return outcome


def crashed(stage_name: str, video: Video, message: str, error_class: str = WORKER_CRASHED) -> ItemOutcome:
    """A failure the executor records for a video its worker never finished (or could never start)."""
    now = time.time()
    return ItemOutcome(
        video_id=video.video_id, stage=stage_name, state="failed", started_at=now, finished_at=now,
        error_class=error_class, error_message=message,
    )


class Executor(Protocol):
    def run(self, spec: StageSpec, videos: Iterable[Video]) -> Iterator[ItemOutcome]:
        """Yield one outcome per video, in completion order. ``videos`` is consumed lazily."""
        ...

    def close(self) -> None: ...
