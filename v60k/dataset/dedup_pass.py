"""Near-duplicates across videos, dropped while the shards are written (the whole corpus passes one process).

The generate stage drops near-duplicates within a video; here one MinHash/LSH pass (``v60k.generation.dedup``:
its shingles and threshold) runs over every LLM-generated dialogue (per character, as in the generate stage)
and clip summary of the corpus. The writer reads videos in id order and dialogues in id order, so the first of
a pair by (video id, dialogue id) is kept; a later one that nearly repeats a dialogue of an EARLIER video is
left out, recorded with the reason ``near_duplicate: of <dialogue_id>`` (a summary: its clip row stays, the
summary fields become null). Raw-lines dialogues and extractive summaries (real lines, which repeat
legitimately) are not checked, nor are pairs within one video (the generate stage's job).

    screen = CrossVideoDuplicates.from_settings(settings)
    for table, row in screen.rows(video_rows(reader, split)): ...
    screen.report(summary)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from datasketch import MinHash

from v60k.core.config import OutputSettings
from v60k.generation.dedup import NearDuplicates, dialogue_text, signature

REASON = "near_duplicate"
CHECKED_TYPE = "llm"  # the generation type checked; raw_lines / extractive are real lines
SUMMARY_FIELDS = ("summary", "summary_generator", "summary_type")


class CrossVideoDuplicates:
    """Screens the writer's rows video by video; ``drops`` lists what was left out, in corpus order."""

    def __init__(self, threshold: float = 0.7, enabled: bool = True):
        self.threshold = threshold
        self.enabled = enabled
        self._dialogues: dict[str | None, NearDuplicates] = {}  # per character
        self._summaries = NearDuplicates(threshold)
        self._last_video: str | None = None
        self.drops: list[dict[str, str]] = []

    @classmethod
    def from_settings(cls, settings: OutputSettings) -> CrossVideoDuplicates:
        return cls(settings.near_duplicate_threshold, settings.dedup_across_videos)

    def rows(self, rows: Iterable[tuple[str, dict[str, Any]]]) -> Iterator[tuple[str, dict[str, Any]]]:
        """One video's (table, row) pairs with the near-duplicates of earlier videos left out (dialogues) or
        blanked (clip summaries). What is kept is remembered once the video's rows are through, so pairs
        within the video are left alone."""
        if not self.enabled:
            yield from rows
            return
        kept: list[tuple[NearDuplicates, str, MinHash]] = []
        for table, row in rows:
            checked = self._checked(table, row)
            if checked is None:
                yield table, row
                continue
            index, item_id, text = checked
            minhash = signature(text)
            match = index.closest(minhash)
            if match is None:
                kept.append((index, item_id, minhash))
                yield table, row
                continue
            self._drop(table, row, item_id, match)
            if table == "clips":
                yield table, {**row, **dict.fromkeys(SUMMARY_FIELDS)}
        for index, item_id, minhash in kept:
            index.remember(item_id, minhash)

    def _checked(self, table: str, row: dict[str, Any]) -> tuple[NearDuplicates, str, str] | None:
        """(index, id, text) of a row this pass checks; None for the others."""
        if table == "dialogues" and row.get("generation_type") == CHECKED_TYPE:
            self._order(row["video_id"])
            character = row.get("character")
            if character not in self._dialogues:
                self._dialogues[character] = NearDuplicates(self.threshold)
            index = self._dialogues[character]
            return index, row["dialogue_id"], dialogue_text(row)
        if table == "clips" and row.get("summary_type") == CHECKED_TYPE and row.get("summary"):
            self._order(row["video_id"])
            return self._summaries, row["clip_id"], str(row["summary"])
        return None

    def _order(self, video_id: str) -> None:
        """Keeping the first needs the videos in id order (the writer's order)."""
        if self._last_video is not None and video_id < self._last_video:
            raise ValueError(f"videos out of order: {video_id} after {self._last_video}")
        self._last_video = video_id

    def _drop(self, table: str, row: dict[str, Any], item_id: str, match: str) -> None:
        kind = "dialogues" if table == "dialogues" else "summaries"
        self.drops.append({"kind": kind, "id": item_id, "video_id": row["video_id"], "reason": f"{REASON}: of {match}"})

    def counts(self) -> dict[str, dict[str, int]]:
        """Drops per kind (dialogues, summaries) and reason code."""
        out: dict[str, dict[str, int]] = {}
        for drop in self.drops:
            code = drop["reason"].split(":", 1)[0]
            out.setdefault(drop["kind"], {})[code] = out.setdefault(drop["kind"], {}).get(code, 0) + 1
        return out

    def card_lines(self) -> list[str]:
        """The card's statistics lines (none when nothing was dropped)."""
        counts = {kind: sum(c.values()) for kind, c in self.counts().items()}
        names = {"dialogues": "dialogues", "summaries": "clip summaries"}
        return [f"{n} near-duplicate {names[kind]} across videos dropped" for kind, n in sorted(counts.items())]

    def report(self, summary: Any) -> None:
        """Fill the ShardSummary's ``dropped`` (counts) and ``near_duplicates`` (the list)."""
        summary.dropped = self.counts()
        summary.near_duplicates = list(self.drops)


def describe_drops(summary: Any, first: int = 5) -> list[str]:
    """``v60k shard``'s lines: one summary line and the first few drops (none when nothing was dropped)."""
    drops = getattr(summary, "near_duplicates", None) or []
    if not drops:
        return []
    counts = {kind: sum(c.values()) for kind, c in (summary.dropped or {}).items()}
    lines = ["near-duplicates across videos dropped: " + ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))]
    lines += [f"  {d['kind']} {d['id']}: {d['reason']}" for d in drops[:first]]
    if len(drops) > first:
        lines.append(f"  ... and {len(drops) - first} more (--json lists them all)")
    return lines
