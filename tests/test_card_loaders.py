"""The dataset card's Hub header, and the shards as users read them: ``datasets.load_dataset`` for every
config (frames decode as images), DuckDB and Polars."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from v60k.dataset import OutputSettings, write_shards
from v60k.dataset.card import hub_license, read_card_header, size_category
from v60k.dataset.schema import TABLES
from v60k.testing.sample_workdirs import build_workdir


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    workdir = build_workdir(tmp_path / "work", videos=6, series_count=3, frames_per_clip=2, judged=True)
    out = tmp_path / "corpus"
    summary = write_shards(workdir, out, OutputSettings(split_method="rank", row_group_rows=5))
    assert summary.validation.ok, summary.validation.render()
    return out


def _rows(corpus: Path, table: str, split: str | None = None) -> int:
    pattern = f"{split}-*.parquet" if split else "*.parquet"
    return sum(pq.ParquetFile(p).metadata.num_rows for p in (corpus / "data" / table).glob(pattern))


def test_card_header_has_one_config_per_table(corpus: Path) -> None:
    header = read_card_header(corpus / "README.md")
    assert header["license"] == "cc-by-4.0"
    assert header["language"] == ["en"]
    assert header["size_categories"] == ["n<1K"]
    assert "text-generation" in header["task_categories"]
    configs = {c["config_name"]: c for c in header["configs"]}
    assert set(configs) == set(TABLES) and configs["dialogues"].get("default") is True
    for name, config in configs.items():
        assert [d["split"] for d in config["data_files"]] == ["train", "validation", "test"]
        for entry in config["data_files"]:
            matched = glob.glob(str(corpus / entry["path"]))
            assert matched and all(f"/data/{name}/" in m for m in matched)
    text = (corpus / "README.md").read_text()
    assert f"videos: 6 ({round(6 * 60 / 3600, 3)} hours)" in text
    assert "| dialogues | " in text and "`turns`" in text


def test_license_and_size_helpers() -> None:
    assert hub_license(["cc-by-4.0", "CC-BY-4.0"]) == "cc-by-4.0"
    assert hub_license(["Creative Commons Attribution license (reuse allowed)"]) == "cc-by-3.0"
    assert hub_license(["cc-by-4.0", "mit"]) == "other"
    assert hub_license([None]) == "other"
    assert size_category(999) == "n<1K" and size_category(1000) == "1K<n<10K" and size_category(2_500_000) == "1M<n<10M"


def test_datasets_loads_every_config(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    import datasets
    from PIL import Image

    cache = str(tmp_path / "hf-datasets")
    for table in TABLES:
        loaded = datasets.load_dataset(str(corpus), table, cache_dir=cache)
        assert set(loaded) == {"train", "validation", "test"}
        for split, part in loaded.items():
            assert part.num_rows == _rows(corpus, table, split)
    dialogues = datasets.load_dataset(str(corpus), "dialogues", split="test", cache_dir=cache)
    first = dialogues[0]
    assert first["turns"][0]["role"] == "user" and first["split"] == "test"
    assert dialogues.features["judge_score"].dtype == "float64" and dialogues.features["judge_scores"].dtype == "string"
    scored = dialogues.filter(lambda d: d["judge_score"] is not None)
    assert 0 < scored.num_rows < dialogues.num_rows
    assert all(1 <= s <= 10 for d in scored for s in json.loads(d["judge_scores"]).values())
    clips = datasets.load_dataset(str(corpus), "clips", split="train", cache_dir=cache)
    assert clips.features["frames"].feature.__class__.__name__ == "Image"
    frame = clips[0]["frames"][0]
    assert isinstance(frame, Image.Image) and frame.size == (32, 24)
    default = datasets.load_dataset(str(corpus), split="train", cache_dir=cache)  # the default config
    assert "dialogue_id" in default.column_names


def test_duckdb_and_polars_read_the_shards(corpus: Path) -> None:
    import duckdb
    import polars as pl

    data = corpus / "data"
    con = duckdb.connect()
    total = con.execute(f"SELECT count(*) FROM '{data}/dialogues/*.parquet'").fetchone()[0]
    assert total == _rows(corpus, "dialogues") == 6 * 2 * 2
    joined = con.execute(
        f"SELECT count(*) FROM '{data}/dialogues/*.parquet' d JOIN '{data}/clips/*.parquet' c USING (clip_id)"
        " WHERE d.video_id = c.video_id AND d.split = c.split").fetchone()[0]
    assert joined == total
    good = con.execute(f"SELECT count(*) FROM '{data}/dialogues/*.parquet' WHERE judge_score >= 7").fetchone()[0]
    judged = con.execute(f"SELECT count(*) FROM '{data}/dialogues/*.parquet' WHERE judge_score IS NOT NULL").fetchone()[0]
    assert 0 < good < judged < total
    fluent = con.execute(f"SELECT count(*) FROM '{data}/dialogues/*.parquet' "
                         "WHERE CAST(json_extract(judge_scores, '$.fluency') AS INTEGER) >= 7").fetchone()[0]
    assert good <= fluent <= judged
    per_split = dict(con.execute(f"SELECT split, count(*) FROM '{data}/videos/*.parquet' GROUP BY split").fetchall())
    assert per_split == {s: _rows(corpus, "videos", s) for s in ("train", "validation", "test")}

    utterances = pl.scan_parquet(str(data / "utterances" / "*.parquet"))
    by_character = utterances.group_by("character").agg(pl.len().alias("n")).collect()
    assert by_character["n"].sum() == _rows(corpus, "utterances")
    words = utterances.select(pl.col("words").list.len().sum()).collect().item()
    assert words == _rows(corpus, "utterances") * 3
    frames = pl.read_parquet(str(data / "clips" / "*.parquet")).select(pl.col("frames").list.len()).to_series()
    assert frames.to_list() == [2] * _rows(corpus, "clips")


def test_the_evaluation_reads_the_test_split(corpus: Path) -> None:
    from v60k.roleplay.evaluate import load_test_items

    items = load_test_items(corpus, split="test", max_frames=1)
    test_dialogues = _rows(corpus, "dialogues", "test")
    assert test_dialogues and len(items) == test_dialogues * 2  # two character turns answer a user turn each
    first = items[0]
    assert first.profile.summary.startswith("In clip") and len(first.profile.frames) == 1
    assert first.profile.frames[0][1][:2] == b"\xff\xd8"
