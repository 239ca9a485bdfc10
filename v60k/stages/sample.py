"""The sample stage: each clip's frames, chosen by the reference adaptive sampler (``v60k.sampler``).

Reads clips.json and (when present) scenes.json, whose motion profile and scene list the sampler reuses,
so that only the chosen frames are decoded. Writes ``frames/<clip_id>/<t_ms>.jpg`` and frames.json
(docs/architecture.md): per clip its frames in temporal order with time, path and scene index.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import Field

from v60k.media import MediaError
from v60k.sampler import Motion, SamplerSettings, sample_planned
from v60k.stage import Resources, SkipVideo, Stage, StageError, StageResult, StageSettings, Video
from v60k.workdir import atomic_path, read_json, write_json

log = logging.getLogger(__name__)


class SampleSettings(StageSettings):
    max_frames: int = Field(32, ge=1, description="at most this many frames per clip")
    min_frames: int = Field(4, ge=1, description="at least this many (when the clip has distinct frames)")
    density: float = Field(2.0, gt=0, description="frames ≈ density * sqrt(clip seconds) within [min, max]")
    width: int = Field(448, ge=16, description="JPEG width in pixels (aspect ratio kept)")
    jpeg_quality: int = Field(3, ge=2, le=31, description="ffmpeg q:v (2 best, 31 worst)")
    dup_distance: int = Field(5, ge=0, le=64, description="dHash bits within which two frames are duplicates")
    motion_weight: float = Field(0.7, ge=0, le=1, description="0 = uniform in time, 1 = by motion only")

    def sampler(self) -> SamplerSettings:
        return SamplerSettings(
            max_frames=self.max_frames,
            min_frames=self.min_frames,
            density=self.density,
            dup_distance=self.dup_distance,
            motion_weight=self.motion_weight,
        )


def frame_name(t_s: float) -> str:
    """``<t_ms>.jpg``, zero-padded so that names sort in temporal order."""
    return f"{round(t_s * 1000):06d}.jpg"


class Sample(Stage):
    name = "sample"
    version = "1"
    requires = ("clips",)
    Settings = SampleSettings
    resources = Resources(cpus=1)

    def process(self, video: Video) -> StageResult:
        paths = video.paths
        if not paths.clips_json.exists():
            raise SkipVideo("no clips.json (the clips stage did not run for this video)", "no_clips")
        source = paths.source
        if source is None:
            raise StageError(f"no downloaded source in {paths.root}", "bad_input")
        try:
            clips = list(read_json(paths.clips_json).get("clips") or [])
        except (ValueError, AttributeError) as exc:
            raise StageError(f"clips.json is not valid: {exc}", "bad_input") from exc
        if not clips:
            raise SkipVideo("clips.json lists no clips", "no_clips")
        motion, scenes, reused = self._scenes(paths.scenes_json)
        settings: SampleSettings = self.settings  # type: ignore[assignment]
        records: dict[str, list[dict[str, Any]]] = {}
        failures: list[dict[str, str]] = []
        with atomic_path(paths.frames_dir) as tmp_dir:
            tmp_dir.mkdir(parents=True, exist_ok=True)
            for clip in clips:
                clip_id = str(clip["clip_id"])
                start_s, end_s = float(clip["start_s"]), float(clip["end_s"])
                try:
                    frames = sample_planned(
                        source,
                        start_s,
                        end_s,
                        settings.max_frames,
                        motion=motion,
                        scenes=scenes,
                        width=settings.width,
                        quality=settings.jpeg_quality,
                        settings=settings.sampler(),
                    )
                except MediaError as exc:
                    failures.append({"clip_id": clip_id, "reason": str(exc)})
                    records[clip_id] = []
                    continue
                clip_dir = tmp_dir / clip_id
                clip_dir.mkdir(parents=True, exist_ok=True)
                entries = []
                for planned, jpeg in frames:
                    name = frame_name(planned.t_s)
                    (clip_dir / name).write_bytes(jpeg)
                    entries.append(
                        {
                            "t_s": round(planned.t_s, 4),
                            "path": f"frames/{clip_id}/{name}",
                            "scene_index": planned.scene_index,
                        }
                    )
                records[clip_id] = entries
        if failures and len(failures) == len(clips):
            raise StageError(f"no clip could be sampled: {failures[0]['reason']}", "decode_failed")
        write_json(
            paths.frames_json,
            {
                "clips": records,
                "settings": settings.public_dict(),
                "motion_reused": reused,
                "failures": failures,
            },
        )
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
    def _scenes(scenes_json: Path) -> tuple[Motion | None, list[dict[str, Any]] | None, bool]:
        """scenes.json's motion profile and scene list, when present and well-formed."""
        if not scenes_json.exists():
            return None, None, False
        doc: Any = None
        try:
            doc = read_json(scenes_json)
            motion = Motion.from_dict(doc["motion"]) if doc.get("motion") else None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "%s: motion profile unusable (%s); the sampler analyses the clips itself", scenes_json, exc
            )
            return None, doc.get("scenes") if isinstance(doc, dict) else None, False
        return motion, doc.get("scenes") or None, motion is not None
