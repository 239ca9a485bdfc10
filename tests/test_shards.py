"""The shard writer: Hub names, schema, zstd row groups, byte-identical re-runs, per-series splits, partial
work dirs, shard rollover, and the ``v60k shard`` command."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from v60k.cli import cli
from v60k.dataset import OutputSettings, table_schema, write_shards
from v60k.dataset.schema import TABLES, load_table_spec
from v60k.dataset.splits import assign_splits
from v60k.testing.sample_workdirs import build_workdir, mark

HUB_NAME = re.compile(r"^data/(videos|utterances|clips|dialogues)/(train|validation|test)-(\d{5})-of-(\d{5})\.parquet$")


def _read(out: Path, table: str) -> list[dict]:
    rows = []
    for path in sorted((out / "data" / table).glob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def test_shards_have_hub_names_schema_docs_and_zstd_row_groups(tmp_path: Path) -> None:
    workdir = build_workdir(tmp_path / "work", videos=6, series_count=3)
    summary = write_shards(workdir, tmp_path / "out", OutputSettings(row_group_rows=5, split_method="rank"))
    assert summary.validation.ok, summary.validation.render()
    assert summary.files and all(HUB_NAME.match(f) for f in summary.files)
    assert {f.split("/")[1] for f in summary.files} == set(TABLES)
    for rel in summary.files:
        parquet = pq.ParquetFile(tmp_path / "out" / rel)
        table = rel.split("/")[1]
        assert parquet.schema_arrow.equals(table_schema(table))
        docs = {f.name: f.metadata[b"doc"].decode() for f in parquet.schema_arrow}
        assert docs == {f.name: f.doc for f in load_table_spec(table).fields}
        assert parquet.schema_arrow.metadata[b"v60k.table"] == table.encode()
        for group in range(parquet.num_row_groups):
            meta = parquet.metadata.row_group(group)
            assert meta.num_rows <= 5
            assert meta.column(0).compression == "ZSTD"
    assert sum(summary.rows["dialogues"].values()) == 6 * 2 * 2
    assert sum(summary.rows["utterances"].values()) == 6 * 2 * 4
    clip = _read(tmp_path / "out", "clips")[0]
    assert len(clip["frames"]) == len(clip["frame_times_s"]) == 3
    assert clip["frames"][0]["bytes"][:2] == b"\xff\xd8"
    utterance = _read(tmp_path / "out", "utterances")[0]
    assert utterance["utterance_id"] == f"{utterance['video_id']}-{utterance['line_id']}"


def test_rerun_gives_byte_identical_shards_and_card(tmp_path: Path) -> None:
    workdir = build_workdir(tmp_path / "work", videos=5)
    settings = OutputSettings(row_group_rows=3, check=False)
    first = write_shards(workdir, tmp_path / "a", settings)
    second = write_shards(workdir, tmp_path / "b", settings)
    stale = tmp_path / "a" / ".staging-99999999" / "data"  # left by a killed writer
    stale.mkdir(parents=True)
    again = write_shards(workdir, tmp_path / "a", settings)  # over the previous output
    assert first.files == second.files == again.files
    for rel in [*first.files, "README.md"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    leftovers = [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]
    assert leftovers == [".v60k-corpus.json"]  # the record of what v60k wrote there


def test_splits_are_per_series_and_never_per_row(tmp_path: Path) -> None:
    workdir = build_workdir(tmp_path / "work", videos=12, series_count=4, clips_per_video=1)
    out = tmp_path / "out"
    write_shards(workdir, out, OutputSettings(split_method="rank", check=False, card=False))
    videos = _read(out, "videos")
    series_splits = defaultdict(set)
    video_split = {}
    for video in videos:
        series_splits[video["series"]].add(video["split"])
        video_split[video["video_id"]] = video["split"]
    assert all(len(splits) == 1 for splits in series_splits.values())
    assert len({s for splits in series_splits.values() for s in splits}) == 3  # rank fills every split
    for table in ("utterances", "clips", "dialogues"):
        for path in sorted((out / "data" / table).glob("*.parquet")):
            file_split = path.name.split("-")[0]
            for row in pq.read_table(path, columns=["video_id", "split"]).to_pylist():
                assert row["split"] == file_split == video_split[row["video_id"]]


def test_hash_splits_are_stable_as_the_corpus_grows() -> None:
    ratios = {"train": 0.8, "validation": 0.1, "test": 0.1}
    small = assign_splits([f"series:{i}" for i in range(50)], ratios, seed=7)
    large = assign_splits([f"series:{i}" for i in range(500)], ratios, seed=7)
    assert all(large[group] == split for group, split in small.items())
    assert assign_splits(small, ratios, seed=8) != small  # the seed matters
    assert set(large.values()) == {"train", "validation", "test"}


def test_small_target_size_rolls_over_into_numbered_shards(tmp_path: Path) -> None:
    workdir = build_workdir(tmp_path / "work", videos=8, series_count=0)
    out = tmp_path / "out"
    summary = write_shards(workdir, out, OutputSettings(shard_size_mb=0.0005, row_group_rows=2,
                                                        splits={"train": 1.0}, check=False))
    dialogues = sorted((out / "data" / "dialogues").glob("*.parquet"))
    assert len(dialogues) > 2
    count = len(dialogues)
    assert [p.name for p in dialogues] == [f"train-{i:05d}-of-{count:05d}.parquet" for i in range(count)]
    ids = [r["dialogue_id"] for r in _read(out, "dialogues")]
    assert ids == sorted(ids) and len(ids) == len(set(ids)) == summary.rows["dialogues"]["train"] == 8 * 2 * 2


def test_videos_missing_later_stages_keep_their_rows(tmp_path: Path) -> None:
    workdir = build_workdir(tmp_path / "work", videos=3, series_count=0)
    mark(workdir, "vid0001", "clips", "failed", "bad_media", "no scenes")
    mark(workdir, "vid0002", "attribute", "failed", "error", "boom")
    mark(workdir, "vid0002", "diarize", "failed", "error", "boom")
    summary = write_shards(workdir, tmp_path / "out", OutputSettings(splits={"train": 1.0}))
    assert summary.validation.ok, summary.validation.render()
    by_video = defaultdict(lambda: defaultdict(list))
    for table in TABLES:
        for row in _read(tmp_path / "out", table):
            by_video[row["video_id"]][table].append(row)
    assert {t: len(r) for t, r in by_video["vid0000"].items()} == {"videos": 1, "utterances": 8, "clips": 2,
                                                                  "dialogues": 4}
    assert len(by_video["vid0001"]["utterances"]) == 8 and not by_video["vid0001"]["clips"]
    assert not by_video["vid0001"]["dialogues"]  # their clips are not in the corpus
    assert any("vid0001" in w and "unknown clip" in w for w in summary.warnings)
    fallback = by_video["vid0002"]["utterances"]  # transcript only: no speaker, no character
    assert len(fallback) == 8 and all(u["speaker"] is None and u["character"] is None for u in fallback)
    assert all(u["line_id"].startswith("T") for u in fallback)


def test_empty_table_still_gets_a_loadable_shard(tmp_path: Path) -> None:
    workdir = build_workdir(tmp_path / "work", videos=2, dialogues_per_clip=0)
    summary = write_shards(workdir, tmp_path / "out", OutputSettings(check=False))
    dialogue_files = [f for f in summary.files if "/dialogues/" in f]
    assert len(dialogue_files) == 1
    table = pq.read_table(tmp_path / "out" / dialogue_files[0])
    assert table.num_rows == 0 and table.schema.equals(table_schema("dialogues"))


def test_cli_shard_writes_card_and_validates(tmp_path: Path) -> None:
    workdir = build_workdir(tmp_path / "work", videos=3)
    config = tmp_path / "pipeline.yaml"
    config.write_text(f"output:\n  dir: {tmp_path / 'cfg-out'}\n  split_method: rank\n  row_group_rows: 4\n")
    result = CliRunner().invoke(cli, ["shard", "--workdir", str(workdir.root), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "OK: 0 error(s)" in result.output
    assert (tmp_path / "cfg-out" / "README.md").exists()
    first = pq.ParquetFile(next((tmp_path / "cfg-out" / "data" / "utterances").glob("*.parquet")))
    assert first.metadata.row_group(0).num_rows <= 4
    result = CliRunner().invoke(cli, ["shard", "--workdir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "no catalog" in result.output


def test_required_value_missing_is_refused(tmp_path: Path) -> None:
    from v60k.dataset.writer import _PartWriter

    writer = _PartWriter(tmp_path, "dialogues", "train", OutputSettings(row_group_rows=1))
    row = {name: None for name in table_schema("dialogues").names}
    row.update(dialogue_id="d1", turns=[])
    try:
        writer.add(row, 1)
    except Exception as exc:
        assert "required field" in str(exc) and "'d1'" in str(exc)
    else:
        raise AssertionError("a row without clip_id was written")
    assert isinstance(table_schema("clips").field("frames").type, pa.ListType)


def test_judge_scores_land_in_the_dialogues_shards(tmp_path: Path) -> None:
    import json

    workdir = build_workdir(tmp_path / "work", videos=3, series_count=0, judged=True)
    summary = write_shards(workdir, tmp_path / "out", OutputSettings(row_group_rows=5))
    assert summary.validation.ok, summary.validation.render()
    rows = {r["dialogue_id"]: r for r in _read(tmp_path / "out", "dialogues")}
    assert len(rows) == 3 * 2 * 2
    scored = [r for i, r in rows.items() if i.endswith("-d00")]
    unreadable = [r for i, r in rows.items() if i.endswith("-d01")]
    for row in scored:
        scores = json.loads(row["judge_scores"])
        assert set(scores) == {"fluency", "tone_consistency", "video_text_relevance"}
        assert all(1 <= s <= 10 for s in scores.values())
        assert abs(row["judge_score"] - sum(scores.values()) / 3) < 0.01 and row["judge_problem"] is None
    for row in unreadable:
        assert row["judge_scores"] is None and row["judge_score"] is None and row["judge_problem"] == "no valid score"
    assert len({r["judge_score"] for r in scored}) > 1  # varies by clip: a filter keeps some, not all
    kept = pq.read_table(tmp_path / "out" / "data" / "dialogues", filters=[("judge_score", ">=", 7)]).num_rows
    assert 0 < kept < len(scored)
    unjudged = write_shards(build_workdir(tmp_path / "plain", videos=1), tmp_path / "plain-out")
    assert all(r["judge_scores"] is None and r["judge_score"] is None for r in _read(tmp_path / "plain-out", "dialogues"))
    assert unjudged.validation.ok
