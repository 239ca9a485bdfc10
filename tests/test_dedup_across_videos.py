"""Near-duplicate LLM dialogues and summaries across videos: the later copy is left out of the shards with its
reason, distinct ones and raw-lines repeats stay, and the setting turns the pass off."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner

from v60k.cli import cli
from v60k.core.workdir import WorkDir, read_json, write_json
from v60k.dataset import OutputSettings, write_shards
from v60k.testing.sample_workdirs import build_workdir

A, B = "vid0000", "vid0001"


def _prose(seed: int, words: int = 40) -> str:
    """A text of letter-only pseudo-words, different for every seed (word 3-grams share nothing by chance)."""
    rng = random.Random(seed)
    return " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6)) for _ in range(words)) + "."


def _llm_corpus(root: Path, generation_type: str = "llm") -> WorkDir:
    """4 videos whose dialogues and summaries are all ``generation_type`` with distinct texts."""
    workdir = build_workdir(root, videos=4)
    for v in range(4):
        path = workdir.paths(f"vid{v:04d}").generation_json
        doc = read_json(path)
        for d, dialogue in enumerate(doc["dialogues"]):
            dialogue["generation_type"] = generation_type
            for t, turn in enumerate(dialogue["turns"]):
                turn["text"] = _prose(v * 1000 + d * 10 + t)
        for c, summary in enumerate(doc["summaries"].values()):
            summary.update(generation_type="llm", text=_prose(v * 1000 + 500 + c))
        write_json(path, doc)
    return workdir


def _copy_dialogue(workdir: WorkDir, source: str, target: str, index: int = 0, edit: bool = True) -> tuple[str, str]:
    """Make ``target``'s dialogue ``index`` a near copy of ``source``'s (one word changed); their ids."""
    src = read_json(workdir.paths(source).generation_json)["dialogues"][index]
    path = workdir.paths(target).generation_json
    doc = read_json(path)
    copy = doc["dialogues"][index]
    copy["character"] = src["character"]
    copy["turns"] = [dict(turn) for turn in src["turns"]]
    if edit:
        copy["turns"][-1]["text"] = copy["turns"][-1]["text"].replace(".", " indeed.")
    write_json(path, doc)
    return src["dialogue_id"], copy["dialogue_id"]


def _dialogue_ids(out: Path) -> set[str]:
    return {r["dialogue_id"] for p in (out / "data" / "dialogues").glob("*.parquet")
            for r in pq.read_table(p, columns=["dialogue_id"]).to_pylist()}


def test_a_later_videos_near_copy_is_dropped_with_its_reason(tmp_path: Path) -> None:
    workdir = _llm_corpus(tmp_path / "work")
    total = sum(len(read_json(workdir.paths(f"vid{v:04d}").generation_json)["dialogues"]) for v in range(4))
    kept_id, copy_id = _copy_dialogue(workdir, A, B)
    out = tmp_path / "out"
    summary = write_shards(workdir, out)
    assert summary.validation.ok, summary.validation.render()
    ids = _dialogue_ids(out)
    assert kept_id in ids and copy_id not in ids
    assert len(ids) == total - 1
    assert summary.dropped == {"dialogues": {"near_duplicate": 1}}
    assert summary.near_duplicates == [{"kind": "dialogues", "id": copy_id, "video_id": B,
                                        "reason": f"near_duplicate: of {kept_id}"}]
    assert "1 near-duplicate dialogues across videos dropped" in (out / "README.md").read_text()


def test_distinct_dialogues_are_all_kept(tmp_path: Path) -> None:
    workdir = _llm_corpus(tmp_path / "work")
    total = sum(len(read_json(workdir.paths(f"vid{v:04d}").generation_json)["dialogues"]) for v in range(4))
    summary = write_shards(workdir, tmp_path / "out")
    assert len(_dialogue_ids(tmp_path / "out")) == total
    assert summary.dropped == {} and summary.near_duplicates == []
    assert "near-duplicate" not in (tmp_path / "out" / "README.md").read_text()


def test_raw_lines_repeats_are_kept(tmp_path: Path) -> None:
    workdir = _llm_corpus(tmp_path / "work", generation_type="raw_lines")
    kept_id, copy_id = _copy_dialogue(workdir, A, B, edit=False)
    summary = write_shards(workdir, tmp_path / "out")
    assert {kept_id, copy_id} <= _dialogue_ids(tmp_path / "out")
    assert summary.near_duplicates == []


def test_the_setting_off_keeps_everything(tmp_path: Path) -> None:
    workdir = _llm_corpus(tmp_path / "work")
    kept_id, copy_id = _copy_dialogue(workdir, A, B)
    summary = write_shards(workdir, tmp_path / "out", OutputSettings(dedup_across_videos=False))
    assert {kept_id, copy_id} <= _dialogue_ids(tmp_path / "out")
    assert summary.near_duplicates == []


def test_a_near_copy_summary_is_blanked_and_the_clip_kept(tmp_path: Path) -> None:
    workdir = _llm_corpus(tmp_path / "work")
    first = read_json(workdir.paths(A).generation_json)["summaries"][f"{A}-c000"]["text"]
    path = workdir.paths(B).generation_json
    doc = read_json(path)
    doc["summaries"][f"{B}-c001"]["text"] = first
    write_json(path, doc)
    summary = write_shards(workdir, tmp_path / "out")
    assert summary.validation.ok, summary.validation.render()
    clips = {r["clip_id"]: r for p in (tmp_path / "out" / "data" / "clips").glob("*.parquet")
             for r in pq.read_table(p, columns=["clip_id", "summary", "summary_type"]).to_pylist()}
    assert clips[f"{A}-c000"]["summary"] == first
    assert clips[f"{B}-c001"]["summary"] is None and clips[f"{B}-c001"]["summary_type"] is None
    assert summary.near_duplicates == [{"kind": "summaries", "id": f"{B}-c001", "video_id": B,
                                        "reason": f"near_duplicate: of {A}-c000"}]


def test_shard_command_prints_the_drops(tmp_path: Path) -> None:
    workdir = _llm_corpus(tmp_path / "work")
    kept_id, copy_id = _copy_dialogue(workdir, A, B)
    result = CliRunner().invoke(cli, ["shard", "--workdir", str(workdir.root), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "near-duplicates across videos dropped: dialogues 1" in result.output
    assert f"dialogues {copy_id}: near_duplicate: of {kept_id}" in result.output
