"""Shot detection that decodes as little as it can: PySceneDetect's detectors on a cheap analysis pass.

1. Analysis pass: one ffmpeg process decodes the video skipping non-reference frames (``-skip_frame
   noref``) and the deblocking filter, scales each frame to a small BGR image (``analysis_width``, the
   size PySceneDetect itself analyses at) and writes raw frames to a pipe; ``showinfo`` reports each
   frame's exact timestamp on stderr. PySceneDetect's ``AdaptiveDetector`` / ``ContentDetector`` run
   on these frames (``process_frame`` with PTS-backed ``FrameTimecode``s). The motion profile (a luma
   change score and a difference hash a few times a second) comes from the same frames.
2. Refinement: where the analysed frames around a candidate cut are not consecutive (skipped frames in
   between), a second ffmpeg decodes only that window at the full frame rate (input-side seek) and the
   cut moves to the frame with the largest content change.

``detect_with_scenedetect`` is PySceneDetect's own full-decode path, the reference the tests and the
benchmark compare against.
"""

from __future__ import annotations

import bisect
import math
import queue
import re
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from v60k.core.documents import Motion
from v60k.core.errors import DECODE_FAILED, NOT_A_VIDEO
from v60k.media.streams import MediaError, VideoTiming, video_timing

DetectorName = Literal["adaptive", "content"]
SkipFrames = Literal["none", "noref", "bidir"]

_FRAME_LINE = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(\S+)\s+pts_time:\S+.*?\biskey:(\d)")
_TIME_BASE_LINE = re.compile(r"config in time_base:\s*(\d+)/(\d+)")
_DEFAULT_TIME_BASE = Fraction(1, 90000)


class DetectionSettings(BaseModel):
    """What the detection does (the scenes stage's settings are this model)."""

    model_config = ConfigDict(extra="forbid")

    detector: DetectorName = "adaptive"
    adaptive_threshold: float = Field(3.0, gt=0, description="AdaptiveDetector: score / rolling average")
    min_content_val: float = Field(15.0, ge=0, description="AdaptiveDetector: minimum content score for a cut")
    window_width: int = Field(2, ge=1, description="AdaptiveDetector: analysed frames on each side of the average")
    content_threshold: float = Field(27.0, gt=0, description="ContentDetector: content score for a cut")
    min_scene_len_s: float = Field(0.6, ge=0)
    analysis_width: int = Field(256, ge=16, description="analysis frame width (PySceneDetect's own default)")
    motion_fps: float = Field(5.0, gt=0, description="motion profile samples per second")
    skip_frames: SkipFrames = Field("noref", description="frames the analysis pass does not decode (-skip_frame)")
    skip_loop_filter: bool = True
    refine: bool = True
    decode_threads: int = Field(0, ge=0, description="0: ffmpeg decides")
    # speed only (results do not depend on it): left out of dumps, so out of the stage's fingerprint
    refine_workers: int = Field(2, ge=1, exclude=True)


@dataclass
class Cut:
    """The first frame of a new scene: its time (seconds from the start of the file) and frame number."""

    time_s: float
    frame: int
    refined: bool = False


@dataclass
class ShotAnalysis:
    cuts: list[Cut]
    motion: Motion
    rate: Fraction
    frame_count: int
    end_s: float
    frames_analysed: int
    last_frame_s: float
    refined_windows: int


@dataclass
class DecodedFrame:
    pts: int
    time_s: float  # seconds from the start of the file
    key: bool
    image: np.ndarray  # H x W x 3, BGR


# ---- decoding ----------------------------------------------------------------------------------
def analysis_size(width: int, height: int, analysis_width: int) -> tuple[int, int]:
    """The small frame size: ``analysis_width`` wide (never upscaled), aspect ratio kept."""
    if width <= 0 or height <= 0:
        raise MediaError(f"video has no frame size ({width}x{height})", NOT_A_VIDEO)
    if width <= analysis_width:
        return width, height
    return analysis_width, max(1, round(height * analysis_width / width))


def decode_small_frames(
    path: str | Path,
    size: tuple[int, int],
    *,
    start_time_s: float = 0.0,
    seek_s: float | None = None,
    skip_frames: SkipFrames = "none",
    skip_loop_filter: bool = False,
    threads: int = 0,
    nominal_fps: float = 25.0,
) -> Iterator[DecodedFrame]:
    """Decode the first video stream to ``size`` BGR frames through a pipe, with each frame's timestamp.

    ``seek_s``: start decoding at the keyframe at or before this time, in seconds from the start of the
    file (input-side seek, no trimming). Times are absolute stream times minus ``start_time_s`` (the
    file's start time). Closing the iterator stops ffmpeg.
    """
    width, height = size
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", "-copyts"]
    if threads:
        cmd += ["-threads", str(threads)]
    if skip_frames != "none":
        cmd += ["-skip_frame", skip_frames]
    if skip_loop_filter:
        cmd += ["-skip_loop_filter", "all"]
    if seek_s is not None:
        cmd += ["-noaccurate_seek", "-ss", f"{max(0.0, seek_s):.6f}"]
    cmd += [
        "-i", str(path), "-map", "0:v:0", "-an", "-sn", "-dn",
        "-vf", f"scale={width}:{height}:flags=area,format=bgr24,showinfo=checksum=0",
        "-f", "rawvideo", "-vsync", "passthrough", "pipe:1",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _widen_pipe(proc.stdout)
    stamps: queue.Queue[tuple[int | None, bool] | None] = queue.Queue()
    time_base = [_DEFAULT_TIME_BASE]
    other_lines: list[str] = []
    reader = threading.Thread(target=_read_showinfo, args=(proc.stderr, stamps, time_base, other_lines), daemon=True)
    reader.start()
    frame_bytes = width * height * 3
    last_time: float | None = None
    try:
        assert proc.stdout is not None
        while True:
            data = proc.stdout.read(frame_bytes)
            if len(data) < frame_bytes:
                break
            try:
                stamp = stamps.get(timeout=60)
            except queue.Empty as exc:
                raise MediaError("ffmpeg sent a frame without its timestamp", DECODE_FAILED) from exc
            if stamp is None:
                break
            pts, key = stamp
            if pts is None:  # no timestamp: assume the next frame at the nominal spacing
                time_s = (last_time + 1 / nominal_fps) if last_time is not None else 0.0
                pts = round(time_s / time_base[0])
            else:
                time_s = float(pts * time_base[0]) - start_time_s
            last_time = time_s
            image = np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
            yield DecodedFrame(pts=pts, time_s=time_s, key=key, image=image)
        proc.wait()
        reader.join()
        if proc.returncode != 0:
            detail = " | ".join(other_lines[-3:]) or f"exit status {proc.returncode}"
            raise MediaError(f"ffmpeg could not decode the video: {detail}", DECODE_FAILED)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _widen_pipe(stream: Any, size: int = 1 << 20) -> None:
    """A larger pipe buffer (Linux) lets ffmpeg run several frames ahead of the detector."""
    import fcntl

    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if stream is None or set_size is None:
        return
    for candidate in (size, 1 << 18):
        try:
            fcntl.fcntl(stream.fileno(), set_size, candidate)
            return
        except OSError:
            continue


def _read_showinfo(
    stderr: Any, stamps: queue.Queue, time_base: list[Fraction], other_lines: list[str]
) -> None:
    """Parse ffmpeg's stderr: one (pts, is_key) per showinfo frame line; keep the other lines' tail."""
    try:
        for raw in stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if "showinfo" in line:
                match = _FRAME_LINE.search(line)
                if match:
                    pts_text = match.group(2)
                    pts = int(pts_text) if pts_text.lstrip("-").isdigit() else None
                    stamps.put((pts, match.group(3) == "1"))
                    continue
                base = _TIME_BASE_LINE.search(line)
                if base and int(base.group(1)) > 0 and int(base.group(2)) > 0:
                    time_base[0] = Fraction(int(base.group(1)), int(base.group(2)))
                continue
            other_lines.append(line)
            del other_lines[:-20]
    except (OSError, ValueError):
        pass
    finally:
        stamps.put(None)


# ---- scores ------------------------------------------------------------------------------------
def content_score(previous_hsv: np.ndarray, hsv: np.ndarray, weights: tuple[float, float, float]) -> float:
    """ContentDetector's frame score: weighted mean absolute difference of hue, saturation and value."""
    diff = np.abs(hsv.astype(np.int16) - previous_hsv.astype(np.int16)).reshape(-1, 3).mean(axis=0)
    return float(np.dot(diff, weights) / sum(abs(w) for w in weights))


def dhash_of(gray: np.ndarray) -> int:
    """64-bit difference hash of a luma image (9x8 area resize, left < right per pixel pair)."""
    import cv2

    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


class _MotionTracker:
    """Luma change score and dhash for analysed frames, at most ``fps`` per second."""

    def __init__(self, fps: float, frame_period_s: float):
        self.profile = Motion(fps=fps)
        self.period = 1.0 / fps
        self.tolerance = frame_period_s / 2
        self.next_time = 0.0
        self.previous: np.ndarray | None = None

    def add(self, time_s: float, image: np.ndarray) -> None:
        if time_s < self.next_time - self.tolerance:
            return
        import cv2

        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        score = 0.0 if self.previous is None else float(cv2.absdiff(gray, self.previous).mean())
        self.previous = gray
        self.profile.add(round(time_s, 4), round(score, 3), dhash_of(gray))
        self.next_time = (math.floor(time_s / self.period + 1e-6) + 1) * self.period


# ---- detection ---------------------------------------------------------------------------------
def make_detector(settings: DetectionSettings) -> Any:
    """The configured PySceneDetect detector (minimum scene length in seconds)."""
    from scenedetect.detectors import AdaptiveDetector, ContentDetector

    if settings.detector == "adaptive":
        return AdaptiveDetector(
            adaptive_threshold=settings.adaptive_threshold,
            min_scene_len=float(settings.min_scene_len_s),
            window_width=settings.window_width,
            min_content_val=settings.min_content_val,
        )
    if settings.detector == "content":
        return ContentDetector(threshold=settings.content_threshold, min_scene_len=float(settings.min_scene_len_s))
    raise ValueError(f"unknown detector {settings.detector!r}")


def detect_shots(
    path: str | Path,
    width: int,
    height: int,
    settings: DetectionSettings | None = None,
    timing: VideoTiming | None = None,
) -> ShotAnalysis:
    """Cuts, the frame count and the motion profile of a video (see the module docstring)."""
    from scenedetect.common import FrameTimecode, Timecode

    settings = settings or DetectionSettings()
    timing = timing or video_timing(path, count_frames=True)
    rate = timing.rate if timing.rate > 0 else Fraction(25)
    fps = float(rate)
    size = analysis_size(width, height, settings.analysis_width)
    detector = make_detector(settings)
    motion = _MotionTracker(settings.motion_fps, 1.0 / fps)
    times: list[float] = []
    keyframes: list[float] = []
    candidates: list[Any] = []
    position = None
    for frame in decode_small_frames(
        path, size, start_time_s=timing.start_time_s, skip_frames=settings.skip_frames,
        skip_loop_filter=settings.skip_loop_filter, threads=settings.decode_threads, nominal_fps=fps,
    ):
        if times and frame.time_s <= times[-1]:
            continue  # a repeated or out-of-order timestamp: detectors need strictly increasing times
        times.append(frame.time_s)
        if frame.key:
            keyframes.append(frame.time_s)
        time_base = Fraction(1, 1_000_000)
        position = FrameTimecode(Timecode(max(0, round(frame.time_s / time_base)), time_base), fps=rate)
        candidates += detector.process_frame(position, frame.image)
        motion.add(frame.time_s, frame.image)
    if position is None:
        raise MediaError("no video frame could be decoded", "undecodable_video")
    declared_end = timing.duration_s
    if declared_end and times[-1] + 1 / fps < declared_end - max(1.0, 0.02 * declared_end):
        raise MediaError(
            f"the video stream stops at {times[-1]:.2f}s of a declared {declared_end:.2f}s: truncated or corrupt",
            "truncated_media",
        )
    candidates += detector.post_process(position)

    first = times[0]  # frame numbers count from the first frame; times stay the file's presentation times
    cut_times = sorted({round(c.seconds, 6) for c in candidates})
    cuts = [Cut(time_s=t, frame=round((t - first) * fps)) for t in cut_times]
    refined = 0
    if settings.refine:
        cuts, refined = _refine_cuts(path, cuts, times, keyframes, size, rate, timing.start_time_s, settings)
    frame_count = timing.nb_frames or 0
    last_frame = round((times[-1] - first) * fps)
    frame_count = max(frame_count, last_frame + 1)
    end_s = max(timing.duration_s or 0.0, times[-1] + 1 / fps, frame_count / fps if not timing.duration_s else 0.0)
    cuts = _enforce_min_length(cuts, settings.min_scene_len_s, frame_count)
    motion.profile.keyframes_s = [round(k, 6) for k in keyframes]
    motion.profile.frame_rate = fps
    return ShotAnalysis(
        cuts=cuts, motion=motion.profile, rate=rate, frame_count=frame_count, end_s=end_s,
        frames_analysed=len(times), last_frame_s=times[-1], refined_windows=refined,
    )


def _enforce_min_length(cuts: list[Cut], min_len_s: float, frame_count: int) -> list[Cut]:
    """Cuts strictly inside the video, at least ``min_len_s`` after the start and after each other."""
    kept: list[Cut] = []
    last = 0.0
    for cut in sorted(cuts, key=lambda c: c.time_s):
        if cut.frame <= 0 or cut.frame >= frame_count or cut.time_s - last < min_len_s - 1e-6:
            continue
        kept.append(cut)
        last = cut.time_s
    return kept


def _refine_cuts(
    path: str | Path,
    cuts: list[Cut],
    times: list[float],
    keyframes: list[float],
    size: tuple[int, int],
    rate: Fraction,
    start_time_s: float,
    settings: DetectionSettings,
) -> tuple[list[Cut], int]:
    """Move each cut whose analysed neighbours are not consecutive frames to its exact frame."""
    fps = float(rate)
    first = times[0]
    jobs = []
    for index, cut in enumerate(cuts):
        at = bisect.bisect_left(times, cut.time_s - 0.25 / fps)
        previous = times[at - 1] if at > 0 else None
        if previous is not None and (cut.time_s - previous) * fps > 1.5:
            before = [k for k in keyframes if k <= previous]
            jobs.append((index, previous, before[-1] if before else None))
    if not jobs:
        return cuts, 0
    refined = list(cuts)

    def refine(job: tuple[int, float, float | None]) -> tuple[int, Cut]:
        index, previous, keyframe = job
        return index, _refine_one(path, cuts[index], previous, keyframe, size, fps, first, start_time_s, settings)

    with ThreadPoolExecutor(max_workers=max(1, settings.refine_workers)) as pool:
        for index, cut in pool.map(refine, jobs):
            refined[index] = cut
    return refined, len(jobs)


def _refine_one(
    path: str | Path,
    cut: Cut,
    previous_s: float,
    keyframe_s: float | None,
    size: tuple[int, int],
    fps: float,
    first_frame_s: float,
    start_time_s: float,
    settings: DetectionSettings,
) -> Cut:
    """Decode [previous analysed frame, candidate] at the full frame rate; the cut is the frame with the
    largest content change. Keeps the candidate when the window cannot be decoded as expected."""
    import cv2

    weights = (1.0, 1.0, 1.0)
    half = 0.5 / fps
    # Containers that seek inexactly (MPEG-TS) may start decoding at a later keyframe: then seek to the
    # keyframe the analysis pass saw before the window, and at last decode from the start.
    seeks: list[float | None] = [previous_s - half]
    if keyframe_s is not None and keyframe_s - half < seeks[0]:
        seeks.append(keyframe_s - half)
    seeks.append(None)
    for seek in seeks:
        frames = decode_small_frames(
            path, size, start_time_s=start_time_s, seek_s=seek,
            skip_loop_filter=settings.skip_loop_filter, threads=settings.decode_threads, nominal_fps=fps,
        )
        best: tuple[float, float] | None = None
        previous_hsv = None
        started_in_time = None
        try:
            for frame in frames:
                if started_in_time is None:
                    started_in_time = frame.time_s <= previous_s + half
                    if not started_in_time:
                        break
                if frame.time_s < previous_s - half:
                    continue
                hsv = cv2.cvtColor(frame.image, cv2.COLOR_BGR2HSV)
                if previous_hsv is not None:
                    score = content_score(previous_hsv, hsv, weights)
                    if best is None or score > best[0]:
                        best = (score, frame.time_s)
                previous_hsv = hsv
                if frame.time_s >= cut.time_s - half:
                    break
        finally:
            frames.close()
        if started_in_time:
            if best is None:
                return cut
            return Cut(time_s=round(best[1], 6), frame=round((best[1] - first_frame_s) * fps), refined=True)
    return cut


# ---- the reference ------------------------------------------------------------------------------
def detect_with_scenedetect(path: str | Path, settings: DetectionSettings | None = None) -> list[Cut]:
    """PySceneDetect's own path (OpenCV decode of every frame, automatic downscale): the reference."""
    from scenedetect import SceneManager, open_video

    settings = settings or DetectionSettings()
    video = open_video(str(path), backend="opencv")
    manager = SceneManager()
    manager.add_detector(make_detector(settings))
    manager.detect_scenes(video)
    fps = float(video.frame_rate)
    scenes = manager.get_scene_list()
    return [Cut(time_s=round(start.seconds, 6), frame=start.frame_num) for start, _ in scenes[1:]] if fps else []
