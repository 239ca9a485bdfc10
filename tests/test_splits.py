"""One split method for every writer: whole series per split, every split filled when there are enough series,
and an empty evaluation split explained (shard warning, validator warning, card note)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from v60k.dataset import OutputSettings, validate, write_shards
from v60k.dataset.splits import assign_splits, plan_splits
from v60k.testing.sample_workdirs import build_workdir

RATIOS = {"train": 0.8, "validation": 0.1, "test": 0.1}


@pytest.mark.parametrize("seed", range(20))
def test_three_videos_of_three_series_fill_every_split(seed: int) -> None:
    plan = plan_splits({"a1": "A", "b1": "B", "c1": "C"}, RATIOS, seed=seed)
    assert sorted(plan.split_of.values()) == ["test", "train", "validation"]
    assert plan.notes == []
    alone = plan_splits({"v1": None, "v2": None, "v3": None}, RATIOS, seed=seed)  # no series: per video
    assert sorted(alone.split_of.values()) == ["test", "train", "validation"]


@pytest.mark.parametrize("seed", range(10))
def test_a_series_is_never_cut_and_train_stays_the_largest(seed: int) -> None:
    series_of = {f"s{s}e{e}": f"S{s}" for s in range(6) for e in range(s + 1)}
    plan = plan_splits(series_of, RATIOS, seed=seed)
    by_series: dict[str, set[str]] = {}
    for video, split in plan.split_of.items():
        by_series.setdefault(series_of[video], set()).add(split)
    assert all(len(splits) == 1 for splits in by_series.values())
    assert {s for splits in by_series.values() for s in splits} == set(RATIOS)


def test_two_episodes_of_one_series_say_why_validation_and_test_are_empty() -> None:
    plan = plan_splits({"ep1": "Friends", "ep2": "Friends"}, RATIOS)
    assert len(set(plan.split_of.values())) == 1
    [note] = plan.notes
    assert "'validation'" in note or "'test'" in note
    assert "never cut across splits" in note and "2 video(s) in 1 series-or-video group(s)" in note


def test_the_method_names_of_earlier_versions_are_the_same_method() -> None:
    series_of = {f"v{i}": f"S{i % 4}" for i in range(9)}
    plans = {m: plan_splits(series_of, RATIOS, seed=3, method=m).split_of for m in ("series", "hash", "rank")}
    assert plans["series"] == plans["hash"] == plans["rank"]
    with pytest.raises(ValueError, match="unknown split method"):
        plan_splits(series_of, RATIOS, method="random")


def test_placement_is_stable_as_a_large_corpus_grows() -> None:
    small = assign_splits([f"series:{i}" for i in range(60)], RATIOS, seed=1)
    large = assign_splits([f"series:{i}" for i in range(600)], RATIOS, seed=1)
    assert all(large[group] == split for group, split in small.items())


def _video_splits(out: Path) -> dict[str, str]:
    rows = []
    for path in sorted((out / "data" / "videos").glob("*.parquet")):
        rows += pq.read_table(path, columns=["video_id", "split"]).to_pylist()
    return {r["video_id"]: r["split"] for r in rows}


def test_run_and_shard_settings_give_the_same_splits(tmp_path: Path) -> None:
    """`v60k run` with the demo config (split_method: rank) and `v60k shard` with the default agree."""
    workdir = build_workdir(tmp_path / "work", videos=5, series_count=3, clips_per_video=1)
    write_shards(workdir, tmp_path / "run", OutputSettings(split_method="rank", check=False, card=False))
    write_shards(workdir, tmp_path / "shard", OutputSettings(check=False, card=False))
    splits = _video_splits(tmp_path / "run")
    assert splits == _video_splits(tmp_path / "shard")
    assert set(splits.values()) == set(RATIOS)


def test_an_empty_evaluation_split_is_a_warning_in_shard_and_validate_and_a_note_in_the_card(tmp_path: Path) -> None:
    workdir = build_workdir(tmp_path / "work", videos=2, series_count=1, clips_per_video=1)
    out = tmp_path / "out"
    summary = write_shards(workdir, out, OutputSettings())
    assert any("are empty" in w and "never cut across splits" in w for w in summary.warnings)
    report = validate(out)
    assert report.ok, report.render()
    empty = [issue for issue in report.warnings if issue.check == "empty_split"]
    assert {i.message.split("'")[1] for i in empty} == {"validation", "test"}
    card = (out / "README.md").read_text()
    assert "validation and test split(s) hold no videos" in card
