"""SFT export: role-play conversations from the corpus shards, for LLaMA-Factory and for TRL.

One conversation per dialogue row, rendered by the role-play format (``v60k.roleplay.format``) exactly
as ``v60k chat`` and ``v60k eval`` ask a model: the system prompt of ``roleplay-v1`` with the character's persona
(``v60k.roleplay.personas``: their lines outside the conversation's clip) and the clip's summary; the clip's
frames in temporal order (``--max-frames``: those where the character speaks first, the rest evenly over the
clip), each labelled with its time, opening the first user turn; then user / assistant
alternate, the assistant turns being the character's lines (a trailing user turn is dropped).

Outputs under OUT: ``images/<clip_id>/<NN>_<t_ms>.jpg`` (each clip's frames once), ``llamafactory/<split>.json``
(sharegpt: ``messages`` + ``images``, one ``<image>`` per image) with ``dataset_info.json``, ``trl/<split>.jsonl``
(content parts ``{"type": "image"}`` / ``{"type": "text"}`` and ``images`` paths), and ``export_summary.json``.
Bad input (no frames, undecodable images, a character without lines, an empty split) is counted and explained
in the summary; it never stops the export.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v60k.core.errors import V60kError
from v60k.core.workdir import atomic_path, write_bytes, write_json
from v60k.dataset import reader
from v60k.roleplay.format import (
    IMAGE_TOKEN,
    PERSONA_LINES,
    Conversation,
    Turn,
    frames_for_character,
    persona_text,
)
from v60k.roleplay.profiles import CharacterLines, LineSpans, dialogue_profile

log = logging.getLogger(__name__)

__all__ = ["IMAGE_TOKEN", "ExportError", "ExportSettings", "ExportSummary", "export_sft"]
DATASET_PREFIX = "v60k_roleplay"


class ExportError(V60kError, RuntimeError):
    """The shard directory cannot be exported at all (no dialogues table, unreadable layout)."""


@dataclass
class ExportSettings:
    max_frames: int | None = None  # at most this many of a clip's frames (``frames_for_character``); None = all
    persona_lines: int = PERSONA_LINES  # characteristic lines in the persona
    include_frames: bool = True  # False: text-only export even when the shards have frames
    dataset_prefix: str = DATASET_PREFIX


@dataclass
class SplitSummary:
    dialogues: int = 0
    conversations: int = 0
    with_frames: int = 0
    text_only: int = 0
    images: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in vars(self).items() if k != "skipped"}, "skipped": dict(self.skipped)}


@dataclass
class ExportSummary:
    out: str
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    text_only: bool = False

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            log.info(text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "text_only": self.text_only,
            "splits": {k: v.to_dict() for k, v in self.splits.items()},
            "notes": self.notes,
            "files": self.files,
        }

    def lines(self) -> list[str]:
        """A human-readable account (what the CLI prints)."""
        rows = [f"SFT export in {self.out}" + (" (text-only)" if self.text_only else "")]
        for split, s in self.splits.items():
            skipped = ", ".join(f"{k} {v}" for k, v in sorted(s.skipped.items()))
            rows.append(
                f"  {split}: {s.conversations} conversations of {s.dialogues} dialogues "
                f"({s.with_frames} with frames, {s.text_only} text-only, {s.images} images)"
                + (f"; skipped: {skipped}" if skipped else "")
            )
        rows += [f"  note: {n}" for n in self.notes]
        return rows


def _decodable(data: bytes) -> str | None:
    """None when ``data`` is a readable image, else why not."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as exc:  # PIL raises many types for broken data
        return f"{type(exc).__name__}: {exc}"
    return None


def _frame_name(index: int, t_s: float | None) -> str:
    return f"{index:02d}_{round((t_s or 0.0) * 1000):06d}.jpg"


# ---- the export ----------------------------------------------------------------------------------
def export_sft(shards: str | Path, out: str | Path, settings: ExportSettings | None = None) -> ExportSummary:
    """Write the LLaMA-Factory and TRL exports of ``shards`` into ``out``; see the module docstring."""
    settings = settings or ExportSettings()
    root, out = Path(shards), Path(out)
    dialogue_splits = reader.splits_of(root, "dialogues")
    if not dialogue_splits:
        raise ExportError(
            f"no dialogue shards under {root / 'data' / 'dialogues'} "
            "(expected data/dialogues/<split>-NNNNN-of-NNNNN.parquet)"
        )
    summary = ExportSummary(out=str(out))
    out.mkdir(parents=True, exist_ok=True)

    videos = {r["video_id"]: r for r in reader.iter_rows(root, "videos", columns=["video_id", "title", "series"])}
    lines = CharacterLines.from_shards(root)
    clips = _clip_meta(root)
    has_frames = any(c["frame_count"] for c in clips.values())
    if not settings.include_frames:
        summary.text_only = True
        summary.note("frames left out on request: text-only conversations")
    elif not has_frames:
        summary.text_only = True
        summary.note(
            "the shards have no frames (clips table missing or frames empty): the export is text-only; "
            "text-only training still works, without the dynamic profile"
        )
    images = _ClipImages(root, out, settings, summary, _speakers(root, clips)) if not summary.text_only else None
    if images is not None and images.kept == 0:
        summary.text_only = True
        summary.note(
            "the shards' frames hold no decodable image (written without frame bytes?): the export is "
            "text-only; text-only training still works, without the dynamic profile"
        )
        images = None

    dataset_info: dict[str, Any] = {}
    splits = sorted(set(dialogue_splits) | set(reader.splits_of(root, "clips")), key=reader.split_key)
    for split in splits:
        stats = summary.splits.setdefault(split, SplitSummary())
        sharegpt: list[dict[str, Any]] = []
        trl_rows: list[str] = []
        for row in reader.iter_rows(root, "dialogues", split):
            stats.dialogues += 1
            character = str(row.get("character") or "").strip()
            if not character:
                stats.skipped["no_character"] += 1
                continue
            turns = [Turn.from_record(t) for t in row.get("turns") or []]
            if not any(t.role == "character" and t.text.strip() for t in turns):
                stats.skipped["no_character_turns"] += 1
                continue
            clip = clips.get(row.get("clip_id") or "")
            if clip is None:
                summary.note(f"{split}: some dialogues name a clip the clips table lacks: no summary or frames")
            frames = images.frames(clip["clip_id"], character) if images and clip else []
            profile = dialogue_profile(row, clip, videos.get(row.get("video_id")), lines, split, frames,
                                       settings.persona_lines)
            if profile.persona == persona_text(character, profile.title):
                summary.note(
                    f"character {character!r} has no lines outside its own conversations: its persona "
                    "is the name alone"
                )
            conversation = Conversation.of(profile, turns).trimmed()
            paths = [str(path) for _, path in conversation.frames]
            stats.with_frames += bool(paths)
            stats.text_only += not paths
            stats.conversations += 1
            sharegpt.append(conversation.sharegpt(paths))
            trl_rows.append(json.dumps(conversation.trl(paths), ensure_ascii=False))
        stats.images = images.count(split, clips) if images else 0
        if not sharegpt:
            summary.note(f"split {split!r} has no usable dialogues: no files written for it")
            continue
        name = f"{settings.dataset_prefix}_{split}"
        write_json(out / "llamafactory" / f"{split}.json", sharegpt)
        with atomic_path(out / "trl" / f"{split}.jsonl") as tmp:
            tmp.write_text("\n".join(trl_rows) + "\n", encoding="utf-8")
        summary.files[f"llamafactory/{split}"] = f"llamafactory/{split}.json"
        summary.files[f"trl/{split}"] = f"trl/{split}.jsonl"
        entry: dict[str, Any] = {
            "file_name": f"llamafactory/{split}.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
        if not summary.text_only:
            entry["columns"]["images"] = "images"
        dataset_info[name] = entry
    for split in reader.SPLIT_ORDER:
        if split not in summary.splits:
            summary.note(f"split {split!r} is absent from the shards")
    write_json(out / "dataset_info.json", dataset_info)
    summary.files["dataset_info"] = "dataset_info.json"
    write_json(out / "export_summary.json", summary.to_dict())
    return summary


def _clip_meta(root: Path) -> dict[str, dict[str, Any]]:
    meta: dict[str, dict[str, Any]] = {}
    for split in reader.splits_of(root, "clips"):
        columns = ["clip_id", "video_id", "start_s", "end_s", "summary", "frame_times_s"]
        for row in reader.iter_rows(root, "clips", split, columns):
            meta[row["clip_id"]] = {
                "clip_id": row["clip_id"],
                "split": split,
                "summary": row.get("summary"),
                "start_s": row.get("start_s") or 0.0,
                "end_s": row.get("end_s") or 0.0,
                "frame_count": len(row.get("frame_times_s") or []),
            }
    return meta


class _ClipImages:
    """Writes the frames each clip's conversations use once, in temporal order, and remembers per (clip,
    character) their (time, path relative to OUT): ``frames_for_character`` with the character's lines in the
    clip, as eval and chat choose them."""

    def __init__(self, root: Path, out: Path, settings: ExportSettings, summary: ExportSummary,
                 speakers: dict[str, dict[str, list[tuple[float, float]]]]):
        self.by_clip: dict[str, dict[str, list[tuple[float, str]]]] = {}
        self.files: dict[str, int] = {}
        self.kept = 0
        bad = empty = 0
        for row in reader.iter_rows(root, "clips", columns=["clip_id", "frame_times_s", "frames"]):
            times = list(row.get("frame_times_s") or [])
            frames = list(row.get("frames") or [])
            pairs = sorted(zip(times, frames, strict=False), key=lambda p: p[0] if p[0] is not None else 0.0)
            indexed = [(float(t_s or 0.0), index) for index, (t_s, _) in enumerate(pairs)]
            picks = {character: [index for _, index in frames_for_character(indexed, settings.max_frames, spans)]
                     for character, spans in (speakers.get(row["clip_id"]) or {"": []}).items()}
            written: dict[int, tuple[float, str]] = {}
            for index in sorted({index for chosen in picks.values() for index in chosen}):
                t_s, frame = pairs[index]
                data = (frame or {}).get("bytes") if isinstance(frame, dict) else None
                if not data:
                    empty += 1
                    continue
                if _decodable(data):
                    bad += 1
                    continue
                rel = f"images/{row['clip_id']}/{_frame_name(len(written), t_s)}"
                write_bytes(out / rel, data)
                written[index] = (float(t_s or 0.0), rel)
            self.by_clip[row["clip_id"]] = {character: [written[i] for i in chosen if i in written]
                                            for character, chosen in picks.items()}
            self.files[row["clip_id"]] = len(written)
            self.kept += len(written)
        if empty and self.kept:
            summary.note(f"{empty} frame(s) hold no image bytes and were left out")
        if bad:
            summary.note(
                f"{bad} frame(s) could not be decoded and were left out (the <image> count follows the "
                "images kept)"
            )

    def frames(self, clip_id: str, character: str) -> list[tuple[float, str]]:
        return self.by_clip.get(clip_id, {}).get(character, [])

    def count(self, split: str, clips: dict[str, dict[str, Any]]) -> int:
        return sum(n for k, n in self.files.items() if clips.get(k, {}).get("split") == split)


def _speakers(root: Path, clips: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Per clip, the characters of its dialogues and their lines' spans in it."""
    spans = LineSpans.from_shards(root)
    found: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(dict)
    for row in reader.iter_rows(root, "dialogues", columns=["clip_id", "video_id", "character"]):
        character = str(row.get("character") or "").strip()
        clip = clips.get(row.get("clip_id") or "")
        if character and clip:
            found[clip["clip_id"]][character] = spans.in_clip(row.get("video_id"), character, clip)
    return found
