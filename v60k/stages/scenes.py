"""The scenes stage: scene cuts (PySceneDetect detectors on a fast analysis pass), stream facts and the
motion profile the frame sampler reuses, written to ``scenes.json`` (see docs/architecture.md)."""

from __future__ import annotations

from typing import Any

from v60k.core import documents
from v60k.core.errors import MISSING_INPUT, NOT_A_VIDEO
from v60k.core.stage import Resources, Stage, StageError, StageResult, StageSettings, Video
from v60k.media import streams
from v60k.media.shot_detection import DetectionSettings, ShotAnalysis, detect_shots


class Scenes(Stage):
    """Detect hard cuts and record each scene's start/end (seconds and frames, end exclusive)."""

    name = "scenes"
    version = "1"
    reads = ("source",)
    writes = ("scenes",)
    resources = Resources(cpus=1)

    class Settings(StageSettings, DetectionSettings):
        """The detection's own settings (``v60k.media.shot_detection.DetectionSettings``), as the stage's section."""

    def process(self, video: Video) -> StageResult:
        source = video.paths.source
        if source is None:
            raise StageError(f"no downloaded source file in {video.dir}", MISSING_INPUT)
        info = streams.probe(source)
        if not info.has_video:
            raise StageError(f"{source.name}: no video stream (audio only)", NOT_A_VIDEO)
        analysis = detect_shots(source, info.width, info.height, self.settings)
        self.scenes_document(info, analysis).save(video.paths)
        return StageResult(
            outputs={"scenes": video.paths.scenes_json.name},
            metrics={
                "has_audio": info.has_audio,
                "scenes": len(analysis.cuts) + 1,
                "frames_analysed": analysis.frames_analysed,
                "analysed_fraction": round(analysis.frames_analysed / max(1, analysis.frame_count), 3),
                "refined_windows": analysis.refined_windows,
            },
        )

    def scenes_document(self, info: streams.StreamInfo, analysis: ShotAnalysis) -> documents.Scenes:
        """The scenes.json content: stream facts, detector settings, scenes and the motion profile."""
        settings: DetectionSettings = self.settings  # type: ignore[assignment]
        stream = {
            "duration_s": round(info.duration_s, 6),
            "fps": round(float(analysis.rate), 6),
            "width": info.width,
            "height": info.height,
            "frame_count": analysis.frame_count,
            "has_video": info.has_video,
            "has_audio": info.has_audio,
            "video_codec": info.video_codec,
            "audio_codec": info.audio_codec,
        }
        detector: dict[str, Any] = {"name": settings.detector, "min_scene_len_s": settings.min_scene_len_s}
        if settings.detector == "adaptive":
            detector.update(adaptive_threshold=settings.adaptive_threshold, min_content_val=settings.min_content_val,
                            window_width=settings.window_width)
        else:
            detector.update(threshold=settings.content_threshold)
        detector.update(analysis_width=settings.analysis_width, skip_frames=settings.skip_frames,
                        skip_loop_filter=settings.skip_loop_filter, refine=settings.refine)
        starts = [(0.0, 0)] + [(cut.time_s, cut.frame) for cut in analysis.cuts]
        ends = starts[1:] + [(round(analysis.end_s, 6), analysis.frame_count)]
        scenes = [
            {"index": i, "start_s": round(start_s, 6), "end_s": round(end_s, 6), "start_frame": start_f, "end_frame": end_f}
            for i, ((start_s, start_f), (end_s, end_f)) in enumerate(zip(starts, ends))
        ]
        return documents.Scenes(stream=stream, detector=detector, scenes=scenes, motion=analysis.motion)
