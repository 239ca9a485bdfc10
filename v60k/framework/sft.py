"""SFT export: role-play conversations from the corpus shards, for LLaMA-Factory and for TRL.

One conversation per dialogue row (docs/framework.md):
- system: the character's persona (name plus characteristic lines) and the clip's summary (the static profile);
- first user turn: the clip's frames in temporal order (the dynamic profile) then the opening line(s);
- then user / assistant alternate; assistant turns are the character's lines.

Outputs under OUT: ``images/<clip_id>/<NN>_<t_ms>.jpg`` (each clip's frames once), ``llamafactory/<split>.json``
(sharegpt: ``messages`` + ``images``, one ``<image>`` per image) with ``dataset_info.json``, ``trl/<split>.jsonl``
(content parts ``{"type": "image"}`` / ``{"type": "text"}`` and ``images`` paths), and ``export_summary.json``.
Bad input (no frames, undecodable images, a character without lines, an empty split) is counted and explained
in the summary; it never stops the export.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v60k.errors import V60kError
from v60k.workdir import atomic_path, write_bytes, write_json

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
TRAIN_SPLIT = "train"
SPLIT_ORDER = ("train", "validation", "test")
DATASET_PREFIX = "v60k_roleplay"
SCENE_OPENING = "(The scene you are in is shown above. Stay in character.)"
_SHARD_NAME = re.compile(r"^(?P<split>[A-Za-z0-9_.]+)-\d{5}-of-\d{5}\.parquet$")


class ExportError(V60kError, RuntimeError):
    """The shard directory cannot be exported at all (no dialogues table, unreadable layout)."""


@dataclass
class ExportSettings:
    max_frames: int | None = None  # keep at most this many of a clip's frames (evenly in time); None = all
    persona_lines: int = 8  # characteristic lines in the persona
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


# ---- reading the shards --------------------------------------------------------------------------
def shard_files(root: Path, table: str) -> dict[str, list[Path]]:
    """``data/<table>/<split>-NNNNN-of-NNNNN.parquet`` files by split, in shard order."""
    found: dict[str, list[Path]] = defaultdict(list)
    folder = root / "data" / table
    for path in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
        match = _SHARD_NAME.match(path.name)
        if match:
            found[match.group("split")].append(path)
    return dict(found)


def read_rows(paths: list[Path], columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of Parquet files, batch by batch (frames stay out of memory when ``columns`` omits them)."""
    import pyarrow.parquet as pq

    for path in paths:
        handle = pq.ParquetFile(path)
        wanted = [c for c in columns if c in handle.schema_arrow.names] if columns else None
        for batch in handle.iter_batches(batch_size=256, columns=wanted):
            yield from batch.to_pylist()


def _split_key(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


# ---- persona -------------------------------------------------------------------------------------
@dataclass
class LineSource:
    """A character's line and where it was said (to keep a conversation's own answers out of its persona)."""

    text: str
    split: str
    video_id: str
    time_s: float | None = None  # utterances
    clip_id: str | None = None  # dialogue turns


def rank_lines(lines: list[LineSource]) -> list[LineSource]:
    """Most characteristic first: lines of 3+ words, then longer, then earlier (stable, deterministic)."""
    return sorted(lines, key=lambda ln: (len(ln.text.split()) < 3, -len(ln.text)))


def pick_lines(ranked: list[LineSource], limit: int, keep: Any = None) -> list[str]:
    """Up to ``limit`` distinct lines of ``ranked`` (``keep(line)`` filters), ordered by video and time."""
    chosen: dict[str, LineSource] = {}
    for line in ranked:
        if len(chosen) >= limit:
            break
        text = " ".join(line.text.split())
        if text and text.lower() not in chosen and (keep is None or keep(line)):
            chosen[text.lower()] = LineSource(text, line.split, line.video_id, line.time_s, line.clip_id)
    return [
        ln.text for ln in sorted(chosen.values(), key=lambda ln: (ln.video_id, ln.time_s or 0.0, ln.text))
    ]


def persona_text(character: str, lines: list[str], series: str | None = None) -> str:
    where = f" from {series}" if series else ""
    text = (
        f"You are {character}{where}. Speak as {character} would, in the first person, and stay in character."
    )
    if lines:
        quoted = "\n".join(f'- "{line}"' for line in lines)
        text += f"\nThings {character} has said:\n{quoted}"
    return text


def system_message(persona: str, summary: str | None) -> str:
    if summary and summary.strip():
        return f"{persona}\n\nThe story so far (summary of the video): {summary.strip()}"
    return persona


# ---- conversations -------------------------------------------------------------------------------
def conversation_turns(
    turns: list[dict[str, Any]], character: str
) -> tuple[list[tuple[str, str]], str | None]:
    """Dialogue turns as alternating (user | assistant, text), starting with user and ending with assistant.

    Consecutive turns of one side are merged; other speakers are named ("Monica: ..."). Returns the
    turns and, when nothing usable remains, the reason.
    """
    merged: list[tuple[str, str]] = []
    for turn in turns or []:
        text = " ".join(str(turn.get("text") or "").split())
        if not text:
            continue
        role = "assistant" if turn.get("role") == "character" else "user"
        speaker = turn.get("speaker")
        if role == "user" and speaker and speaker != character:
            text = f"{speaker}: {text}"
        if merged and merged[-1][0] == role:
            merged[-1] = (role, f"{merged[-1][1]}\n{text}")
        else:
            merged.append((role, text))
    if not any(role == "assistant" for role, _ in merged):
        return [], "no_character_turns"
    if merged[0][0] == "assistant":
        merged.insert(0, ("user", SCENE_OPENING))
    if merged[-1][0] == "user":
        merged.pop()
    return merged, None


def sharegpt_record(system: str, turns: list[tuple[str, str]], images: list[str]) -> dict[str, Any]:
    """LLaMA-Factory sharegpt: system first, then user/assistant; ``<image>`` tokens lead the first user turn."""
    messages = [{"role": "system", "content": system}]
    for position, (role, text) in enumerate(turns):
        if position == 0 and images:
            text = IMAGE_TOKEN * len(images) + text
        messages.append({"role": role, "content": text})
    record: dict[str, Any] = {"messages": messages}
    if images:
        record["images"] = images
    return record


def trl_record(system: str, turns: list[tuple[str, str]], images: list[str]) -> dict[str, Any]:
    """TRL chat format: content parts; the image parts match ``images`` in order."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": [{"type": "text", "text": system}]}]
    for position, (role, text) in enumerate(turns):
        parts: list[dict[str, Any]] = []
        if position == 0:
            parts += [{"type": "image"} for _ in images]
        parts.append({"type": "text", "text": text})
        messages.append({"role": role, "content": parts})
    return {"messages": messages, "images": images}


def _evenly(items: list[Any], limit: int | None) -> list[Any]:
    if limit is None or len(items) <= limit:
        return items
    if limit <= 0:
        return []
    step = len(items) / limit
    return [items[int(i * step + step / 2)] for i in range(limit)]


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
    dialogue_files = shard_files(root, "dialogues")
    if not dialogue_files:
        raise ExportError(
            f"no dialogue shards under {root / 'data' / 'dialogues'} "
            "(expected data/dialogues/<split>-NNNNN-of-NNNNN.parquet)"
        )
    summary = ExportSummary(out=str(out))
    out.mkdir(parents=True, exist_ok=True)

    series_of = {
        r["video_id"]: r.get("series")
        for paths in shard_files(root, "videos").values()
        for r in read_rows(paths, ["video_id", "series"])
    }
    lines_by_character = _character_lines(root, dialogue_files)
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
    images = _ClipImages(root, out, settings, summary) if not summary.text_only else None
    if images is not None and images.kept == 0:
        summary.text_only = True
        summary.note(
            "the shards' frames hold no decodable image (written without frame bytes?): the export is "
            "text-only; text-only training still works, without the dynamic profile"
        )
        images = None

    dataset_info: dict[str, Any] = {}
    splits = sorted(set(dialogue_files) | set(shard_files(root, "clips")), key=_split_key)
    for split in splits:
        stats = summary.splits.setdefault(split, SplitSummary())
        sharegpt: list[dict[str, Any]] = []
        trl_rows: list[str] = []
        for row in read_rows(dialogue_files.get(split, [])):
            stats.dialogues += 1
            character = str(row.get("character") or "").strip()
            if not character:
                stats.skipped["no_character"] += 1
                continue
            turns, problem = conversation_turns(row.get("turns") or [], character)
            if problem:
                stats.skipped[problem] += 1
                continue
            clip = clips.get(row.get("clip_id") or "")
            persona_lines = _persona_lines(lines_by_character.get(character, {}), row, clip, split, settings)
            if not persona_lines:
                summary.note(
                    f"character {character!r} has no lines outside its own conversations: its persona "
                    "is the name alone"
                )
            persona = persona_text(character, persona_lines, series_of.get(row.get("video_id")))
            system = system_message(persona, clip["summary"] if clip else None)
            if clip is None:
                summary.note(
                    f"{split}: some dialogues name a clip the clips table lacks: no summary or frames"
                )
            frame_paths = images.paths(clip["clip_id"]) if images and clip else []
            if frame_paths:
                stats.with_frames += 1
            else:
                stats.text_only += 1
            stats.conversations += 1
            sharegpt.append(sharegpt_record(system, turns, frame_paths))
            trl_rows.append(json.dumps(trl_record(system, turns, frame_paths), ensure_ascii=False))
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
    for split in SPLIT_ORDER:
        if split not in summary.splits:
            summary.note(f"split {split!r} is absent from the shards")
    write_json(out / "dataset_info.json", dataset_info)
    summary.files["dataset_info"] = "dataset_info.json"
    write_json(out / "export_summary.json", summary.to_dict())
    return summary


def _outside(line: LineSource, row: dict[str, Any], clip: dict[str, Any] | None) -> bool:
    """Whether a line of the character was said outside the conversation's own clip."""
    if line.clip_id is not None:
        return line.clip_id != row.get("clip_id")
    if line.video_id != row.get("video_id") or clip is None or line.time_s is None:
        return True
    return not (clip["start_s"] <= line.time_s < clip["end_s"])


def _persona_lines(
    ranked: dict[str, list[LineSource]],
    row: dict[str, Any],
    clip: dict[str, Any] | None,
    split: str,
    settings: ExportSettings,
) -> list[str]:
    """The character's training-split lines said outside this conversation's clip; for a character absent
    from the training split (splits go by series), its lines elsewhere in the conversation's own split."""

    def keep(line: LineSource) -> bool:
        return _outside(line, row, clip)

    return pick_lines(ranked.get(TRAIN_SPLIT, []), settings.persona_lines, keep) or pick_lines(
        ranked.get(split, []) if split != TRAIN_SPLIT else [], settings.persona_lines, keep
    )


def _character_lines(
    root: Path, dialogue_files: dict[str, list[Path]]
) -> dict[str, dict[str, list[LineSource]]]:
    """Each character's lines by split (utterances and the dialogues' character turns), ranked (``rank_lines``)."""
    found: dict[str, dict[str, list[LineSource]]] = defaultdict(lambda: defaultdict(list))
    utterances = shard_files(root, "utterances")
    for split in sorted(set(utterances) | set(dialogue_files), key=_split_key):
        for row in read_rows(utterances.get(split, []), ["video_id", "start_s", "text", "character"]):
            if row.get("character") and row.get("text"):
                found[row["character"]][split].append(
                    LineSource(row["text"], split, row["video_id"], row.get("start_s"))
                )
        for row in read_rows(dialogue_files.get(split, []), ["clip_id", "video_id", "character", "turns"]):
            for turn in row.get("turns") or []:
                if turn.get("role") == "character" and turn.get("text") and row.get("character"):
                    found[row["character"]][split].append(
                        LineSource(turn["text"], split, row["video_id"], None, row["clip_id"])
                    )
    return {
        name: {split: rank_lines(lines) for split, lines in by_split.items()}
        for name, by_split in found.items()
    }


def _clip_meta(root: Path) -> dict[str, dict[str, Any]]:
    meta: dict[str, dict[str, Any]] = {}
    for split, paths in shard_files(root, "clips").items():
        for row in read_rows(paths, ["clip_id", "video_id", "start_s", "end_s", "summary", "frame_times_s"]):
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
    """Writes each clip's decodable frames once, in temporal order, and remembers their paths (relative to OUT)."""

    def __init__(self, root: Path, out: Path, settings: ExportSettings, summary: ExportSummary):
        self.by_clip: dict[str, list[str]] = {}
        self.kept = 0
        bad = empty = 0
        for paths in shard_files(root, "clips").values():
            for row in read_rows(paths, ["clip_id", "frame_times_s", "frames"]):
                times = list(row.get("frame_times_s") or [])
                frames = list(row.get("frames") or [])
                pairs = sorted(
                    zip(times, frames, strict=False), key=lambda p: p[0] if p[0] is not None else 0.0
                )
                kept: list[str] = []
                for t_s, frame in _evenly(pairs, settings.max_frames):
                    data = (frame or {}).get("bytes") if isinstance(frame, dict) else None
                    if not data:
                        empty += 1
                        continue
                    if _decodable(data):
                        bad += 1
                        continue
                    rel = f"images/{row['clip_id']}/{_frame_name(len(kept), t_s)}"
                    write_bytes(out / rel, data)
                    kept.append(rel)
                self.by_clip[row["clip_id"]] = kept
                self.kept += len(kept)
        if empty and self.kept:
            summary.note(f"{empty} frame(s) hold no image bytes and were left out")
        if bad:
            summary.note(
                f"{bad} frame(s) could not be decoded and were left out (the <image> count follows the "
                "images kept)"
            )

    def paths(self, clip_id: str) -> list[str]:
        return self.by_clip.get(clip_id, [])

    def count(self, split: str, clips: dict[str, dict[str, Any]]) -> int:
        return sum(len(v) for k, v in self.by_clip.items() if clips.get(k, {}).get("split") == split)
