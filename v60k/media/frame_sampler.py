"""The reference adaptive temporal sampler: the frames of a clip the role-play model sees (the dynamic profile).

``plan`` chooses frame times from a low-resolution motion profile (scenes.json's ``motion``, or one low-res
ffmpeg decode by ``analyse``) without decoding anything else; ``sample`` then decodes only the chosen frames
(``v60k.media.streams.grab_frame``) as JPEG. The algorithm (docs/framework.md):

1. budget: ``frame_budget`` — N grows with the square root of the clip's length (short clips denser),
   at least ``min_frames``, at most ``max_frames`` (32 by default);
2. every analysed frame of the clip is a candidate, except those within ``edge_guard_s`` of a cut;
3. one frame per scene first (nearest the scene's motion-weighted middle; longest scenes first when the
   budget is smaller than the scene count), even when its hash matches another scene's;
4. then farthest-point sampling in *motion-weighted time*: each analysed step counts ``1 - w + w * score /
   mean_score``, so high-motion spans are stretched and receive more frames;
5. after that, a candidate whose 64-bit dHash is within ``dup_distance`` bits of a chosen frame is never
   taken, so near-duplicate spans give no extra frames (a static clip yields fewer than N);
6. ties break towards the earlier time: the result is deterministic, in temporal order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from v60k.core.documents import ANALYSIS_FPS, Motion
from v60k.core.errors import DECODE_FAILED, NOT_A_VIDEO
from v60k.media.shot_detection import dhash_of
from v60k.media.streams import MediaError, grab_frame

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAMES = 32
DEFAULT_MIN_FRAMES = 4
DEFAULT_DENSITY = 2.0  # N ≈ density * sqrt(seconds): 5 s → 5, 30 s → 11, 60 s → 16, 120 s → 22
DEFAULT_WIDTH = 448
DEFAULT_DUP_DISTANCE = 5  # Hamming bits of 64
DEFAULT_MOTION_WEIGHT = 0.7
ANALYSIS_WIDTH = 64
ONE_RUN_SHARE = (
    0.5  # decode the chosen frames in one run when the keyframe intervals would skip less than half
)
CUT_SCORE = 40.0  # without a scene list, a luma change this large ...
CUT_JUMP = 1.5  # ... and this many times the previous second's largest marks a cut


@dataclass(frozen=True)
class PlannedFrame:
    """A chosen frame: its time and its scene (given scenes, else cuts found in the motion profile)."""

    t_s: float
    scene_index: int | None


class SamplerSettings(BaseModel):
    """The sampler's knobs (the sample stage's settings are this model plus the JPEG's size and quality)."""

    model_config = ConfigDict(extra="forbid")

    max_frames: int = Field(DEFAULT_MAX_FRAMES, ge=1, description="at most this many frames per clip")
    min_frames: int = Field(DEFAULT_MIN_FRAMES, ge=1, description="at least this many (when the clip has distinct frames)")
    density: float = Field(DEFAULT_DENSITY, gt=0, description="frames ≈ density * sqrt(clip seconds) within [min, max]")
    dup_distance: int = Field(DEFAULT_DUP_DISTANCE, ge=0, le=64, description="dHash bits within which two frames are duplicates")
    motion_weight: float = Field(DEFAULT_MOTION_WEIGHT, ge=0, le=1, description="0 = uniform in time, 1 = by motion only")
    edge_guard_s: float = Field(0.2, ge=0, description="no frame this close to a cut (short scenes: a quarter of it)")


def hamming(a: int, b: int) -> int:
    """Differing bits of two 64-bit hashes."""
    return (a ^ b).bit_count()


def dhash_of_jpeg(data: bytes) -> int:
    """The dHash of a JPEG image (for measuring near-duplicates among output frames)."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError("not a decodable image")
    return dhash_of(image)


def frame_budget(
    duration_s: float,
    max_frames: int | None = None,
    *,
    min_frames: int = DEFAULT_MIN_FRAMES,
    density: float = DEFAULT_DENSITY,
) -> int:
    """How many frames a clip of ``duration_s`` gets: ``density * sqrt(duration)`` within [min, max]."""
    cap = DEFAULT_MAX_FRAMES if max_frames is None else max_frames
    if cap <= 0 or duration_s <= 0:
        return 0
    return max(1, min(cap, max(min_frames, math.ceil(density * math.sqrt(duration_s)))))


def analyse(
    path: str | Path, start_s: float, end_s: float, *, fps: float = ANALYSIS_FPS, width: int = ANALYSIS_WIDTH
) -> Motion:
    """One low-resolution luma decode of [start_s, end_s): the motion profile ``plan`` needs."""
    from v60k.media.streams import probe

    info = probe(path)
    if not getattr(info, "has_video", True) or not info.width or not info.height:
        raise MediaError(f"{path} has no video stream", NOT_A_VIDEO)
    out_w = min(width, int(info.width))
    out_h = max(2, round(info.height * out_w / info.width / 2) * 2)
    duration = max(0.0, end_s - start_s)
    cmd = [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-ss",
        f"{max(0.0, start_s):.6f}",
        "-t",
        f"{duration:.6f}",
        "-i",
        str(path),
        "-map",
        "0:v:0",
        "-an",
        "-sn",
        "-vf",
        f"fps={fps},scale={out_w}:{out_h}:flags=area,format=gray",
        "-f",
        "rawvideo",
        "pipe:1",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no detail"]
        raise MediaError(f"ffmpeg could not decode {path}: {detail[0]}", DECODE_FAILED)
    frame_bytes = out_w * out_h
    count = len(proc.stdout) // frame_bytes
    frames = np.frombuffer(proc.stdout[: count * frame_bytes], dtype=np.uint8).reshape(count, out_h, out_w)
    times, scores, hashes = [], [], []
    previous: np.ndarray | None = None
    for k in range(count):
        t = start_s + k / fps
        if t >= end_s:
            break
        gray = frames[k]
        scores.append(
            0.0 if previous is None else round(float(np.abs(gray.astype(np.int16) - previous).mean()), 3)
        )
        previous = gray.astype(np.int16)
        times.append(round(t, 4))
        hashes.append(dhash_of(gray))
    return Motion(times_s=times, scores=scores, dhash=hashes, fps=fps)


def _scene_spans(
    motion: Motion, scenes: list[dict[str, Any]] | None, start_s: float, end_s: float
) -> list[tuple[int | None, float, float]]:
    """(scene_index, start, end) pieces of the clip: the given scenes clipped to it, or cuts from the scores."""
    if scenes:
        spans = []
        for position, scene in enumerate(scenes):
            lo, hi = max(start_s, float(scene["start_s"])), min(end_s, float(scene["end_s"]))
            if hi > lo:
                spans.append((int(scene.get("index", position)), lo, hi))
        if spans:
            return spans
    scores = motion.scores
    cuts = []
    for i in range(1, len(scores)):
        before = max(scores[max(1, i - 5) : i], default=0.0)
        if scores[i] >= CUT_SCORE and scores[i] >= CUT_JUMP * before:  # a jump, not sustained motion
            cuts.append(motion.times_s[i])
    bounds = [start_s, *cuts, end_s]
    return [(i, lo, hi) for i, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)) if hi > lo]


def plan(
    start_s: float,
    end_s: float,
    max_frames: int | None = None,
    *,
    motion: Motion | dict[str, Any],
    scenes: list[dict[str, Any]] | None = None,
    settings: SamplerSettings | None = None,
) -> list[PlannedFrame]:
    """Choose frame times for [start_s, end_s) from a motion profile, without decoding (see module docstring)."""
    settings = settings or SamplerSettings()
    if isinstance(motion, dict):
        motion = Motion.from_dict(motion)
    if end_s <= start_s:
        return []
    cap = max_frames if max_frames is not None else settings.max_frames
    budget = frame_budget(end_s - start_s, cap, min_frames=settings.min_frames, density=settings.density)
    clip = motion.span(start_s, end_s)
    if budget == 0 or not clip.times_s:
        return []
    spans = _scene_spans(clip, scenes, start_s, end_s)
    times = np.asarray(clip.times_s)
    scene_of = np.full(len(times), -1)
    eligible = np.zeros(len(times), dtype=bool)
    for position, (_, lo, hi) in enumerate(spans):
        inside = (times >= lo - 1e-6) & (times < hi - 1e-6)
        scene_of[inside] = position
        guard = min(settings.edge_guard_s, (hi - lo) / 4)
        eligible |= inside & (times >= lo + guard - 1e-6) & (times < hi - guard - 1e-6)
        if not (eligible & inside).any():  # a very short scene: its middle frame anyway
            members = np.flatnonzero(inside)
            if members.size:
                eligible[members[members.size // 2]] = True
    # motion-weighted time: the first analysed frame of a scene carries the cut, not motion
    scores = np.asarray(clip.scores, dtype=float)
    starts = np.r_[True, scene_of[1:] != scene_of[:-1]]
    scores[starts] = 0.0
    mean = float(scores[~starts].mean()) if (~starts).any() and scores[~starts].mean() > 0 else 1.0
    weight = min(max(settings.motion_weight, 0.0), 1.0)
    mass = np.cumsum((1.0 - weight) + weight * scores / mean)
    hashes = clip.dhash
    chosen: list[int] = []

    def duplicate(i: int) -> bool:
        return any(hamming(hashes[i], hashes[c]) <= settings.dup_distance for c in chosen)

    # 1) one frame per scene, longest scenes first, nearest the scene's motion-weighted middle. No duplicate
    #    check across scenes: the detector saw a cut (its colour-aware score), so a scene whose luma hash
    #    matches another's (a returning camera angle, a recoloured shot) is still a scene of its own.
    order = sorted(range(len(spans)), key=lambda p: (-(spans[p][2] - spans[p][1]), spans[p][1]))
    for position in order:
        if len(chosen) >= budget:
            break
        members = np.flatnonzero((scene_of == position) & eligible)
        if members.size:
            middle = (mass[members[0]] + mass[members[-1]]) / 2
            chosen.append(int(min(members, key=lambda m: (abs(mass[m] - middle), m))))
    # 2) farthest-point sampling in motion-weighted time, never a near-duplicate
    candidates = [i for i in np.flatnonzero(eligible) if i not in chosen]
    while len(chosen) < budget and candidates:
        if chosen:
            picked = np.asarray(chosen)
            distance = {i: float(np.abs(mass[picked] - mass[i]).min()) for i in candidates}
        else:
            middle = (mass[0] + mass[-1]) / 2
            distance = {i: -abs(float(mass[i]) - middle) for i in candidates}
        best = max(candidates, key=lambda i: (distance[i], -i))
        candidates.remove(best)
        if duplicate(best):
            continue
        chosen.append(int(best))
        candidates = [i for i in candidates if not duplicate(i)]
    return [PlannedFrame(float(times[i]), spans[scene_of[i]][0]) for i in sorted(chosen)]


def sample(
    path: str | Path,
    start_s: float,
    end_s: float,
    max_frames: int | None = None,
    *,
    motion: Motion | dict[str, Any] | None = None,
    scenes: list[dict[str, Any]] | None = None,
    width: int | None = DEFAULT_WIDTH,
    quality: int = 3,
    settings: SamplerSettings | None = None,
) -> list[tuple[float, bytes]]:
    """Up to N frames of [start_s, end_s) of ``path`` as (t seconds, JPEG bytes), in temporal order.

    ``motion`` / ``scenes``: scenes.json's ``motion`` and ``scenes`` (reused when they cover the clip;
    otherwise one low-res decode computes the profile). ``width``: JPEG width (aspect kept; None = source).
    A frame that cannot be grabbed is left out (logged); no frame at all raises ``MediaError``.
    """
    return [
        (p.t_s, jpeg)
        for p, jpeg in sample_planned(
            path,
            start_s,
            end_s,
            max_frames,
            motion=motion,
            scenes=scenes,
            width=width,
            quality=quality,
            settings=settings,
        )
    ]


def sample_planned(
    path: str | Path,
    start_s: float,
    end_s: float,
    max_frames: int | None = None,
    *,
    motion: Motion | dict[str, Any] | None = None,
    scenes: list[dict[str, Any]] | None = None,
    width: int | None = DEFAULT_WIDTH,
    quality: int = 3,
    settings: SamplerSettings | None = None,
) -> list[tuple[PlannedFrame, bytes]]:
    """``sample`` with each frame's plan (its scene index) kept."""
    if isinstance(motion, dict):
        motion = Motion.from_dict(motion)
    if motion is None or not motion.covers(start_s, end_s):
        motion = analyse(path, start_s, end_s)
    chosen = plan(start_s, end_s, max_frames, motion=motion, scenes=scenes, settings=settings)
    known = (motion.keyframes_s, motion.frame_rate) if motion.keyframes_s and motion.frame_rate else None
    grabbed = grab_frames(path, [p.t_s for p in chosen], width=width, quality=quality, keyframes=known)
    frames: list[tuple[PlannedFrame, bytes]] = []
    failures: list[str] = []
    for planned in chosen:
        result = grabbed.get(planned.t_s)
        if isinstance(result, bytes):
            frames.append((planned, result))
        else:
            failures.append(f"{planned.t_s:.3f}s: {result}")
    if failures:
        log.warning(
            "%s: %d of %d frames could not be grabbed (%s)",
            path,
            len(failures),
            len(chosen),
            "; ".join(failures[:3]),
        )
    if chosen and not frames:
        raise MediaError(
            f"no frame of {path} [{start_s:.2f}, {end_s:.2f}) could be grabbed: {failures[0]}", "no_frame"
        )
    return frames


# ---- decoding the chosen frames ------------------------------------------------------------------
def keyframe_times(path: str | Path, start_s: float, end_s: float) -> tuple[list[float] | None, float]:
    """Video keyframe times (seconds from the file start) up to ``end_s`` from packet flags (no decoding), or
    None when ffprobe cannot tell; and the stream's frame rate (25 when unknown). One ffprobe run."""
    cmd = ["ffprobe", "-v", "error", "-select_streams", "v:0",
           "-show_entries", "packet=pts_time,flags:stream=avg_frame_rate:format=start_time", "-of", "json",
           "-read_intervals", f"{max(0.0, start_s - 60.0):.3f}%{end_s + 1.0:.3f}", str(path)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        info = json.loads(proc.stdout) if proc.returncode == 0 else {}
    except ValueError:
        info = {}
    fps = 25.0
    for stream in info.get("streams") or []:
        num, _, den = str(stream.get("avg_frame_rate") or "").partition("/")
        with contextlib.suppress(ValueError, ZeroDivisionError):
            fps = float(num) / float(den or 1) or 25.0
    offset = 0.0
    with contextlib.suppress(ValueError, TypeError):
        offset = float((info.get("format") or {}).get("start_time") or 0.0)
    keys = []
    for packet in info.get("packets") or []:
        if "K" in str(packet.get("flags") or ""):
            with contextlib.suppress(ValueError, TypeError):
                keys.append(float(packet["pts_time"]) - offset)
    return (sorted(keys) or None), fps


def grab_frames(
    path: str | Path,
    times: list[float],
    *,
    width: int | None = DEFAULT_WIDTH,
    quality: int = 3,
    keyframes: tuple[list[float], float] | None = None,
) -> dict[float, bytes | str]:
    """JPEGs at ``times`` (each the frame at or just after t), or why not (a message).

    Frames that share a keyframe interval are decoded by one ffmpeg run from that keyframe up to the last of
    them (a ``select`` filter keeps only them), so no interval is decoded twice; when those runs together would
    skip less than half of the span, a single run from the first keyframe does it all (fewer process starts).
    Anything a run misses falls back to ``v60k.media.streams.grab_frame``. ``keyframes``: the video's
    (keyframe times, frame rate) when already known (the scenes stage's motion profile); else one ffprobe run.
    """
    import bisect
    import tempfile

    results: dict[float, bytes | str] = {}
    if not times:
        return results
    keys, fps = keyframes if keyframes else keyframe_times(path, min(times), max(times))
    groups: dict[float, list[float]] = {}
    for t in sorted(times):
        kf = keys[max(0, bisect.bisect_right(keys, t + 1e-6) - 1)] if keys else t
        groups.setdefault(min(kf, t) if keys else t, []).append(t)
    if keys and len(groups) > 1:
        needed = sum(members[-1] - kf for kf, members in groups.items())
        first = min(groups)
        if needed >= ONE_RUN_SHARE * (max(times) - first):  # little to skip: one run saves process starts
            groups = {first: sorted(times)}
    half = 0.5 / fps
    for kf, members in groups.items():
        if len(members) > 1 and keys:
            with tempfile.TemporaryDirectory(prefix="v60k-grab-") as tmp:
                select = "+".join(
                    f"between(t,{t - kf - half:.6f},{t - kf + half - 1e-6:.6f})" for t in members
                )
                chain = f"select='{select}'" + (f",scale={int(width)}:-2" if width else "")
                cmd = [
                    "ffmpeg",
                    "-v",
                    "error",
                    "-nostdin",
                    "-ss",
                    f"{kf:.6f}",
                    "-i",
                    str(path),
                    "-map",
                    "0:v:0",
                    "-an",
                    "-sn",
                    "-vf",
                    chain,
                    "-fps_mode",
                    "passthrough",
                    "-frames:v",
                    str(len(members)),
                    "-q:v",
                    str(quality),
                    "-f",
                    "image2",
                    str(Path(tmp) / "%04d.jpg"),
                ]
                proc = subprocess.run(cmd, capture_output=True, check=False)
                files = sorted(Path(tmp).glob("*.jpg"))
                if proc.returncode == 0 and len(files) == len(members):
                    for t, file in zip(members, files, strict=True):
                        results[t] = file.read_bytes()
                    continue
        for t in members:
            try:
                results[t] = grab_frame(path, t, width=width, quality=quality)
            except MediaError as exc:
                results[t] = str(exc)
    return results
