"""Role-play profiles from a corpus's shards: a dialogue's character, persona, clip summary and frames.

    index = CharacterLines.from_shards("corpus")
    profile = dialogue_profile(dialogue_row, clip_row, video_row, index, split="test", frames=[(3.0, jpeg)])

A persona quotes the character's lines from the training split said outside the conversation's clip; a
character absent from the training split (splits go by series) is quoted from the conversation's own split,
still outside its clip. ``v60k export-sft`` and ``v60k eval`` build their personas this way, so that a model is
evaluated on the persona it was trained with.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v60k.dataset import reader
from v60k.roleplay.format import PERSONA_LINES, RolePlayProfile, persona_text

TRAIN_SPLIT = "train"


@dataclass(frozen=True)
class LineSource:
    """A character's line and where it was said (to keep a conversation's own answers out of its persona)."""

    text: str
    split: str
    video_id: str
    time_s: float | None = None  # utterances
    clip_id: str | None = None  # dialogue turns


@dataclass(frozen=True)
class ClipSpan:
    """The clip a conversation is about: its lines stay out of the persona."""

    clip_id: str | None
    video_id: str | None
    start_s: float = 0.0
    end_s: float = 0.0

    def holds(self, line: LineSource) -> bool:
        if line.clip_id is not None:
            return line.clip_id == self.clip_id
        if line.video_id != self.video_id or line.time_s is None:
            return False
        return self.start_s <= line.time_s < self.end_s


def rank_lines(lines: list[LineSource]) -> list[LineSource]:
    """Most characteristic first: lines of 3+ words, then longer (stable, deterministic)."""
    return sorted(lines, key=lambda ln: (len(ln.text.split()) < 3, -len(ln.text)))


def pick_lines(ranked: list[LineSource], limit: int, keep: Callable[[LineSource], bool] | None = None) -> list[str]:
    """Up to ``limit`` distinct lines of ``ranked`` (``keep(line)`` filters), ordered by video and time."""
    chosen: dict[str, LineSource] = {}
    for line in ranked:
        if len(chosen) >= limit:
            break
        text = " ".join(line.text.split())
        if text and text.lower() not in chosen and (keep is None or keep(line)):
            chosen[text.lower()] = LineSource(text, line.split, line.video_id, line.time_s, line.clip_id)
    return [ln.text for ln in sorted(chosen.values(), key=lambda ln: (ln.video_id, ln.time_s or 0.0, ln.text))]


@dataclass
class CharacterLines:
    """Each character's lines by split (utterances and the dialogues' character turns), ranked."""

    by_character: dict[str, dict[str, list[LineSource]]] = field(default_factory=dict)

    @classmethod
    def from_shards(cls, root: str | Path) -> CharacterLines:
        found: dict[str, dict[str, list[LineSource]]] = defaultdict(lambda: defaultdict(list))
        for split in reader.splits_of(root, "utterances"):
            for row in reader.iter_rows(root, "utterances", split, ["video_id", "start_s", "text", "character"]):
                if row.get("character") and row.get("text"):
                    found[row["character"]][split].append(
                        LineSource(row["text"], split, row["video_id"], row.get("start_s")))
        for split in reader.splits_of(root, "dialogues"):
            for row in reader.iter_rows(root, "dialogues", split, ["clip_id", "video_id", "character", "turns"]):
                for turn in row.get("turns") or []:
                    if turn.get("role") == "character" and turn.get("text") and row.get("character"):
                        found[row["character"]][split].append(
                            LineSource(turn["text"], split, row["video_id"], None, row["clip_id"]))
        return cls({name: {split: rank_lines(lines) for split, lines in by_split.items()}
                    for name, by_split in found.items()})

    def persona_lines(self, character: str, split: str, clip: ClipSpan, limit: int) -> list[str]:
        """The character's training-split lines said outside ``clip``; else its lines in ``split`` outside it."""
        ranked = self.by_character.get(character, {})

        def keep(line: LineSource) -> bool:
            return not clip.holds(line)

        return pick_lines(ranked.get(TRAIN_SPLIT, []), limit, keep) or pick_lines(
            ranked.get(split, []) if split != TRAIN_SPLIT else [], limit, keep)


@dataclass
class LineSpans:
    """Each character's line times per video (the utterances table), to choose the frames where they speak."""

    by_speaker: dict[tuple[str, str], list[tuple[float, float]]] = field(default_factory=dict)

    @classmethod
    def from_shards(cls, root: str | Path) -> LineSpans:
        found: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        for row in reader.iter_rows(root, "utterances", columns=["video_id", "start_s", "end_s", "character"]):
            if row.get("character") and row.get("start_s") is not None and row.get("end_s") is not None:
                found[(row["video_id"], row["character"])].append((float(row["start_s"]), float(row["end_s"])))
        return cls({key: sorted(spans) for key, spans in found.items()})

    def in_clip(self, video_id: str | None, character: str, clip: dict[str, Any] | None) -> list[tuple[float, float]]:
        """The character's lines overlapping the clip (none without a clip)."""
        if not clip or not video_id:
            return []
        start, end = float(clip.get("start_s") or 0.0), float(clip.get("end_s") or 0.0)
        return [(s, e) for s, e in self.by_speaker.get((video_id, character), []) if s < end and e > start]


def clip_span(dialogue: dict[str, Any], clip: dict[str, Any] | None) -> ClipSpan:
    clip = clip or {}
    return ClipSpan(dialogue.get("clip_id"), dialogue.get("video_id"), float(clip.get("start_s") or 0.0),
                    float(clip.get("end_s") or 0.0))


def dialogue_profile(dialogue: dict[str, Any], clip: dict[str, Any] | None, video: dict[str, Any] | None,
                     lines: CharacterLines, split: str, frames: list[tuple[float, Any]],
                     persona_lines: int = PERSONA_LINES) -> RolePlayProfile:
    """The profile a dialogue row is rendered with (training and evaluation alike): the video's title (or
    series), a persona quoting the character's lines outside the clip, the clip's summary, ``frames``."""
    character = str(dialogue.get("character") or "").strip()
    video = video or {}
    title = video.get("title") or video.get("series") or None
    quoted = lines.persona_lines(character, split, clip_span(dialogue, clip), persona_lines)
    return RolePlayProfile(character=character, persona=persona_text(character, title, quoted),
                           summary=str((clip or {}).get("summary") or ""), frames=frames, title=title)
