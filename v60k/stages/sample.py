"""The sample stage: each clip's frames, chosen by the reference adaptive sampler (``v60k.media.frame_sampler``).

Reads clips.json and (when present) scenes.json, whose motion profile and scene list the sampler reuses,
so that only the chosen frames are decoded. Writes ``frames/<clip_id>/<t_ms>.jpg`` and frames.json
(docs/architecture.md): per clip its frames in temporal order with time, path and scene index.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import Field

from v60k.core import documents
from v60k.core.documents import Motion
from v60k.core.errors import BAD_INPUT, DECODE_FAILED, MISSING_INPUT
from v60k.core.stage import Resources, SkipVideo, Stage, StageError, StageResult, StageSettings, Video
from v60k.core.workdir import VideoPaths, atomic_path
from v60k.media.frame_sampler import SamplerSettings, sample_planned
from v60k.media.streams import MediaError

log = logging.getLogger(__name__)


class SampleSettings(StageSettings, SamplerSettings):
    """The sampler's settings (``v60k.media.frame_sampler.SamplerSettings``) plus the JPEGs' size and quality."""

    width: int = Field(448, ge=16, description="JPEG width in pixels (aspect ratio kept)")
    jpeg_quality: int = Field(3, ge=2, le=31, description="ffmpeg q:v (2 best, 31 worst)")


def frame_name(t_s: float) -> str:
    """``<t_ms>.jpg``, zero-padded so that names sort in temporal order."""
    return f"{round(t_s * 1000):06d}.jpg"


class Sample(Stage):
    name = "sample"
    version = "1"
    reads = ("source", "scenes", "clips")
    writes = ("frames",)
    Settings = SampleSettings
    resources = Resources(cpus=1)

    def process(self, video: Video) -> StageResult:
        paths = video.paths
        if not documents.Clips.exists(paths):
            raise SkipVideo("no clips.json (the clips stage did not run for this video)", "no_clips")
        source = paths.source
        if source is None:
            raise StageError(f"no downloaded source in {paths.root}", MISSING_INPUT)
        try:
            clips = documents.Clips.load(paths).clips
        except documents.DocumentError as exc:
            raise StageError(str(exc), BAD_INPUT) from exc
        if not clips:
            raise SkipVideo("clips.json lists no clips", "no_clips")
        motion, scenes, reused = self._scenes(paths)
        settings: SampleSettings = self.settings  # type: ignore[assignment]
        records: dict[str, list[documents.FrameRef]] = {}
        failures: list[dict[str, str]] = []
        with atomic_path(paths.frames_dir) as tmp_dir:
            tmp_dir.mkdir(parents=True, exist_ok=True)
            for clip in clips:
                try:
                    frames = sample_planned(
                        source,
                        clip.start_s,
                        clip.end_s,
                        settings.max_frames,
                        motion=motion,
                        scenes=scenes,
                        width=settings.width,
                        quality=settings.jpeg_quality,
                        settings=settings,
                    )
                except MediaError as exc:
                    failures.append({"clip_id": clip.clip_id, "reason": str(exc)})
                    records[clip.clip_id] = []
                    continue
                clip_dir = tmp_dir / clip.clip_id
                clip_dir.mkdir(parents=True, exist_ok=True)
                entries = []
                for planned, jpeg in frames:
                    name = frame_name(planned.t_s)
                    (clip_dir / name).write_bytes(jpeg)
                    entries.append(documents.FrameRef(t_s=round(planned.t_s, 4), path=f"frames/{clip.clip_id}/{name}",
                                                      scene_index=planned.scene_index))
                records[clip.clip_id] = entries
        if failures and len(failures) == len(clips):
            raise StageError(f"no clip could be sampled: {failures[0]['reason']}", DECODE_FAILED)
        documents.Frames(
            clips=records, settings=settings.public_dict(), motion_reused=reused, failures=failures
        ).save(paths)
        counts = [len(v) for v in records.values()]
        return StageResult(
            outputs={"frames": paths.frames_json.name},
            metrics={
                "clips": len(clips),
                "frames": sum(counts),
                "max_frames_per_clip": max(counts),
                "min_frames_per_clip": min(counts),
                "motion_reused": reused,
                "failed_clips": len(failures),
            },
        )

    @staticmethod
    def _scenes(paths: VideoPaths) -> tuple[Motion | None, list[dict[str, Any]] | None, bool]:
        """scenes.json's motion profile and scene list, when present and well-formed."""
        if not documents.Scenes.exists(paths):
            return None, None, False
        try:
            doc = documents.Scenes.load(paths)
        except documents.DocumentError as exc:
            log.warning("%s; the sampler analyses the clips itself", exc)
            return None, None, False
        scenes = [scene.model_dump() for scene in doc.scenes] or None
        return doc.motion, scenes, doc.motion is not None
