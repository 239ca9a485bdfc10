"""``validate`` / ``v60k validate``: a good corpus passes (also as a bare downloaded folder); each kind of bad
input gives a clear message naming the file and the row group / row, and exit code 1."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from v60k.cli import cli
from v60k.dataset import OutputSettings, validate, write_shards
from v60k.testing.sample_workdirs import build_workdir


def make_corpus(root: Path) -> Path:
    """A small valid corpus, all in the train split (one file per table)."""
    workdir = build_workdir(root / "work", videos=3, judged=True)
    out = root / "corpus"
    write_shards(workdir, out, OutputSettings(splits={"train": 1.0}, row_group_rows=4, check=False))
    return out


def shard(corpus: Path, table: str) -> Path:
    return next((corpus / "data" / table).glob("*.parquet"))


def rewrite_rows(path: Path, change: Callable[[list[dict]], None]) -> None:
    parquet = pq.ParquetFile(path)
    rows = parquet.read().to_pylist()
    change(rows)
    # as another writer would: every field nullable (so that a missing required value can be written)
    schema = pa.schema([f.with_nullable(True) for f in parquet.schema_arrow], metadata=parquet.schema_arrow.metadata)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=4)


def _missing_column(corpus: Path) -> tuple[str, str]:
    path = shard(corpus, "dialogues")
    pq.write_table(pq.read_table(path).drop_columns(["character"]), path)
    return path.relative_to(corpus).as_posix(), "missing column 'character'"


def _wrong_type(corpus: Path) -> tuple[str, str]:
    path = shard(corpus, "utterances")
    table = pq.read_table(path)
    index = table.schema.get_field_index("start_s")
    table = table.set_column(index, "start_s", pc.cast(table.column("start_s"), pa.string()))
    pq.write_table(table, path)
    return path.relative_to(corpus).as_posix(), "column 'start_s' is string, expected double"


def _dangling_reference(corpus: Path) -> tuple[str, str]:
    path = shard(corpus, "dialogues")
    rewrite_rows(path, lambda rows: rows[5].update(clip_id="vid0000-c999"))  # row group 1, row 1
    return path.relative_to(corpus).as_posix() + " [row group 1, row 1]", "clip_id 'vid0000-c999' is not in the clips table"


def _truncated(corpus: Path) -> tuple[str, str]:
    path = shard(corpus, "clips")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path.relative_to(corpus).as_posix(), "cannot read as Parquet"


def _wrong_folder(corpus: Path) -> tuple[str, str]:
    target = shard(corpus, "dialogues")
    shutil.copyfile(shard(corpus, "clips"), target)
    return target.relative_to(corpus).as_posix(), "this is a shard of table 'clips', found in data/dialogues/"


def _judge_out_of_range(corpus: Path) -> tuple[str, str]:
    path = shard(corpus, "dialogues")
    rewrite_rows(path, lambda rows: rows[5].update(judge_scores='{"fluency":11,"tone_consistency":7}', judge_score=9.0))
    return path.relative_to(corpus).as_posix() + " [row group 1, row 1]", "judge_scores outside 1-10: {'fluency': 11}"


BAD_INPUTS: dict[str, Callable[[Path], tuple[str, str]]] = {
    "missing_column": _missing_column,
    "wrong_type": _wrong_type,
    "dangling_reference": _dangling_reference,
    "truncated": _truncated,
    "wrong_folder": _wrong_folder,
    "judge_out_of_range": _judge_out_of_range,
}


def test_good_corpus_passes_also_as_a_downloaded_folder(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    downloaded = tmp_path / "downloaded"
    shutil.copytree(corpus / "data", downloaded / "data")
    shutil.copy(corpus / "README.md", downloaded / "README.md")
    shutil.rmtree(tmp_path / "work")
    report = validate(downloaded)
    assert report.ok, report.render()
    assert report.rows["dialogues"] == {"train": 12} and report.rows["videos"] == {"train": 3}
    result = CliRunner().invoke(cli, ["validate", str(downloaded)])
    assert result.exit_code == 0 and "OK: 0 error(s)" in result.output


def _as_older_schema(path: Path, version: bytes, drop: list[str]) -> None:
    """The shard as a writer of schema ``version`` would have left it: without ``drop``."""
    table = pq.read_table(path).drop_columns(drop)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"v60k.schema_version": version}), path)


def test_a_shard_of_an_older_schema_validates_with_a_warning(tmp_path: Path) -> None:
    """Dialogues shards written before the judge columns (schema 1.0) still validate, rows checked; the same
    columns missing from a 1.1 shard are errors."""
    corpus = make_corpus(tmp_path)
    path = shard(corpus, "dialogues")
    judge = ["judge_scores", "judge_score", "judge_problem"]
    _as_older_schema(path, b"1.0", judge)
    report = validate(corpus)
    assert report.ok, report.render()
    older = [w for w in report.warnings if w.check == "older_schema"]
    assert len(older) == 1 and "judge_score" in older[0].message and "1.0" in older[0].message
    assert report.rows["dialogues"] == {"train": 12}
    rewrite_rows(path, lambda rows: rows[5].update(clip_id="vid0000-c999"))  # row checks still run
    assert any(e.check == "reference" or "vid0000-c999" in e.message for e in validate(corpus).errors)
    _as_older_schema(path, b"1.1", [])
    assert sum("missing column 'judge_score'" in e.message for e in validate(corpus).errors) == 1


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_is_named_with_file_and_row(tmp_path: Path, kind: str) -> None:
    corpus = make_corpus(tmp_path)
    where, message = BAD_INPUTS[kind](corpus)
    result = CliRunner().invoke(cli, ["validate", str(corpus)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("ERROR")]
    assert any(where in line and message in line for line in lines), result.output
    assert "FAILED" in result.output


def _edit(table: str, index: int, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(corpus: Path) -> None:
        rewrite_rows(shard(corpus, table), lambda rows: change(rows[index]))
    return apply


def _set_turns(row: dict, turns: list[dict]) -> None:
    row["turns"] = turns


MEANING = {
    "start_after_end": (_edit("utterances", 2, lambda r: r.update(start_s=r["end_s"] + 1)), "is not before end_s"),
    "outside_video": (_edit("clips", 1, lambda r: r.update(end_s=999.0)), "outside the video"),
    "word_outside_line": (_edit("utterances", 3, lambda r: r["words"][0].update(start_s=r["start_s"] - 5)),
                          "is not inside its line"),
    "unknown_character": (_edit("utterances", 0, lambda r: r.update(character="Chandler")), "not in the video's cast"),
    "split_leakage": (_edit("clips", 0, lambda r: r.update(split="test")), "split 'test' in a 'train' shard"),
    "not_alternating": (_edit("dialogues", 0, lambda r: _set_turns(r, [{"role": "user", "speaker": "A", "text": "hi"},
                                                                        {"role": "user", "speaker": "A", "text": "yo"}])),
                        "must alternate"),
    "empty_turns": (_edit("dialogues", 1, lambda r: _set_turns(r, [])), "no turns"),
    "duplicate_id": (_edit("dialogues", 1, lambda r: r.update(dialogue_id="vid0000-c000-d00")), "duplicate dialogue_id"),
    "judge_mean_out_of_range": (_edit("dialogues", 2, lambda r: r.update(judge_score=0.5)),
                                "judge_score 0.5 is outside 1-10"),
    "judge_scores_not_json": (_edit("dialogues", 2, lambda r: r.update(judge_scores="8")), "not a JSON object"),
    "required_null": (_edit("utterances", 4, lambda r: r.update(text=None)), "required value(s) missing: text"),
    "video_unknown": (_edit("utterances", 5, lambda r: r.update(video_id="ghost", utterance_id="ghost-L0001")),
                      "video_id 'ghost' is not in the videos table"),
}


@pytest.mark.parametrize("kind", sorted(MEANING))
def test_meaning_checks(tmp_path: Path, kind: str) -> None:
    corpus = make_corpus(tmp_path)
    change, message = MEANING[kind]
    change(corpus)
    report = validate(corpus)
    assert not report.ok
    matching = [issue for issue in report.errors if message in issue.message]
    assert matching, report.render()
    assert matching[0].file and matching[0].file.startswith("data/") and matching[0].row is not None


def test_series_in_two_splits_and_broken_numbering(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    videos = shard(corpus, "videos")
    table = pq.read_table(videos)
    rows = table.to_pylist()
    moved = [r for r in rows if r["series"] == rows[0]["series"]][-1]
    moved["split"] = "test"
    keep = [r for r in rows if r is not moved]
    pq.write_table(pa.Table.from_pylist(keep, schema=table.schema), videos)
    pq.write_table(pa.Table.from_pylist([moved], schema=table.schema), videos.with_name("test-00000-of-00002.parquet"))
    report = validate(corpus)
    messages = "\n".join(i.render() for i in report.errors)
    assert "has videos in several splits" in messages
    assert "shard numbering is incomplete" in messages


def test_missing_folder_and_stray_files(tmp_path: Path) -> None:
    assert not validate(tmp_path / "nope").ok
    corpus = make_corpus(tmp_path)
    shutil.copy(shard(corpus, "videos"), corpus / "stray.parquet")
    report = validate(corpus)
    assert any(i.file == "stray.parquet" and "outside data/<table>/" in i.message for i in report.errors)


def test_an_unreadable_table_does_not_cascade_into_reference_errors(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    _truncated(corpus)  # the clips shard
    report = validate(corpus)
    assert [i.check for i in report.errors] == ["unreadable"]
    assert any("references into clips not checked" in w.message for w in report.warnings)
