"""The adaptive sampler against uniform sampling, and its cost against one decode-only pass of the clip.

Media (cached in the bench scratch dir): a 720p, ~150 s scene video (``build_scene_video``: moving lavfi
sources with two static ones, smptehdbars and colorchart, among them) cut into 30 s and 60 s clips, and the two
generated episodes of ``v60k.testing.sample_episodes`` (640x360, spoken lines, cuts every few lines) as whole-video clips.
Uniform sampling takes the same number of frames as the sampler's budget, at the centres of equal bins.

- scene coverage: share of the clip's true scenes (overlapping it by >= 0.5 s) with at least one frame;
- near-duplicate rate: share of a clip's output frames whose dHash (of the decoded JPEG) lies within
  ``dup_distance`` bits of an earlier output frame of the clip;
- cost: wall and CPU seconds of the sampler divided by those of ``ffmpeg -ss S -t D -i F -f null -`` over the
  clip, with the scenes stage's motion profile reused (``detect_shots``'s, keyframes included, as the sample
  stage runs) and standalone (own analysis, one ffprobe for the keyframes).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from bench.common import Row, measured, random_scene_lengths, scratch

REPEAT = int(os.environ.get("V60K_BENCH_REPEAT", "2"))
WIDTH, HEIGHT, FPS = 1280, 720, 25


def bench_media() -> list[dict[str, Any]]:
    """[{name, path, scenes, clips: [(start, end)]}] (built on first use, ~1-2 minutes)."""
    from v60k.testing.sample_episodes import build_episode, build_scene_video, demo_specs

    root = scratch("sampler")
    video, truth = root / "scenes-720p.mp4", root / "scenes-720p.truth.json"
    if not (video.exists() and truth.exists()):
        truth.write_text(
            json.dumps(build_scene_video(video, random_scene_lengths(seed=11, longest_s=12.0), WIDTH, HEIGHT, FPS,
                                         audio=False))
        )
    facts = json.loads(truth.read_text())
    duration = facts["duration_s"]
    clips = [(s, min(s + 30.0, duration)) for s in range(0, int(duration) - 10, 30)]
    clips += [(s, min(s + 60.0, duration)) for s in range(0, int(duration) - 30, 60)]
    media = [{"name": "scenes-720p", "path": video, "scenes": facts["scenes"], "clips": clips}]
    for spec in demo_specs():
        episode_truth = root / f"{spec.name}.truth.json"
        if not episode_truth.exists():
            build_episode(spec, root)
        data = json.loads(episode_truth.read_text())
        path = root / f"{spec.name}.mp4"
        if path.exists() and data.get("scenes"):
            media.append(
                {
                    "name": spec.name,
                    "path": path,
                    "scenes": data["scenes"],
                    "clips": [(0.0, float(data["duration_s"]))],
                }
            )
    return media


def uniform_times(start_s: float, end_s: float, count: int) -> list[float]:
    step = (end_s - start_s) / count
    return [start_s + (i + 0.5) * step for i in range(count)]


def coverage(
    times: list[float], scenes: list[dict[str, Any]], start_s: float, end_s: float
) -> tuple[int, int]:
    inside = [s for s in scenes if min(end_s, s["end_s"]) - max(start_s, s["start_s"]) >= 0.5]
    covered = sum(1 for s in inside if any(s["start_s"] <= t < s["end_s"] for t in times))
    return covered, len(inside)


def duplicates(jpegs: list[bytes], distance: int) -> int:
    from v60k.media.frame_sampler import dhash_of_jpeg, hamming

    hashes = [dhash_of_jpeg(j) for j in jpegs]
    return sum(1 for i, h in enumerate(hashes) if any(hamming(h, g) <= distance for g in hashes[:i]))


def _decode_only(path: Path, start_s: float, end_s: float) -> None:
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-nostdin",
            "-ss",
            f"{start_s:.3f}",
            "-t",
            f"{end_s - start_s:.3f}",
            "-i",
            str(path),
            "-f",
            "null",
            "-",
        ],
        check=True,
    )


def run() -> list[Row]:
    from v60k.media import frame_sampler
    from v60k.media.frame_sampler import DEFAULT_DUP_DISTANCE, frame_budget
    from v60k.media.shot_detection import detect_shots
    from v60k.media.streams import probe

    totals = {
        k: 0.0
        for k in (
            "s_cov",
            "u_cov",
            "scenes",
            "s_dup",
            "u_dup",
            "s_frames",
            "u_frames",
            "decode_wall",
            "decode_cpu",
            "reuse_wall",
            "reuse_cpu",
            "own_wall",
            "own_cpu",
        )
    }
    clips = 0
    per_media: list[Row] = []
    for item in bench_media():
        media_decode = media_reuse = 0.0
        path, scenes = item["path"], item["scenes"]
        stream = probe(path)
        whole = detect_shots(path, stream.width, stream.height).motion  # what scenes.json holds (keyframes too)
        scene_list = [
            {"index": i, "start_s": s["start_s"], "end_s": s["end_s"]} for i, s in enumerate(scenes)
        ]
        for start, end in item["clips"]:
            clips += 1
            wall, cpu, _ = measured(lambda: _decode_only(path, start, end), REPEAT)  # noqa: B023
            totals["decode_wall"] += wall
            totals["decode_cpu"] += cpu
            media_decode += cpu
            wall, cpu, frames = measured(
                lambda: frame_sampler.sample(path, start, end, motion=whole, scenes=scene_list), REPEAT  # noqa: B023
            )
            totals["reuse_wall"] += wall
            totals["reuse_cpu"] += cpu
            media_reuse += cpu
            wall, cpu, _ = measured(lambda: frame_sampler.sample(path, start, end), REPEAT)  # noqa: B023
            totals["own_wall"] += wall
            totals["own_cpu"] += cpu
            count = frame_budget(end - start)
            times = [t for t, _ in frames]
            uniform = uniform_times(start, end, count)
            uniform_jpegs = [frame_sampler.grab_frame(path, t, width=frame_sampler.DEFAULT_WIDTH) for t in uniform]
            s_cov, n = coverage(times, scenes, start, end)
            u_cov, _ = coverage(uniform, scenes, start, end)
            totals["s_cov"] += s_cov
            totals["u_cov"] += u_cov
            totals["scenes"] += n
            totals["s_dup"] += duplicates([j for _, j in frames], DEFAULT_DUP_DISTANCE)
            totals["u_dup"] += duplicates(uniform_jpegs, DEFAULT_DUP_DISTANCE)
            totals["s_frames"] += len(frames)
            totals["u_frames"] += len(uniform_jpegs)
        per_media.append(
            Row(
                "sampler",
                f"cost, motion reused (CPU), {item['name']}",
                media_reuse / media_decode,
                "x",
                f"decode-only, {len(item['clips'])} clips",
                "<= 1.2",
            )
        )
    where = f"{clips} clips"
    return [
        Row(
            "sampler",
            "scene coverage, adaptive",
            totals["s_cov"] / totals["scenes"],
            "share",
            where,
            "> uniform",
        ),
        Row("sampler", "scene coverage, uniform", totals["u_cov"] / totals["scenes"], "share", where),
        Row(
            "sampler",
            "near-duplicate rate, adaptive",
            totals["s_dup"] / max(1, totals["s_frames"]),
            "share",
            where,
            "< uniform",
        ),
        Row(
            "sampler",
            "near-duplicate rate, uniform",
            totals["u_dup"] / max(1, totals["u_frames"]),
            "share",
            where,
        ),
        Row(
            "sampler",
            "frames per clip, adaptive",
            totals["s_frames"] / clips,
            "frames",
            "uniform: same budget",
        ),
        Row(
            "sampler",
            "cost, motion reused (wall)",
            totals["reuse_wall"] / totals["decode_wall"],
            "x",
            "decode-only pass of the clip",
            "<= 1.2",
        ),
        Row(
            "sampler",
            "cost, motion reused (CPU)",
            totals["reuse_cpu"] / totals["decode_cpu"],
            "x",
            "decode-only pass of the clip",
            "<= 1.2",
        ),
        Row(
            "sampler",
            "cost, standalone (wall)",
            totals["own_wall"] / totals["decode_wall"],
            "x",
            "decode-only pass of the clip",
        ),
        Row(
            "sampler",
            "cost, standalone (CPU)",
            totals["own_cpu"] / totals["decode_cpu"],
            "x",
            "decode-only pass of the clip",
        ),
        *per_media,
    ]


if __name__ == "__main__":
    for row in run():
        print(f"{row.metric:<34} {row.fmt():>8} {row.unit:<6} {row.baseline:<30} {row.goal}")
