"""Attribution against a reference: lines named right, named wrong, left null (the benchmark and the tests).

A reference is a list of ``(start_s, end_s, speaker)`` spans (``v60k.backends.diarization.metrics.Span``), read
from an RTTM file or from a generated episode's truth; ``names`` maps a reference speaker to the character
they play (a speaker missing from it is nobody of the cast: their lines are right only when null).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from v60k.backends.diarization.metrics import Span, speaker_at


@dataclass
class AttributionScore:
    named_right: int = 0  # the expected name
    wrong: int = 0  # a name other than the expected one, or a name where none is expected (the goal is zero)
    null_right: int = 0  # null where nobody of the cast speaks
    missed: int = 0  # null where a name was expected
    total: int = 0

    @property
    def accuracy(self) -> float:
        """Lines right: the expected name, or null where no name is expected."""
        return (self.named_right + self.null_right) / self.total if self.total else 0.0

    @property
    def null_fraction(self) -> float:
        return (self.null_right + self.missed) / self.total if self.total else 0.0

    def __add__(self, other: AttributionScore) -> AttributionScore:
        return AttributionScore(self.named_right + other.named_right, self.wrong + other.wrong,
                                self.null_right + other.null_right, self.missed + other.missed,
                                self.total + other.total)


def reference_speaker(reference: Sequence[Span], start_s: float, end_s: float) -> str | None:
    """The reference speaker who overlaps [start_s, end_s) the most."""
    return speaker_at([{"start_s": s, "end_s": e, "speaker": who} for s, e, who in reference], start_s, end_s)


def oracle_lines(segments: Iterable[Mapping[str, Any]], reference: Sequence[Span]) -> list[dict[str, Any]]:
    """Transcript segments as diarized lines whose speaker is the reference speaker they overlap most (oracle
    diarization); line ids L0000, L0001, ..."""
    return [{"line_id": f"L{i:04d}", "start_s": float(seg["start_s"]), "end_s": float(seg["end_s"]),
             "text": str(seg.get("text") or "").strip(),
             "speaker": reference_speaker(reference, float(seg["start_s"]), float(seg["end_s"])),
             "words": list(seg.get("words") or [])}
            for i, seg in enumerate(segments)]


def introduce(lines: Iterable[dict[str, Any]], reference: Sequence[Span],
              intros: Mapping[str, str]) -> list[dict[str, Any]]:
    """The lines with ``intros[speaker]`` put before the text of each reference speaker's first line."""
    out: list[dict[str, Any]] = []
    done: set[str] = set()
    for line in lines:
        who = reference_speaker(reference, line["start_s"], line["end_s"])
        if who in intros and who not in done:
            line = {**line, "text": f"{intros[who]} {line['text']}"}
            done.add(who)
        out.append(line)
    return out


def score_lines(lines: Iterable[Mapping[str, Any]], reference: Sequence[Span],
                names: Mapping[str, str]) -> AttributionScore:
    """Each attributed line (``character`` or None) against the name of the reference speaker it overlaps most."""
    score = AttributionScore()
    for line in lines:
        spoken_by = reference_speaker(reference, float(line["start_s"]), float(line["end_s"]))
        expected = names.get(spoken_by) if spoken_by is not None else None
        character = line.get("character")
        score.total += 1
        if character is None:
            score.null_right += expected is None
            score.missed += expected is not None
        elif character == expected:
            score.named_right += 1
        else:
            score.wrong += 1
    return score
