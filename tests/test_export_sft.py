"""export-sft: LLaMA-Factory sharegpt and TRL conversations from small shards built with pyarrow."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import click
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from v60k.cli.sft_cmds import register
from v60k.roleplay.format import SCENE_OPENING
from v60k.roleplay.sft_export import IMAGE_TOKEN, ExportError, ExportSettings, export_sft

FRAME = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
TURN = pa.struct([("role", pa.string()), ("speaker", pa.string()), ("text", pa.string())])
SCHEMAS = {
    "videos": pa.schema([("video_id", pa.string()), ("series", pa.string()), ("split", pa.string())]),
    "utterances": pa.schema(
        [
            ("utterance_id", pa.string()),
            ("video_id", pa.string()),
            ("start_s", pa.float64()),
            ("end_s", pa.float64()),
            ("text", pa.string()),
            ("character", pa.string()),
            ("split", pa.string()),
        ]
    ),
    "clips": pa.schema(
        [
            ("clip_id", pa.string()),
            ("video_id", pa.string()),
            ("start_s", pa.float64()),
            ("end_s", pa.float64()),
            ("frame_times_s", pa.list_(pa.float64())),
            ("frames", pa.list_(FRAME)),
            ("summary", pa.string()),
            ("split", pa.string()),
        ]
    ),
    "dialogues": pa.schema(
        [
            ("dialogue_id", pa.string()),
            ("clip_id", pa.string()),
            ("video_id", pa.string()),
            ("character", pa.string()),
            ("generation_type", pa.string()),
            ("generator", pa.string()),
            ("turns", pa.list_(TURN)),
            ("split", pa.string()),
        ]
    ),
}


def jpeg(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (shade, 255 - shade, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_shards(root: Path, rows: dict[str, list[dict[str, Any]]]) -> Path:
    """data/<table>/<split>-00000-of-00001.parquet per table and split (empty tables for listed empty splits)."""
    for table, table_rows in rows.items():
        splits = sorted({r["split"] for r in table_rows}) or ["validation"]
        for split in splits:
            part = [r for r in table_rows if r["split"] == split]
            path = root / "data" / table / f"{split}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(part, schema=SCHEMAS[table]), path)
    return root


def turn(role: str, speaker: str, text: str) -> dict[str, str]:
    return {"role": role, "speaker": speaker, "text": text}


def clip(
    clip_id: str,
    video_id: str,
    split: str,
    start: float,
    frames: list[tuple[float, bytes]] | None,
    summary: str | None = "Ross and Monica argue about the couch.",
) -> dict[str, Any]:
    frames = frames or []
    return {
        "clip_id": clip_id,
        "video_id": video_id,
        "start_s": start,
        "end_s": start + 30.0,
        "frame_times_s": [t for t, _ in frames],
        "frames": [{"bytes": data, "path": f"{clip_id}-{i}.jpg"} for i, (_, data) in enumerate(frames)],
        "summary": summary,
        "split": split,
    }


def corpus(root: Path, *, with_frames: bool = True, bad_frame: bool = False) -> Path:
    # frames deliberately stored out of temporal order: the export sorts them
    frames = [(12.0, jpeg(200)), (3.0, jpeg(10)), (7.5, jpeg(90))] if with_frames else None
    if bad_frame and frames:
        frames.append((9.0, b"not a jpeg at all"))
    utterances = [
        {
            "utterance_id": "v1-L0000",
            "video_id": "v1",
            "start_s": 2.0,
            "end_s": 3.0,
            "split": "train",
            "character": "Ross",
            "text": "We were on a break, and everybody knows it.",
        },
        {
            "utterance_id": "v1-L0001",
            "video_id": "v1",
            "start_s": 35.0,
            "end_s": 36.0,
            "split": "train",
            "character": "Ross",
            "text": "Pivot! Pivot! Pivot the couch up the stairs.",
        },
        {
            "utterance_id": "v1-L0002",
            "video_id": "v1",
            "start_s": 40.0,
            "end_s": 41.0,
            "split": "train",
            "character": "Monica",
            "text": "Welcome to the real world, it sucks.",
        },
        {
            "utterance_id": "v9-L0000",
            "video_id": "v9",
            "start_s": 1.0,
            "end_s": 2.0,
            "split": "validation",
            "character": "Phoebe",
            "text": "Smelly cat, smelly cat, what are they feeding you?",
        },
        {
            "utterance_id": "v9-L0001",
            "video_id": "v9",
            "start_s": 50.0,
            "end_s": 51.0,
            "split": "validation",
            "character": "Phoebe",
            "text": "I wish I could, but I don't want to.",
        },
    ]
    dialogues = [
        {
            "dialogue_id": "v1-c000-d00",
            "clip_id": "v1-c000",
            "video_id": "v1",
            "character": "Ross",
            "generation_type": "raw_lines",
            "generator": "v60k",
            "split": "train",
            "turns": [
                turn("user", "Monica", "Where were you?"),
                turn("user", "Monica", "Answer me."),
                turn("character", "Ross", "We were on a break, and everybody knows it."),
                turn("user", "Monica", "Fine."),
                turn("character", "Ross", "Fine!"),
                turn("user", "Monica", "(trailing user turn)"),
            ],
        },
        {
            "dialogue_id": "v1-c001-d00",
            "clip_id": "v1-c001",
            "video_id": "v1",
            "character": "Ross",
            "generation_type": "raw_lines",
            "generator": "v60k",
            "split": "train",
            "turns": [
                turn("character", "Ross", "Pivot! Pivot! Pivot the couch up the stairs."),
                turn("user", "Chandler", "Shut up!"),
                turn("character", "Ross", "Okay."),
            ],
        },
        {
            "dialogue_id": "v9-c000-d00",
            "clip_id": "v9-c000",
            "video_id": "v9",
            "character": "Phoebe",
            "generation_type": "llm",
            "generator": "gpt-4o-mini",
            "split": "validation",
            "turns": [
                turn("user", "Joey", "Sing something."),
                turn("character", "Phoebe", "Smelly cat, smelly cat, what are they feeding you?"),
            ],
        },
    ]
    clips = [
        clip("v1-c000", "v1", "train", 0.0, frames),
        clip("v1-c001", "v1", "train", 30.0, frames),
        clip("v9-c000", "v9", "validation", 0.0, frames, summary=None),
    ]
    videos = [
        {"video_id": "v1", "series": "Friends", "split": "train"},
        {"video_id": "v9", "series": "Friends Again", "split": "validation"},
    ]
    return write_shards(
        root, {"videos": videos, "utterances": utterances, "clips": clips, "dialogues": dialogues}
    )


def check_llamafactory(record: dict[str, Any], out: Path) -> None:
    """What LLaMA-Factory's converter and mm_plugin require of a sharegpt record."""
    messages = record["messages"]
    assert messages[0]["role"] == "system"
    rest = messages[1:]
    assert len(rest) % 2 == 0 and rest
    for position, message in enumerate(rest):
        assert message["role"] == ("user" if position % 2 == 0 else "assistant")
    images = record.get("images", [])
    assert sum(m["content"].count(IMAGE_TOKEN) for m in messages) == len(images)
    for image in images:
        assert (out / image).is_file()


def load(out: Path, fmt: str, split: str) -> list[dict[str, Any]]:
    if fmt == "llamafactory":
        return json.loads((out / "llamafactory" / f"{split}.json").read_text())
    return [json.loads(line) for line in (out / "trl" / f"{split}.jsonl").read_text().splitlines()]


def test_both_formats_with_frames_in_temporal_order(tmp_path: Path) -> None:
    out = tmp_path / "sft"
    summary = export_sft(corpus(tmp_path / "corpus"), out)
    assert not summary.text_only
    train = load(out, "llamafactory", "train")
    assert len(train) == 2
    for record in train:
        check_llamafactory(record, out)
        assert len(record["images"]) == 3
        times = [int(Path(p).stem.split("_")[1]) for p in record["images"]]
        assert times == [3000, 7500, 12000]
        shades = [Image.open(out / p).convert("RGB").getpixel((12, 8))[0] for p in record["images"]]
        assert shades[0] < shades[1] < shades[2]  # the pixels, not just the names, are in temporal order
        first_user = record["messages"][1]["content"].split("\n")
        assert first_user[0].startswith("The video, as 3 frames in temporal order")  # roleplay-v1's caption
        assert first_user[1:4] == [f"Frame 1 at 3.00 s: {IMAGE_TOKEN}", f"Frame 2 at 7.50 s: {IMAGE_TOKEN}",
                                   f"Frame 3 at 12.00 s: {IMAGE_TOKEN}"]
    first, second = train
    system = first["messages"][0]["content"]
    assert 'You are Ross, a character of the video "Friends"' in system and "argue about the couch" in system
    # the persona quotes Ross's lines from elsewhere, never the conversation's own answers
    assert "Pivot the couch" in system and "on a break" not in system
    assert "on a break" in second["messages"][0]["content"]
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert "Monica: Where were you?\nMonica: Answer me." in first["messages"][1]["content"]
    assert second["messages"][1]["content"].endswith(SCENE_OPENING)  # opened by the character
    trl = load(out, "trl", "train")
    for trl_record, lf_record in zip(trl, train, strict=True):
        parts = [p for m in trl_record["messages"] for p in m["content"]]
        assert sum(p["type"] == "image" for p in parts) == len(trl_record["images"]) == 3
        assert trl_record["images"] == lf_record["images"]
        for trl_message, lf_message in zip(trl_record["messages"], lf_record["messages"], strict=True):
            texts = [line for p in trl_message["content"] if p["type"] == "text" for line in p["text"].split("\n")]
            assert texts == lf_message["content"].replace(f": {IMAGE_TOKEN}", "").split("\n")
            kinds = [p["type"] for p in trl_message["content"]]
            assert all(kinds[i - 1] == "text" for i, k in enumerate(kinds) if k == "image")  # label, image
    info = json.loads((out / "dataset_info.json").read_text())
    assert set(info) == {"v60k_roleplay_train", "v60k_roleplay_validation"}
    entry = info["v60k_roleplay_train"]
    assert entry["formatting"] == "sharegpt" and entry["columns"] == {
        "messages": "messages",
        "images": "images",
    }
    assert entry["tags"]["system_tag"] == "system" and (out / entry["file_name"]).is_file()
    # splits follow the shards; validation's character is absent from train: persona from its own split
    validation = load(out, "llamafactory", "validation")
    assert len(validation) == 1
    assert "I wish I could" in validation[0]["messages"][0]["content"]
    assert "Smelly cat" not in validation[0]["messages"][0]["content"]
    assert "split 'test' is absent from the shards" in summary.notes
    assert summary.splits["train"].with_frames == 2 and summary.splits["train"].images == 6
    assert json.loads((out / "export_summary.json").read_text())["splits"]["train"]["conversations"] == 2


def test_shards_without_frames_export_text_only_and_say_so(tmp_path: Path) -> None:
    out = tmp_path / "sft"
    summary = export_sft(corpus(tmp_path / "corpus", with_frames=False), out)
    assert summary.text_only and any("text-only" in note for note in summary.notes)
    for record in load(out, "llamafactory", "train"):
        check_llamafactory(record, out)
        assert "images" not in record
    assert all(r["images"] == [] for r in load(out, "trl", "train"))
    info = json.loads((out / "dataset_info.json").read_text())
    assert "images" not in info["v60k_roleplay_train"]["columns"]
    assert not (out / "images").exists()
    assert summary.splits["train"].text_only == 2


def test_frames_without_bytes_export_text_only(tmp_path: Path) -> None:
    """Shards written without frame bytes (times and paths only) are text-only too."""
    root = corpus(tmp_path / "corpus")
    path = root / "data" / "clips" / "train-00000-of-00001.parquet"
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        row["frames"] = [{"bytes": b"", "path": f["path"]} for f in row["frames"]]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMAS["clips"]), path)
    (root / "data" / "clips" / "validation-00000-of-00001.parquet").unlink()
    out = tmp_path / "sft"
    summary = export_sft(root, out)
    assert summary.text_only and any("no decodable image" in note for note in summary.notes)
    for record in load(out, "llamafactory", "train"):
        check_llamafactory(record, out)
        assert "images" not in record


def test_bad_input_is_explained_not_fatal(tmp_path: Path) -> None:
    root = corpus(tmp_path / "corpus", bad_frame=True)
    # a character with no lines anywhere else, a dialogue without character turns, an empty test split
    extra = [
        {
            "dialogue_id": "v1-c000-d01",
            "clip_id": "v1-c000",
            "video_id": "v1",
            "character": "Gunther",
            "generation_type": "raw_lines",
            "generator": "v60k",
            "split": "train",
            "turns": [turn("user", "Rachel", "Coffee?"), turn("character", "Gunther", "Yes.")],
        },
        {
            "dialogue_id": "v1-c000-d02",
            "clip_id": "v1-c000",
            "video_id": "v1",
            "character": "Ross",
            "generation_type": "raw_lines",
            "generator": "v60k",
            "split": "train",
            "turns": [turn("user", "Monica", "Hello?")],
        },
    ]
    train_path = root / "data" / "dialogues" / "train-00000-of-00001.parquet"
    rows = pq.read_table(train_path).to_pylist() + extra
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMAS["dialogues"]), train_path)
    pq.write_table(
        pa.Table.from_pylist([], schema=SCHEMAS["dialogues"]),
        root / "data" / "dialogues" / "test-00000-of-00001.parquet",
    )
    out = tmp_path / "sft"
    summary = export_sft(root, out, ExportSettings(max_frames=None))
    notes = " | ".join(summary.notes)
    assert "3 frame(s) could not be decoded" in notes  # one per clip
    assert "'Gunther' has no lines" in notes
    assert "split 'test' has no usable dialogues" in notes
    assert summary.splits["train"].skipped == {"no_character_turns": 1}
    train = load(out, "llamafactory", "train")
    assert len(train) == 3
    for record in train:
        check_llamafactory(record, out)
        assert len(record["images"]) == 3  # the undecodable frame is left out, tokens follow
    gunther = next(r for r in train if "Gunther" in r["messages"][0]["content"])
    assert "Things Gunther says" not in gunther["messages"][0]["content"]
    assert not (out / "llamafactory" / "test.json").exists()
    assert "v60k_roleplay_test" not in json.loads((out / "dataset_info.json").read_text())


def test_max_frames_keeps_an_even_temporal_subset(tmp_path: Path) -> None:
    out = tmp_path / "sft"
    export_sft(corpus(tmp_path / "corpus"), out, ExportSettings(max_frames=2))
    for record in load(out, "llamafactory", "train"):
        check_llamafactory(record, out)
        times = [int(Path(p).stem.split("_")[1]) for p in record["images"]]
        assert len(times) == 2 and times == sorted(times)


def test_cli_prints_the_summary_and_explains_a_missing_corpus(tmp_path: Path) -> None:
    group = click.Group()
    register(group)
    runner = CliRunner()
    root = corpus(tmp_path / "corpus", with_frames=False)
    result = runner.invoke(group, ["export-sft", "--shards", str(root), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "train: 2 conversations" in result.output and "text-only" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(group, ["export-sft", "--shards", str(empty), "--out", str(tmp_path / "o2")])
    assert result.exit_code == 1 and "no dialogue shards" in result.output
    with pytest.raises(ExportError):
        export_sft(empty, tmp_path / "o3")


def test_training_export_and_chat_render_one_format(tmp_path: Path) -> None:
    """The same (character, clip) through the SFT export and through chat (the eval's profile of the dialogue,
    asked as ``v60k chat`` asks): the same system prompt, caption, frame labels and frame images."""
    import base64

    from v60k.roleplay.chat import ChatSession
    from v60k.roleplay.evaluate import load_test_items

    root = corpus(tmp_path / "corpus")
    out = tmp_path / "sft"
    export_sft(root, out)
    record = next(r for r in load(out, "llamafactory", "train") if "Where were you?" in r["messages"][1]["content"])
    item = next(i for i in load_test_items(root, split="train") if i.dialogue_id == "v1-c000-d00")
    messages = ChatSession(item.profile, client=None).messages_for("Where were you?")

    assert messages[0] == {"role": "system", "content": record["messages"][0]["content"]}
    assert "Pivot the couch" in messages[0]["content"]  # the persona quotes the same lines
    chat_texts = [p["text"] for p in messages[1]["content"] if p["type"] == "text"]
    sft_lines = record["messages"][1]["content"].split("\n")
    assert chat_texts[0] == sft_lines[0]  # the caption
    assert chat_texts[1:4] == [line.removesuffix(f": {IMAGE_TOKEN}") for line in sft_lines[1:4]]
    chat_images = [base64.b64decode(p["image_url"]["url"].split(",", 1)[1])
                   for p in messages[1]["content"] if p["type"] == "image_url"]
    assert chat_images == [(out / path).read_bytes() for path in record["images"]]


def _busy_start_corpus(root: Path) -> Path:
    """One 30 s clip whose 16 sampled frames crowd its high-motion first 12 s (12 frames there); Ross speaks only
    at 19-20 s and 27.5-28.5 s, Monica only at 3-4 s."""
    frames = [(0.5 + k, jpeg(10 + 12 * k)) for k in range(12)] + [(16.0 + 4 * k, jpeg(170 + 20 * k)) for k in range(4)]
    line = {"video_id": "v1", "split": "train"}
    utterances = [
        {**line, "utterance_id": "v1-L0000", "start_s": 3.0, "end_s": 4.0, "character": "Monica", "text": "Where?"},
        {**line, "utterance_id": "v1-L0001", "start_s": 19.2, "end_s": 20.4, "character": "Ross", "text": "Here."},
        {**line, "utterance_id": "v1-L0002", "start_s": 27.5, "end_s": 28.6, "character": "Ross", "text": "Now."},
        {**line, "utterance_id": "v1-L0003", "start_s": 45.0, "end_s": 46.0, "character": "Ross",
         "text": "A line in another clip of the video."},
    ]
    dialogues = [
        {**line, "dialogue_id": f"v1-c000-d0{n}", "clip_id": "v1-c000", "character": who, "generation_type": "llm",
         "generator": "m", "turns": [turn("user", "Joey", f"Hi {who}."), turn("character", who, "Hello.")]}
        for n, who in enumerate(("Ross", "Monica"))
    ]
    return write_shards(root, {"videos": [{"video_id": "v1", "series": "Friends", "split": "train"}],
                               "utterances": utterances, "clips": [clip("v1-c000", "v1", "train", 0.0, frames)],
                               "dialogues": dialogues})


def test_max_frames_include_the_moments_the_character_speaks(tmp_path: Path) -> None:
    """Export, eval (and chat, from the eval's profile) choose the same frames for a (character, clip): one
    within 1 s of each of the character's lines, the rest evenly over the clip, in temporal order."""
    import base64

    from v60k.roleplay.chat import ChatSession
    from v60k.roleplay.evaluate import load_test_items
    from v60k.roleplay.format import evenly_spaced

    root = _busy_start_corpus(tmp_path / "corpus")
    evenly = [t for t, _ in evenly_spaced([(0.5 + k, None) for k in range(12)] + [(16.0 + 4 * k, None)
                                                                                   for k in range(4)], 4)]
    assert not any(19.2 - 1 <= t <= 20.4 + 1 for t in evenly)  # the plain even choice misses Ross's first line
    out = tmp_path / "sft"
    export_sft(root, out, ExportSettings(max_frames=4))
    records = {r["messages"][0]["content"].split(",")[0]: r for r in load(out, "llamafactory", "train")}
    assert len(records) == 2
    items = {i.profile.character: i for i in load_test_items(root, split="train", max_frames=4)}
    spoken = {"Ross": [(19.2, 20.4), (27.5, 28.6)], "Monica": [(3.0, 4.0)]}
    chosen = {}
    for character, lines in spoken.items():
        record = next(r for key, r in records.items() if character in key)
        check_llamafactory(record, out)
        times = [int(Path(p).stem.split("_")[1]) / 1000 for p in record["images"]]
        assert len(times) == 4 and times == sorted(times)
        for start, end in lines:
            assert any(start - 1.0 <= t <= end + 1.0 for t in times), (character, times)
        chosen[character] = times
        exported = [(out / p).read_bytes() for p in record["images"]]
        profile = items[character].profile
        assert profile.frame_times == times and [image for _, image in profile.frames] == exported
        messages = ChatSession(profile, client=None).messages_for("Hi.")
        chat_images = [base64.b64decode(p["image_url"]["url"].split(",", 1)[1])
                       for p in messages[1]["content"] if p["type"] == "image_url"]
        assert chat_images == exported
    assert chosen["Ross"] != chosen["Monica"]  # per character, not per clip
    assert len(list((out / "images" / "v1-c000").iterdir())) == len(set(chosen["Ross"]) | set(chosen["Monica"]))
