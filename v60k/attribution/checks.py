"""What the attribute stage checks before it names a speaker cluster: whose lines the evidence is about,
whether a cluster's own evidence contradicts itself (two people in one cluster), and how much of the cluster
the evidence covers.

A *clue* is one piece of evidence about one line: the line's speaker introduces themself as a name
(``self_intro``), is addressed by that name by the line before or after (``addressed``; ``addressed_maybe``
for the less likely addressee), calls someone by that name (``addresses``, or ``addresses_unanswered`` when no
other speaker talks around that line), or mentions it (``mention``). Voice-bank matches concern a whole
cluster (``voice_bank``, no line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ANSWERS = ("yes", "yeah", "yep", "no", "nope", "thanks", "thank you", "sure", "okay", "ok", "right", "sorry",
           "well", "of course", "fine", "alright", "all right")
REPLIES = ("yes", "yeah", "yep", "no", "nope", "sure", "fine", "of course", "not really", "i'm fine")
_QUESTION_THEN_REPLY = re.compile(rf"\?\s+(?:{'|'.join(re.escape(w) for w in REPLIES)})\b", re.I)
_REPLY_START = re.compile(rf"^(?:{'|'.join(re.escape(w) for w in REPLIES)})\b", re.I)
SUPPORT_KINDS = ("self_intro", "addressed")
ADDRESS_KINDS = ("addresses", "addresses_unanswered")


@dataclass(frozen=True)
class Clue:
    line: int | None  # index into the lines; None for a whole-cluster clue (voice bank)
    speaker: str
    name: str
    kind: str
    weight: float

    def supports(self) -> bool:
        """Strong evidence that this line's (or cluster's) speaker IS ``name``."""
        return self.kind in SUPPORT_KINDS or self.kind == "voice_bank"


def evidence_totals(clues: list[Clue], speakers: list[str], cast: list[str]) -> dict[str, dict[str, float]]:
    """Evidence[speaker][name]: the sum of the clues' weights."""
    evidence = {s: dict.fromkeys(cast, 0.0) for s in speakers}
    for clue in clues:
        if clue.speaker in evidence and clue.name in evidence[clue.speaker]:
            evidence[clue.speaker][clue.name] += clue.weight
    return evidence


def find_conflicts(clues: list[Clue], speaker: str, lines: list[dict[str, Any]],
                   answer_gap_s: float = 2.0) -> list[dict[str, Any]]:
    """Evidence within one cluster that one person cannot have produced (empty: none found).

    - ``two_names``: the cluster is supported as two different names (two self-introductions, addressed as one
      name and introducing itself as another, ...);
    - ``self_address``: the cluster calls a name that it is also supported as (nobody calls themself by name);
    - ``unanswered_address``: the cluster calls someone by name and no other speaker talks around that line,
      so the addressee's replies, if any, are in this cluster too;
    - ``self_answer``: the cluster asks a question and its very next words answer it ("How are you?" "Fine,
      thanks."), within a line or across two of its lines with nobody in between (``answer_gap_s``).
    """
    own = [c for c in clues if c.speaker == speaker]
    supported: dict[str, list[Clue]] = {}
    for clue in own:
        if clue.supports():
            supported.setdefault(clue.name, []).append(clue)
    conflicts: list[dict[str, Any]] = []
    if len(supported) > 1:
        conflicts.append({"kind": "two_names", "names": sorted(supported),
                          "lines": sorted({line_ref(lines, c.line) for cs in supported.values() for c in cs
                                           if c.line is not None})})
    for clue in own:
        if clue.kind in ADDRESS_KINDS and clue.name in supported:
            conflicts.append({"kind": "self_address", "name": clue.name, "line": line_ref(lines, clue.line),
                              "supported_by": sorted({c.kind for c in supported[clue.name]})})
        elif clue.kind == "addresses_unanswered":
            conflicts.append({"kind": "unanswered_address", "name": clue.name, "line": line_ref(lines, clue.line)})
    for i, line in enumerate(lines):
        if line.get("speaker") != speaker:
            continue
        text = str(line.get("text") or "").strip()
        following = lines[i + 1] if i + 1 < len(lines) else None
        if _QUESTION_THEN_REPLY.search(text) or (
                following is not None and following.get("speaker") == speaker and text.endswith("?")
                and gap_s(line, following) <= answer_gap_s
                and _REPLY_START.match(str(following.get("text") or "").strip())):
            conflicts.append({"kind": "self_answer", "line": line_ref(lines, i)})
    return conflicts


def coverage(clues: list[Clue], speaker: str, name: str, lines: list[dict[str, Any]], window_s: float) -> float:
    """Share of ``speaker``'s speech time within ``window_s`` of a line that supports ``name`` (a voice-bank
    match covers the whole cluster); 0.0 without support."""
    support = [c for c in clues if c.speaker == speaker and c.name == name and c.supports()]
    if any(c.line is None for c in support):
        return 1.0
    anchors = [span(lines[c.line]) for c in support if c.line is not None]
    own = [span(ln) for ln in lines if ln.get("speaker") == speaker]
    total = sum(max(end - start, 0.0) for start, end in own)
    if not anchors or total <= 0:
        return 0.0
    near = sum(max(end - start, 0.0) for start, end in own
               if any(start - a_end <= window_s and a_start - end <= window_s for a_start, a_end in anchors))
    return near / total


def span(line: dict[str, Any]) -> tuple[float, float]:
    """(start_s, end_s) of a line; 0.0 where a time is missing."""
    return float(line.get("start_s") or 0.0), float(line.get("end_s") or 0.0)


def gap_s(earlier: dict[str, Any], later: dict[str, Any]) -> float:
    """Seconds from the end of ``earlier`` to the start of ``later``."""
    return span(later)[0] - span(earlier)[1]


def line_ref(lines: list[dict[str, Any]], index: int | None) -> str | None:
    """The line's id for reports (its index when it has none)."""
    if index is None:
        return None
    return str(lines[index].get("line_id") or f"#{index}")


def runs_on(first: dict[str, Any], second: dict[str, Any], max_gap_s: float) -> bool:
    """A sentence running on from one line into the next, under ``max_gap_s`` apart: no final punctuation
    before the cut, or a lower-case start after it."""
    before, after = str(first.get("text") or "").strip(), str(second.get("text") or "").strip()
    if first.get("end_s") is None or second.get("start_s") is None or gap_s(first, second) > max_gap_s:
        return False
    return not before.endswith((".", "!", "?", "…", '"')) or after[:1].islower()


def sentence_cuts(lines: list[dict[str, Any]], max_gap_s: float) -> dict[int, str]:
    """Lines whose speaker label is doubtful: where a sentence runs on across a change of speaker
    (``runs_on``), the diarizer has most likely put the change a few words off, and the shorter piece carries
    the wrong label. Returns {index of the shorter piece: reason}."""
    doubtful: dict[int, str] = {}
    for i in range(len(lines) - 1):
        first, second = lines[i], lines[i + 1]
        if not first.get("speaker") or not second.get("speaker") or first["speaker"] == second["speaker"]:
            continue
        if not runs_on(first, second, max_gap_s):
            continue
        shorter = min((i, i + 1), key=lambda j: span(lines[j])[1] - span(lines[j])[0])
        doubtful[shorter] = (f"a sentence runs on across the change of speaker between "
                             f"{line_ref(lines, i)} and {line_ref(lines, i + 1)}: this piece's speaker is doubtful")
    return doubtful
