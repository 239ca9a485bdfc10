"""The scenes stage against a decode-only ffmpeg pass and the `scenedetect` CLI (detect-adaptive defaults).

Two encodings of the same 720p, 151 s video with 33 hard cuts (``build_scene_video``, cached in the bench
scratch dir): as built (x264 ultrafast: every frame a P-frame reference, nothing to skip), and re-encoded
the way web video is delivered (x264 veryfast defaults: B-frames, B-pyramid, keyframes at scene changes).
Times are the best of ``REPEAT`` runs; ratios are baseline time / stage time (> 1: the stage is faster),
in wall-clock and in CPU seconds (the CPU figure is steadier on a shared machine).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import Row, measured, random_scene_lengths, scratch

REPEAT = int(os.environ.get("V60K_BENCH_REPEAT", "3"))
WIDTH, HEIGHT, FPS = 1280, 720, 25
MATCH_TOLERANCE_FRAMES = 5


def bench_media() -> dict[str, Any]:
    """The cached bench videos and their true cut frames (built on first use, ~1-2 minutes)."""
    from v60k.testing.sample_episodes import build_scene_video

    root = scratch("scenes")
    built, web, truth_path = root / "cuts-720p.mp4", root / "cuts-720p-web.mp4", root / "cuts-720p.truth.json"
    if not (built.exists() and truth_path.exists()):
        facts = build_scene_video(built, random_scene_lengths(seed=7, longest_s=9.0), WIDTH, HEIGHT, FPS, audio=True)
        truth_path.write_text(json.dumps(facts), encoding="utf-8")
    if not web.exists():
        tmp = web.with_name(web.name + ".tmp.mp4")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(built), "-c:v", "libx264", "-preset", "veryfast",
                        "-crf", "23", "-profile:v", "high", "-c:a", "copy", "-movflags", "+faststart", str(tmp)],
                       check=True)
        tmp.replace(web)
    facts = json.loads(truth_path.read_text(encoding="utf-8"))
    return {"as built": built, "web encode": web, "truth": [round(t * FPS) for t in facts["cuts_s"]]}


def _decode_only(path: Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "null", "-"], check=True)


def _scenedetect_cli(path: Path) -> list[int]:
    """`scenedetect -i F detect-adaptive` with default options; the scene list CSV goes to a temp dir."""
    out = scratch("scenes") / "cli-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    cli = Path(sys.executable).with_name("scenedetect")
    subprocess.run([str(cli), "-q", "-i", str(path), "-o", str(out), "detect-adaptive", "list-scenes", "-s"],
                   check=True, capture_output=True)
    (table,) = out.glob("*-Scenes.csv")
    with open(table, newline="", encoding="utf-8") as handle:
        starts = [int(row["Start Frame"]) - 1 for row in csv.DictReader(handle)]  # the CSV counts from 1
    return starts[1:]


def _scenes_stage(path: Path, **settings: Any) -> list[int]:
    from v60k.core.stage import StageContext, Video
    from v60k.core.workdir import WorkDir, read_json
    from v60k.stages.scenes import Scenes

    workdir = WorkDir(scratch("scenes") / "work").create()
    directory = workdir.video_dir(path.stem)
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / f"source{path.suffix}"
    if not link.exists():
        link.symlink_to(path)
    video = Video(video_id=path.stem, source_url=f"file-less:{path.stem}", dir=directory)
    result = Scenes(Scenes.Settings(**settings), StageContext(workdir)).process(video)
    doc = read_json(video.paths.scenes_json)
    _scenes_stage.last_metrics = result.metrics  # type: ignore[attr-defined]
    return [scene["start_frame"] for scene in doc["scenes"][1:]]


def compare_cuts(found: list[int], reference: list[int], tolerance: int = MATCH_TOLERANCE_FRAMES) -> dict[str, int]:
    """Greedy one-to-one matching within ``tolerance`` frames: matched, missed, extra, max difference."""
    unmatched = list(reference)
    diffs = []
    extra = 0
    for frame in sorted(found):
        best = min(unmatched, key=lambda r: abs(r - frame), default=None)
        if best is not None and abs(best - frame) <= tolerance:
            diffs.append(abs(best - frame))
            unmatched.remove(best)
        else:
            extra += 1
    return {"matched": len(diffs), "missed": len(unmatched), "extra": extra, "max_diff": max(diffs, default=0)}


def _best(runs: list[tuple[float, float, Any]]) -> tuple[float, float, Any]:
    return min(r[0] for r in runs), min(r[1] for r in runs), runs[-1][2]


def run() -> list[Row]:
    media = bench_media()
    rows: list[Row] = []
    for label, path in (("as built", media["as built"]), ("web encode", media["web encode"])):
        runs: dict[str, list[tuple[float, float, Any]]] = {"decode": [], "cli": [], "stage": [], "bidir": []}
        for _ in range(REPEAT):  # interleaved, so that load from others hits all of them alike
            runs["decode"].append(measured(lambda p=path: _decode_only(p)))
            runs["cli"].append(measured(lambda p=path: _scenedetect_cli(p)))
            if label == "web encode":  # the opt-in mode that also skips reference B-frames
                runs["bidir"].append(measured(lambda p=path: _scenes_stage(p, skip_frames="bidir")))
            runs["stage"].append(measured(lambda p=path: _scenes_stage(p)))
        (dec_wall, dec_cpu, _), (cli_wall, cli_cpu, cli_cuts), (st_wall, st_cpu, st_cuts) = (
            _best(runs["decode"]), _best(runs["cli"]), _best(runs["stage"]))
        metrics = _scenes_stage.last_metrics  # type: ignore[attr-defined]
        tag = f"[{label}]"
        vs_cli = compare_cuts(st_cuts, cli_cuts)
        vs_truth = compare_cuts(st_cuts, media["truth"])
        cli_truth = compare_cuts(cli_cuts, media["truth"])
        rows += [
            Row("scenes", f"stage wall {tag}", round(st_wall, 2), "s", f"decode {dec_wall:.2f}s, CLI {cli_wall:.2f}s"),
            Row("scenes", f"speedup vs decode-only {tag}", round(dec_wall / st_wall, 2), "x",
                "ffmpeg -i F -f null -", ">= 1"),
            Row("scenes", f"speedup vs scenedetect CLI {tag}", round(cli_wall / st_wall, 2), "x",
                "scenedetect detect-adaptive", ">= 2"),
            Row("scenes", f"CPU speedup vs decode-only {tag}", round(dec_cpu / st_cpu, 2), "x",
                f"cpu {dec_cpu:.1f}s vs {st_cpu:.1f}s"),
            Row("scenes", f"CPU speedup vs scenedetect CLI {tag}", round(cli_cpu / st_cpu, 2), "x",
                f"cpu {cli_cpu:.1f}s vs {st_cpu:.1f}s"),
            Row("scenes", f"frames decoded in analysis {tag}", metrics["analysed_fraction"], "share",
                f"{metrics['refined_windows']} refined windows"),
            Row("scenes", f"cut max diff vs CLI {tag}", vs_cli["max_diff"], "frames", "scenedetect CLI cuts", "<= 1"),
            Row("scenes", f"cuts matched/missed/extra vs CLI {tag}", vs_cli["matched"], "cuts",
                f"missed {vs_cli['missed']}, extra {vs_cli['extra']} (CLI {len(cli_cuts)})"),
            Row("scenes", f"cuts matched vs truth {tag}", vs_truth["matched"], "cuts",
                f"of {len(media['truth'])}: missed {vs_truth['missed']}, extra {vs_truth['extra']}, "
                f"max diff {vs_truth['max_diff']}"),
            Row("scenes", f"CLI cuts matched vs truth {tag}", cli_truth["matched"], "cuts",
                f"missed {cli_truth['missed']}, extra {cli_truth['extra']}, max diff {cli_truth['max_diff']}"),
        ]
        if runs["bidir"]:
            bi_wall, bi_cpu, bi_cuts = _best(runs["bidir"])
            bi_truth = compare_cuts(bi_cuts, media["truth"])
            rows += [
                Row("scenes", f"skip_frames=bidir: speedup vs decode-only {tag}", round(dec_wall / bi_wall, 2), "x",
                    f"wall {bi_wall:.2f}s; cpu {dec_cpu / bi_cpu:.2f}x", ">= 1"),
                Row("scenes", f"skip_frames=bidir: speedup vs scenedetect CLI {tag}", round(cli_wall / bi_wall, 2), "x",
                    f"cpu {cli_cpu / bi_cpu:.2f}x", ">= 2"),
                Row("scenes", f"skip_frames=bidir: cuts matched vs truth {tag}", bi_truth["matched"], "cuts",
                    f"missed {bi_truth['missed']}, extra {bi_truth['extra']}, max diff {bi_truth['max_diff']}"),
            ]
    return rows
