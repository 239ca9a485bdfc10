"""The adaptive temporal sampler: budget, scene coverage, motion, near-duplicates, reuse of scenes.json."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from v60k.core.documents import Motion
from v60k.media import frame_sampler
from v60k.media.frame_sampler import SamplerSettings, frame_budget, hamming, plan
from v60k.media.streams import MediaError, probe
from v60k.testing.sample_episodes import build_scene_video

SCENE_LENGTHS = [3.0, 5.0, 2.0, 6.0, 4.0]


@pytest.fixture(scope="module")
def scene_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("sampler") / "scenes.mp4"
    info = build_scene_video(path, SCENE_LENGTHS, width=320, height=180, fps=25, audio=False)
    return path, info


def scene_dicts(info: dict) -> list[dict]:
    return [{"index": i, "start_s": s["start_s"], "end_s": s["end_s"]} for i, s in enumerate(info["scenes"])]


def synthetic_motion(duration_s: float, fps: float = 5.0, *, score=lambda t: 1.0, hash_of=None) -> Motion:
    """A made-up profile: distinct hashes unless ``hash_of`` says otherwise."""
    times = [round(k / fps, 4) for k in range(int(duration_s * fps))]
    hashes = [hash_of(t) if hash_of else random.Random(k).getrandbits(64) for k, t in enumerate(times)]
    return Motion(times_s=times, scores=[score(t) for t in times], dhash=hashes, fps=fps)


def test_budget_denser_for_short_clips_and_capped() -> None:
    short, medium, long = frame_budget(5), frame_budget(60), frame_budget(3600)
    assert short < medium <= long == 32
    assert short / 5 > medium / 60 > long / 3600  # frames per second fall with length
    assert frame_budget(3600, 8) == 8 and frame_budget(1.0, 16) >= 1
    assert frame_budget(0.0) == 0


def test_plan_one_frame_per_scene_and_temporal_order() -> None:
    motion = synthetic_motion(20.0)
    scenes = [
        {"index": i, "start_s": s, "end_s": e}
        for i, (s, e) in enumerate([(0, 3), (3, 8), (8, 10), (10, 16), (16, 20)])
    ]
    chosen = plan(0.0, 20.0, 8, motion=motion, scenes=scenes)
    times = [p.t_s for p in chosen]
    assert times == sorted(times) and len(chosen) == 8
    assert {p.scene_index for p in chosen} == {0, 1, 2, 3, 4}
    for p in chosen:  # frames keep away from the cuts
        scene = scenes[p.scene_index]
        assert scene["start_s"] + 0.19 <= p.t_s < scene["end_s"] - 0.19


def test_plan_small_budget_prefers_longest_scenes() -> None:
    motion = synthetic_motion(20.0)
    scenes = [
        {"index": i, "start_s": s, "end_s": e}
        for i, (s, e) in enumerate([(0, 3), (3, 8), (8, 10), (10, 16), (16, 20)])
    ]
    chosen = plan(0.0, 20.0, 2, motion=motion, scenes=scenes)
    assert sorted(p.scene_index for p in chosen) == [1, 3]


def test_more_frames_in_high_motion_span() -> None:
    # one scene: calm for 0-10 s, busy for 10-20 s
    motion = synthetic_motion(20.0, score=lambda t: 1.0 if t < 10 else 20.0)
    one_scene = [{"index": 0, "start_s": 0.0, "end_s": 20.0}]
    chosen = plan(0.0, 20.0, None, motion=motion, scenes=one_scene)
    busy = sum(1 for p in chosen if p.t_s >= 10)
    assert len(chosen) == frame_budget(20.0) == 9
    assert busy >= 6, [p.t_s for p in chosen]
    uniform = plan(
        0.0, 20.0, None, motion=motion, scenes=one_scene, settings=SamplerSettings(motion_weight=0.0)
    )
    assert 4 <= sum(1 for p in uniform if p.t_s >= 10) <= 5  # weight 0: even in time


def test_near_duplicate_spans_give_no_extra_frames() -> None:
    # a static first half (one hash) and a varied second half
    def hash_of(t: float) -> int:
        return 0x0F0F0F0F0F0F0F0F if t < 10 else random.Random(round(t * 5)).getrandbits(64)

    motion = synthetic_motion(20.0, hash_of=hash_of)
    chosen = plan(0.0, 20.0, 12, motion=motion, scenes=[{"index": 0, "start_s": 0.0, "end_s": 20.0}])
    assert sum(1 for p in chosen if p.t_s < 10) == 1
    hashes = {round(t, 4): h for t, h in zip(motion.times_s, motion.dhash)}
    picked = [hashes[round(p.t_s, 4)] for p in chosen]
    assert all(hamming(a, b) > 5 for i, a in enumerate(picked) for b in picked[i + 1 :])
    # an entirely static clip yields a single frame, whatever the budget
    still = synthetic_motion(20.0, hash_of=lambda t: 0x1234)
    assert len(plan(0.0, 20.0, 12, motion=still)) == 1


def test_plan_is_deterministic_and_restricted_to_the_clip() -> None:
    motion = synthetic_motion(30.0, score=lambda t: (t * 7) % 5)
    first = plan(5.0, 25.0, 10, motion=motion)
    assert first == plan(5.0, 25.0, 10, motion=Motion.from_dict(motion.to_dict()))
    assert all(5.0 <= p.t_s < 25.0 for p in first)
    assert plan(10.0, 10.0, 5, motion=motion) == []


def test_motion_profile_with_mismatched_lengths_is_explained() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        Motion.from_dict({"times_s": [0.0, 0.2], "scores": [0.0], "dhash": ["00"]})


def test_analyse_finds_the_cuts(scene_video: tuple[Path, dict]) -> None:
    path, info = scene_video
    motion = frame_sampler.analyse(path, 0.0, info["duration_s"])
    assert len(motion.times_s) == pytest.approx(info["duration_s"] * 5, abs=2)
    chosen = plan(0.0, info["duration_s"], 10, motion=motion)  # no scene list: cuts from the profile
    found = {p.scene_index for p in chosen}
    assert len(found) >= len(SCENE_LENGTHS)
    # every real scene got a frame
    covered = {i for i, s in enumerate(info["scenes"]) for p in chosen if s["start_s"] <= p.t_s < s["end_s"]}
    assert covered == set(range(len(SCENE_LENGTHS)))


def test_sample_decodes_chosen_frames_as_jpeg(scene_video: tuple[Path, dict], tmp_path: Path) -> None:
    path, info = scene_video
    frames = frame_sampler.sample(path, 3.0, 16.0, 6, scenes=scene_dicts(info), width=160)
    times = [t for t, _ in frames]
    assert times == sorted(times) and 3 <= len(frames) <= 6 and all(3.0 <= t < 16.0 for t in times)
    for _, jpeg in frames:
        assert jpeg[:2] == b"\xff\xd8"
    out = tmp_path / "f.jpg"
    out.write_bytes(frames[0][1])
    assert probe(out).width == 160
    # scenes 1, 2, 3 lie in [3, 16): all covered
    assert {i for i, s in enumerate(info["scenes"]) for t in times if s["start_s"] <= t < s["end_s"]} == {
        1,
        2,
        3,
    }


def test_sample_reuses_a_covering_profile(
    scene_video: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, info = scene_video
    motion = frame_sampler.analyse(path, 0.0, info["duration_s"])
    calls: list[tuple] = []
    monkeypatch.setattr(frame_sampler, "analyse", lambda *a, **k: calls.append(a) or motion)
    frame_sampler.sample(path, 0.0, 5.0, 2, motion=motion.to_dict(), width=64)
    assert calls == []
    frame_sampler.sample(path, 0.0, 5.0, 2, motion=motion.span(0.0, 1.0), width=64)  # does not cover: analysed
    assert len(calls) == 1


def test_sample_of_a_file_without_video_is_a_media_error(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-video.mp4"
    bogus.write_bytes(b"\x00" * 1000)
    with pytest.raises(MediaError):
        frame_sampler.sample(bogus, 0.0, 5.0)


def test_grouped_grabs_match_single_grabs(
    scene_video: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, info = scene_video
    keys, fps = frame_sampler.keyframe_times(path, 0.0, info["duration_s"])
    assert fps == 25.0
    assert keys and keys[0] == 0.0 and keys == sorted(keys)
    assert len(keys) >= 2, keys
    spread = [0.4, 1.4, 2.6, 5.2, 9.0, 12.8, 17.0]  # decoded in one run
    sparse = [keys[0] + 0.2, keys[0] + 0.6, keys[1] + 0.2, keys[1] + 0.6]  # one run per keyframe interval
    singles = {t: frame_sampler.grab_frame(path, t, width=96) for t in spread + sparse}

    def no_single_grabs(*args: object, **kwargs: object) -> bytes:
        raise MediaError("the grouped run should have decoded this frame", "no_frame")

    monkeypatch.setattr(frame_sampler, "grab_frame", no_single_grabs)
    for times in (spread, sparse):
        grouped = frame_sampler.grab_frames(path, times, width=96)
        assert sorted(grouped) == times
        for t in times:
            assert isinstance(grouped[t], bytes), grouped[t]
            assert hamming(frame_sampler.dhash_of_jpeg(grouped[t]), frame_sampler.dhash_of_jpeg(singles[t])) <= 2, t


def test_a_scene_that_looks_like_another_still_gets_its_frame() -> None:
    # scenes 0 and 2 share one (static) look, as a returning camera angle does; scene 1 differs
    def hash_of(t: float) -> int:
        return 0xAAAA0000FFFF5555 if t < 5 or t >= 10 else 0x0123456789ABCDEF

    motion = synthetic_motion(15.0, hash_of=hash_of)
    scenes = [{"index": i, "start_s": 5.0 * i, "end_s": 5.0 * (i + 1)} for i in range(3)]
    chosen = plan(0.0, 15.0, None, motion=motion, scenes=scenes)
    assert [p.scene_index for p in chosen] == [0, 1, 2]  # one each; no second frame of a static look


def test_sample_reuses_the_profiles_keyframes(scene_video: tuple[Path, dict], monkeypatch) -> None:
    """With the scenes stage's profile (keyframes included) the sampler plans its decoding runs without
    probing the file, and grabs the very same frames."""
    from v60k.media.shot_detection import detect_shots

    path, info = scene_video
    motion = detect_shots(path, 320, 180).motion
    assert motion.keyframes_s
    probed = frame_sampler.sample(path, 2.0, 17.0, 8, motion=motion.model_copy(update={"keyframes_s": None}))

    def no_probe(*args, **kwargs):
        raise AssertionError("the keyframes were known")

    monkeypatch.setattr(frame_sampler, "keyframe_times", no_probe)
    reused = frame_sampler.sample(path, 2.0, 17.0, 8, motion=motion)
    assert len(reused) >= 4 and reused == probed
