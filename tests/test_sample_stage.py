"""The sample stage: frames/<clip_id>/<t_ms>.jpg and frames.json for every clip of clips.json."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from v60k.core.stage import SkipVideo, StageError, Video
from v60k.core.workdir import read_json, write_json
from v60k.media import frame_sampler
from v60k.stages import stage_class
from v60k.stages.sample import Sample, SampleSettings, frame_name
from v60k.testing.sample_episodes import build_scene_video

SCENE_LENGTHS = [3.0, 4.0, 3.0, 5.0]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("stage") / "source.mp4"
    return path, build_scene_video(path, SCENE_LENGTHS, width=320, height=180, fps=25, audio=False)


def make_video(tmp_path: Path, rendered: tuple[Path, dict], *, scenes_json: bool = True) -> Video:
    path, info = rendered
    video_dir = tmp_path / "videos" / "ep1"
    video_dir.mkdir(parents=True)
    shutil.copy(path, video_dir / "source.mp4")
    scenes = [
        {"index": i, "start_s": s["start_s"], "end_s": s["end_s"]} for i, s in enumerate(info["scenes"])
    ]
    if scenes_json:
        motion = frame_sampler.analyse(path, 0.0, info["duration_s"])
        write_json(video_dir / "scenes.json", {"scenes": scenes, "motion": motion.to_dict()})
    clips = [
        {
            "clip_id": "ep1-c000",
            "index": 0,
            "start_s": 0.0,
            "end_s": 7.0,
            "scene_indices": [0, 1],
            "line_ids": [],
        },
        {
            "clip_id": "ep1-c001",
            "index": 1,
            "start_s": 7.0,
            "end_s": 15.0,
            "scene_indices": [2, 3],
            "line_ids": [],
        },
    ]
    write_json(video_dir / "clips.json", {"clips": clips})
    return Video(video_id="ep1", source_url="file://x", dir=video_dir)


def test_registered_after_clips() -> None:
    assert stage_class("sample") is Sample and Sample.requires == ("download", "scenes", "clips")


def test_frames_for_every_clip_in_temporal_order(tmp_path: Path, rendered: tuple[Path, dict]) -> None:
    video = make_video(tmp_path, rendered)
    result = Sample(SampleSettings(width=96, max_frames=6)).process(video)
    doc = read_json(video.dir / "frames.json")
    assert set(doc["clips"]) == {"ep1-c000", "ep1-c001"}
    assert result.metrics["motion_reused"] is True and doc["settings"]["width"] == 96
    for clip_id, (lo, hi), scenes in (("ep1-c000", (0.0, 7.0), {0, 1}), ("ep1-c001", (7.0, 15.0), {2, 3})):
        frames = doc["clips"][clip_id]
        times = [f["t_s"] for f in frames]
        assert times == sorted(times) and 2 <= len(frames) <= 6 and all(lo <= t < hi for t in times)
        assert {f["scene_index"] for f in frames} == scenes  # at least one frame per scene
        for frame in frames:
            assert frame["path"] == f"frames/{clip_id}/{frame_name(frame['t_s'])}"
            assert (video.dir / frame["path"]).read_bytes()[:2] == b"\xff\xd8"
    assert result.metrics["frames"] == sum(len(v) for v in doc["clips"].values())


def test_rerun_replaces_old_frames_and_analyses_without_scenes_json(
    tmp_path: Path, rendered: tuple[Path, dict]
) -> None:
    video = make_video(tmp_path, rendered, scenes_json=False)
    stale = video.dir / "frames" / "ep1-c000" / "999999.jpg"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    result = Sample(SampleSettings(width=64, max_frames=4)).process(video)
    assert not stale.exists() and result.metrics["motion_reused"] is False
    doc = read_json(video.dir / "frames.json")
    assert all(1 <= len(frames) <= 4 for frames in doc["clips"].values())
    names = sorted(p.name for p in (video.dir / "frames" / "ep1-c000").iterdir())
    assert names == [Path(f["path"]).name for f in doc["clips"]["ep1-c000"]]


def test_missing_or_broken_inputs_are_explained(tmp_path: Path, rendered: tuple[Path, dict]) -> None:
    video = make_video(tmp_path, rendered)
    (video.dir / "clips.json").unlink()
    with pytest.raises(SkipVideo, match="no clips.json"):
        Sample().process(video)
    write_json(video.dir / "clips.json", {"clips": []})
    with pytest.raises(SkipVideo, match="no clips"):
        Sample().process(video)
    write_json(video.dir / "clips.json", {"clips": [{"clip_id": "c", "start_s": 0.0, "end_s": 2.0}]})
    (video.dir / "source.mp4").write_bytes(b"\x00" * 512)  # undecodable
    (video.dir / "scenes.json").unlink()
    with pytest.raises(StageError, match="no clip could be sampled") as info:
        Sample().process(video)
    assert info.value.error_class == "decode_failed"
