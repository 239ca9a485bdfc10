"""clips: scenes grouped into clips, cut only at scene boundaries and never inside a line."""

from __future__ import annotations

import random

import pytest

from v60k.core.documents import Line, Scenes
from v60k.core.stage import SkipVideo, StageContext, Video
from v60k.core.workdir import WorkDir, read_json, write_json
from v60k.stages.clips import BOUNDARY_TOLERANCE_S, Clips, ClipsSettings, make_clips


def scenes_doc(bounds: list[float]) -> dict:
    return {"stream": {"duration_s": bounds[-1]},
            "scenes": [{"index": i, "start_s": a, "end_s": b, "start_frame": int(a * 25), "end_frame": int(b * 25)}
                       for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]}


def clips_of(bounds: list[float], lines: list[dict], settings: ClipsSettings) -> list[dict]:
    """make_clips on the documents these dicts describe, back as dicts."""
    clips = make_clips("v", Scenes.model_validate(scenes_doc(bounds)), [Line.model_validate(ln) for ln in lines],
                       settings)
    return [c.model_dump() for c in clips]


def line(line_id: str, start: float, end: float, character: str | None = "Ross") -> dict:
    return {"line_id": line_id, "start_s": start, "end_s": end, "text": "words", "character": character}


def check_invariants(clips: list[dict], bounds: list[float], lines: list[dict], settings: ClipsSettings) -> None:
    scene_count = len(bounds) - 1
    assert [i for c in clips for i in c["scene_indices"]] == list(range(scene_count))  # all, in order, once
    assert clips[0]["start_s"] == bounds[0] and clips[-1]["end_s"] == bounds[-1]
    for a, b in zip(clips, clips[1:]):
        assert a["end_s"] == b["start_s"] and a["end_s"] in bounds  # cut at a scene boundary
    tol = BOUNDARY_TOLERANCE_S  # timestamp jitter: a line may touch a cut by this much
    for ln in lines:  # never inside a line
        assert not any(ln["start_s"] + tol < c["end_s"] < ln["end_s"] - tol for c in clips[:-1]), ln
    assert sorted(i for c in clips for i in c["line_ids"]) == sorted(ln["line_id"] for ln in lines)
    for c in clips:
        if len(c["scene_indices"]) > 1:  # only a single (glued) unit may pass max_s
            glued = any(ln["start_s"] < bounds[i + 1] < ln["end_s"] for ln in lines
                        for i in c["scene_indices"][:-1])
            assert c["end_s"] - c["start_s"] <= settings.max_s or glued


def test_scenes_are_grouped_towards_the_target_within_min_and_max():
    bounds = [0, 10, 25, 40, 70, 100, 130, 136, 150, 200, 330, 345]
    settings = ClipsSettings(min_s=30, target_s=60, max_s=120)
    clips = clips_of(bounds, [], settings)
    check_invariants(clips, bounds, [], settings)
    spans = [(c["start_s"], c["end_s"]) for c in clips]
    # a 130 s scene cannot be cut; the 15 s tail cannot join it without passing max_s
    assert spans == [(0, 70), (70, 130), (130, 200), (200, 330), (330, 345)]
    assert [c["clip_id"] for c in clips] == [f"v-c{i:03d}" for i in range(5)] and clips[4]["index"] == 4
    short_tail = clips_of([0, 50, 100, 110], [], settings)
    assert [(c["start_s"], c["end_s"]) for c in short_tail] == [(0, 50), (50, 110)]  # the tail joins


def test_a_line_across_a_cut_keeps_its_scenes_in_one_clip():
    bounds = [0, 30, 60, 90]
    settings = ClipsSettings(min_s=30, target_s=30, max_s=60)
    lines = [line("L0000", 5, 8), line("L0001", 28, 33), line("L0002", 70, 75)]
    clips = clips_of(bounds, lines, settings)
    assert [c["scene_indices"] for c in clips] == [[0, 1], [2]]
    assert [c["line_ids"] for c in clips] == [["L0000", "L0001"], ["L0002"]]
    without_line = clips_of(bounds, [line("L0001", 28, 29.9)], settings)
    assert [c["scene_indices"] for c in without_line] == [[0], [1], [2]]


@pytest.mark.parametrize("seed", range(25))
def test_random_videos_keep_every_invariant(seed):
    rng = random.Random(seed)
    bounds = [0.0]
    for _ in range(rng.randint(1, 40)):
        bounds.append(round(bounds[-1] + rng.choice([rng.uniform(0.5, 8), rng.uniform(8, 60), rng.uniform(60, 200)]), 2))
    lines, t = [], 0.0
    while t < bounds[-1] - 1:
        start = t + rng.uniform(0, 6)
        end = min(bounds[-1], start + rng.uniform(0.3, 9))
        if end > start:
            lines.append(line(f"L{len(lines):04d}", round(start, 2), round(end, 2)))
        t = end
    settings = ClipsSettings(min_s=30, target_s=60, max_s=120)
    check_invariants(clips_of(bounds, lines, settings), bounds, lines, settings)


def make_video(tmp_path, bounds=None, lines=None):
    workdir = WorkDir(tmp_path / "work").create()
    video = Video("ep1", "file:///ep1.mp4", workdir.video_dir("ep1"))
    video.dir.mkdir(parents=True)
    if bounds is not None:
        write_json(video.paths.scenes_json, scenes_doc(bounds) if isinstance(bounds, list) else bounds)
    if lines is not None:
        write_json(video.paths.lines_json, {"cast": ["Ross"], "lines": lines})
    return Clips(ClipsSettings(), StageContext(workdir)), video


def test_the_stage_writes_clips_json_and_works_without_lines(tmp_path):
    stage, video = make_video(tmp_path, [0, 40, 80, 130])
    result = stage.process(video)
    data = read_json(video.paths.clips_json)
    assert result.outputs == {"clips": "clips.json"} and result.metrics["has_lines"] is False
    assert [(c["start_s"], c["end_s"], c["line_ids"]) for c in data["clips"]] == [(0, 40, []), (40, 80, []),
                                                                                   (80, 130, [])]
    assert set(data["clips"][0]) == {"clip_id", "index", "start_s", "end_s", "scene_indices", "line_ids"}

    stage, video = make_video(tmp_path / "b", [0, 40, 80], [line("L0000", 39, 41), line("L0001", 70, 71)])
    assert stage.process(video).metrics["clips_with_lines"] == 1
    assert read_json(video.paths.clips_json)["clips"][0]["line_ids"] == ["L0000", "L0001"]


def test_no_detected_scene_gives_one_clip_and_no_duration_is_a_skip(tmp_path):
    stage, video = make_video(tmp_path, {"stream": {"duration_s": 50.0}, "scenes": []})
    stage.process(video)
    assert [(c["start_s"], c["end_s"]) for c in read_json(video.paths.clips_json)["clips"]] == [(0.0, 50.0)]
    stage, video = make_video(tmp_path / "b", {"stream": {"duration_s": 0}, "scenes": []})
    with pytest.raises(SkipVideo, match="nothing to cut"):
        stage.process(video)
    stage, video = make_video(tmp_path / "c")
    with pytest.raises(SkipVideo, match="no scenes.json"):
        stage.process(video)


def test_settings_must_be_ordered():
    with pytest.raises(ValueError, match="min_s <= target_s <= max_s"):
        ClipsSettings(min_s=60, target_s=30, max_s=120)
