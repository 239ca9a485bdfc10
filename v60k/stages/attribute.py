"""attribute: map each diarization speaker to a character of the cast, or to no one, never guessing.

Evidence comes from the dialogue itself, each clue tied to the line it is about (v60k.attribution.checks):
- a vocative or greeting ("Hi Monica", "Ross, are you ...", "..., Monica.") says the current speaker is *not*
  that character, and the addressee is probably the next different speaker (a greeting, a question) or the
  previous one (an answer: "Yes Ross, ..."); when both are the same speaker, that one;
- a self-introduction ("I'm Ross", "my name is Ross") says the speaker is that character;
- a third-person mention is weak evidence that the speaker is not that character;
- optionally, a per-series voice bank (v60k.backends.diarization.voice_bank) adds evidence by nearest-neighbour voice match.
A speaker whose own clues contradict each other (two names, calling itself, answering itself) holds two people
and stays null. The others are assigned one-to-one within a video (Hungarian over the evidence, with a "no one"
option for every speaker). A name's confidence is how clearly its evidence beats the best alternative times
the share of the speaker's speech near a line supporting it; below ``min_confidence`` the character stays
null, with the reason in lines.json. Reads diarization.json (+ info.json when the manifest has no cast), writes
lines.json.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from v60k.attribution.checks import (
    ANSWERS,
    Clue,
    coverage,
    evidence_totals,
    find_conflicts,
    gap_s,
    line_ref,
    runs_on,
    sentence_cuts,
    span,
)
from v60k.backends.diarization.voice_bank import VoiceBank
from v60k.core.documents import Diarization, DocumentError, Info, Lines
from v60k.core.errors import BAD_INPUT
from v60k.core.stage import SkipVideo, Stage, StageError, StageResult, StageSettings, Video
from v60k.stages.diarize import upstream_reason

GREETINGS = ("hi", "hey", "hello", "morning", "good morning", "good evening", "good night", "bye", "goodbye",
             "welcome", "excuse me", "listen", "look", "come on", "oh", "dear")
SELF_INTRODUCTIONS = (r"\bI\s*'?\s*a?m\s+{name}\b", r"\bI am\s+{name}\b", r"\bmy name is\s+{name}\b",
                      r"\bthis is\s+{name}\s+(?:speaking|here)\b", r"\bit\s*'?s\s+(?:me,?\s+)?{name}\b(?!\s*'s)",
                      r"\bcall me\s+{name}\b")
NOT_NAMES = {"The", "This", "That", "These", "Those", "And", "But", "For", "With", "From", "Episode", "Season",
             "Part", "Official", "Video", "Clip", "Scene", "Full", "New", "Best", "Show", "Series", "Chapter",
             "What", "When", "Where", "Why", "How", "Who", "Yes", "You", "Your", "Our", "Their", "His", "Her",
             "Friday", "Monday", "Tuesday", "Wednesday", "Thursday", "Saturday", "Sunday", "English", "HD"}


class AttributeSettings(StageSettings):
    min_confidence: float = Field(0.6, ge=0.0, le=1.0, description="below it, the character stays null")
    no_one_score: float = Field(0.5, description="evidence a name must beat for a speaker to get it")
    vocative_weight: float = 1.0
    self_intro_weight: float = 2.0
    mention_penalty: float = 0.3
    confidence_slope: float = 3.0
    cut_gap_s: float = Field(0.25, ge=0.0, description="a sentence running on across a change of speaker with "
                             "less than this between the pieces: the shorter piece stays null")
    support_window_s: float = Field(30.0, ge=0.0, description="a speaker's speech this close to a line supporting "
                                    "a name counts as covered by that evidence")
    answer_window_s: float = Field(10.0, ge=0.0, description="the addressee of a vocative is a speaker talking "
                                   "this close to it; with none, the vocative is unanswered")
    # per-series voice bank
    voice_bank: bool = True
    bank_match_cosine: float = 0.85
    bank_margin: float = 0.05
    bank_weight: float = 1.5
    bank_min_confidence: float = Field(0.8, description="strength a named speaker needs to enter the voice bank")
    bank_min_coverage: float = Field(0.8, description="coverage a named speaker needs to enter the voice bank")
    # LLM arbitration of low-confidence speakers (off by default; see docs/diarization.md)
    llm_arbitration: bool = False
    max_cast_from_info: int = 12


class Attribute(Stage):
    name = "attribute"
    version = "2"
    reads = ("info", "diarization")
    writes = ("lines",)
    Settings = AttributeSettings

    settings: AttributeSettings

    def __init__(self, settings: StageSettings | None = None, context: Any = None):
        super().__init__(settings, context)
        self._llm: Any = None

    def _llm_settings(self) -> Any:
        from v60k.backends.llm import LLMSettings

        shared = (self.context.shared.get("llm") if self.context is not None else None) or {}
        return shared if isinstance(shared, LLMSettings) else LLMSettings(**shared)

    def fingerprint_extra(self) -> Any:
        return self._llm_settings().identity() if self.settings.llm_arbitration else None

    def setup(self) -> None:
        if self.settings.llm_arbitration:
            llm = self._llm_settings()
            if llm.enabled:
                from v60k.backends.llm import LLMClient

                self._llm = LLMClient(llm, cache_path=self.workdir.llm_cache_path)

    def teardown(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def _ask_llm(self, prompt: str) -> str:
        """One short, deterministic answer from the shared LLM endpoint ('' on a failed request)."""
        import asyncio

        from v60k.backends.llm import LLMError

        async def ask() -> str:
            try:
                result = await self._llm.chat([{"role": "user", "content": prompt}], temperature=0.0, max_tokens=16)
                return result.content or ""
            finally:
                await self._llm.aclose()

        try:
            return asyncio.run(ask())
        except LLMError:
            return ""

    def process(self, video: Video) -> StageResult:
        paths = video.paths
        if not paths.diarization_json.exists():
            reason, error_class = upstream_reason(video, "diarize", self.context)
            raise SkipVideo(f"no diarization: {reason}", error_class)
        try:
            diarization = Diarization.load(paths)
            info = Info.load_or_empty(paths)
        except DocumentError as exc:
            raise StageError(str(exc), BAD_INPUT) from None
        # the attribution helpers take each line as the mapping diarize wrote (only its own keys)
        lines = [line.model_dump(exclude_unset=True) for line in diarization.lines]
        dialogue = " ".join(line.text for line in diarization.lines)
        cast, cast_source = resolve_cast(video, info, paths.root, dialogue, self.settings.max_cast_from_info)
        speakers = sorted(diarization.speakers)
        clues = line_clues(lines, speakers, cast, self.settings)
        bank = None
        if self.settings.voice_bank and video.series and self.context is not None and cast:
            bank = VoiceBank.for_series(self.workdir, video.series)
            clues += voice_bank_clues(diarization.speakers, cast, bank, video.video_id, self.settings)
        verdicts = attribute_speakers(clues, lines, speakers, cast, self.settings)
        usage: dict[str, float] = {}
        if self.settings.llm_arbitration and cast and self._llm is not None:
            before = self._llm.meter.snapshot()
            open_to_ask = {s: (v["character"], v["confidence"]) for s, v in verdicts.items()
                           if v["status"] != "conflict"}
            answered = arbitrate_with_llm(open_to_ask, lines, cast, complete=self._ask_llm,
                                          confidence=self.settings.min_confidence)
            for speaker, (character, confidence) in answered.items():
                if character and not verdicts[speaker]["character"]:
                    verdicts[speaker].update(character=character, confidence=confidence, status="llm",
                                             reason="named by LLM arbitration at the threshold confidence")
            usage = (self._llm.meter.snapshot() - before).to_dict()
        speaker_out = {s: {**verdicts[s], "confidence": round(verdicts[s]["confidence"], 3)} for s in speakers}
        doubtful = sentence_cuts(lines, self.settings.cut_gap_s) if cast else {}
        out_lines = []
        for index, line in enumerate(lines):
            verdict = verdicts.get(line.get("speaker"), {"character": None, "confidence": 0.0})
            character, confidence = verdict["character"], verdict["confidence"]
            if index in doubtful and character:
                character, confidence = None, 1.0 - confidence
            out_lines.append({**{k: v for k, v in line.items() if k != "words"}, "character": character,
                              "confidence": round(confidence, 3), "words": line.get("words", [])})
        notes: dict[str, Any] = {}
        if doubtful:
            notes["line_notes"] = {line_ref(lines, i): reason for i, reason in sorted(doubtful.items())}
        if not cast:
            notes["note"] = "no cast list (manifest, title, description, subtitles): every character is null"
        Lines(cast=cast, cast_source=cast_source, speakers=speaker_out, lines=out_lines, **notes).save(
            paths, exclude_unset=True)
        if bank is not None:
            confident = {verdicts[s]["character"]: diarization.speakers[s]["embedding"] for s in speakers
                         if verdicts[s]["status"] == "named"
                         and verdicts[s]["strength"] >= self.settings.bank_min_confidence
                         and verdicts[s]["coverage"] >= self.settings.bank_min_coverage
                         and diarization.speakers[s].get("embedding")}
            bank.update(video.video_id, confident)
        bank_used = sum(1 for c in clues if c.kind == "voice_bank")
        statuses = [v["status"] for v in verdicts.values()]
        named = sum(1 for ln in out_lines if ln["character"])
        left_null: dict[str, int] = {}
        seconds = {"named_s": 0.0, "null_s": 0.0}
        for index, line in enumerate(out_lines):
            start_s, end_s = span(line)
            seconds["named_s" if line["character"] else "null_s"] += max(end_s - start_s, 0.0)
            if not line["character"]:
                status = verdicts.get(line.get("speaker"), {}).get("status", "no_speaker")
                reason = "sentence_cut" if index in doubtful and status == "named" else status
                left_null[reason] = left_null.get(reason, 0) + 1
        return StageResult(
            outputs={"lines": paths.lines_json.name},
            metrics={"cast_size": len(cast), "cast_source": cast_source, "speakers": len(speakers),
                     "named_speakers": sum(1 for s in speaker_out.values() if s["character"]),
                     "lines": len(out_lines), "named_lines": named, "voice_bank_matches": bank_used,
                     "conflicted_speakers": statuses.count("conflict"),
                     "items": {"done": named, "rejected": left_null, "failed": {}},
                     "totals": {k: round(v, 3) for k, v in seconds.items()},
                     "llm_arbitration": ("on" if self._llm is not None else "no_llm_endpoint")
                     if self.settings.llm_arbitration else "off"},
            usage=usage,
        )


# ---- the cast -----------------------------------------------------------------------------------
def resolve_cast(video: Video, info: Info, video_dir: Path, dialogue: str, limit: int) -> tuple[list[str], str]:
    """The manifest's characters; else names found in info.json: speaker prefixes of the subtitles, and
    capitalised words of the title and description that the dialogue also says capitalised (and never in
    lower case: 'Breakfast' in a title is no name)."""
    if video.characters:
        return _unique([c.strip() for c in video.characters if c and c.strip()]), "manifest"
    speakers_in_subtitles: list[str] = []
    for relative in info.subtitles.values():
        path = video_dir / str(relative)
        if path.exists() and path.is_file():  # "NAME: text" speaker prefixes in subtitle cues
            speakers_in_subtitles += re.findall(r"^\s*(?:-\s*)?([A-Z][A-Za-z]+)\s*:", path.read_text("utf-8", "replace"), re.M)
    text = " ".join(str(value or "") for value in (info.title, info.description))
    spoken = [w for w in re.findall(r"\b([A-Z][a-z]{2,})\b", text)
              if re.search(rf"\b{w}\b", dialogue) and not re.search(rf"\b{w.lower()}\b", dialogue)]
    names = [n.capitalize() if n.isupper() else n for n in speakers_in_subtitles] + spoken
    cast = [n for n in _unique(names) if n not in NOT_NAMES]
    return cast[:limit], ("info" if cast else "none")


def _unique(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


# ---- evidence -----------------------------------------------------------------------------------
TITLES = {"dr", "mr", "mrs", "ms", "miss", "prof", "professor", "sir", "lady", "lord", "aunt", "uncle", "captain"}


def _name_pattern(name: str) -> str:
    """The full name, or its first name after any title ("Dr. Ross Geller" is also "Ross")."""
    words = [w for w in name.split() if w.strip(".").lower() not in TITLES] or name.split()
    first, full = re.escape(words[0]), re.escape(name)
    return f"(?:{full}|{first})" if full != first else full


def find_vocatives(text: str, name: str) -> list[str]:
    """How ``name`` is addressed in ``text``: 'answer' ("Yes Ross, ...", "Not really, Ross.") or 'greeting'
    ("Hi Ross", "Ross, are you ...?", "Be careful, Ross."); empty when it is not a vocative. The name must be
    capitalised as written (whisper writes names so; 'will' or 'bill' stay out)."""
    pattern = _name_pattern(name)
    lead = "|".join(re.escape(w) for w in sorted(ANSWERS + GREETINGS, key=len, reverse=True))
    kinds, seen = [], set()
    for match in re.finditer(rf"(?:^|[.!?]\s+)(?:({lead})[,!]?\s+)?({pattern})(?=\s*[,.!?]|\s*$)", text, re.I):
        if match.group(2)[:1].isupper():
            kinds.append("answer" if (match.group(1) or "").lower() in ANSWERS else "greeting")
            seen.add(match.start(2))
    for match in re.finditer(rf",\s*({pattern})(?=\s*[,.!?]|\s*$)", text):
        if match.start(1) in seen:
            continue
        sentence = re.split(r"[.!?]\s+", text[: match.start()])[-1].strip().lower()
        kinds.append("answer" if any(sentence.startswith(w) for w in (*ANSWERS, "not ")) else "greeting")
    return kinds


def is_self_introduction(text: str, name: str) -> bool:
    pattern = _name_pattern(name)
    return any(re.search(p.format(name=pattern), text, re.I) for p in SELF_INTRODUCTIONS)


def mentions(text: str, name: str) -> int:
    return len(re.findall(rf"\b{_name_pattern(name)}\b", text))


def line_clues(lines: list[dict[str, Any]], speakers: list[str], cast: list[str],
               settings: AttributeSettings) -> list[Clue]:
    """Every piece of dialogue evidence, tied to the line it is about (see the module docstring). A line whose
    speaker is doubtful (``sentence_cuts``) gives no clue and is nobody's addressee."""
    known = set(speakers)
    clues: list[Clue] = []
    doubtful = sentence_cuts(lines, settings.cut_gap_s)
    turns = [ln.get("speaker") if i not in doubtful else None for i, ln in enumerate(lines)]
    for i, line in enumerate(lines):
        speaker, text = turns[i], str(line.get("text") or "")
        if speaker not in known:
            continue
        previous = next((j for j in range(i - 1, -1, -1) if turns[j] and turns[j] != speaker), None)
        following = next((j for j in range(i + 1, len(lines)) if turns[j] and turns[j] != speaker), None)
        # an addressee takes a turn of their own: close enough, and not a sentence running on across the change
        if previous is not None and (gap_s(lines[previous], line) > settings.answer_window_s
                                     or runs_on(lines[previous], lines[previous + 1], settings.cut_gap_s)):
            previous = None
        if following is not None and (gap_s(line, lines[following]) > settings.answer_window_s
                                      or runs_on(lines[following - 1], lines[following], settings.cut_gap_s)):
            following = None
        for name in cast:
            if is_self_introduction(text, name):
                clues.append(Clue(i, speaker, name, "self_intro", settings.self_intro_weight))
                continue
            kinds = find_vocatives(text, name)
            if not kinds:
                if mentions(text, name):
                    clues.append(Clue(i, speaker, name, "mention", -settings.mention_penalty))
                continue
            answered = previous is not None or following is not None
            clues.append(Clue(i, speaker, name, "addresses" if answered else "addresses_unanswered",
                              -settings.vocative_weight))  # one does not call oneself by name
            weight = settings.vocative_weight
            if previous is not None and following is not None and turns[previous] == turns[following]:
                clues.append(Clue(following if kinds[0] == "greeting" else previous, turns[previous], name,
                                  "addressed", 1.5 * weight))
                continue
            likely, other = (previous, following) if kinds[0] == "answer" else (following, previous)
            if likely is None:
                likely, other = other, None
            if likely is not None:
                clues.append(Clue(likely, turns[likely], name, "addressed", weight))
            if other is not None:
                clues.append(Clue(other, turns[other], name, "addressed_maybe", weight / 2))
    return clues


def dialogue_evidence(lines: list[dict[str, Any]], speakers: list[str], cast: list[str],
                      settings: AttributeSettings) -> dict[str, dict[str, float]]:
    """Evidence[speaker][name]: the sum of the speaker's clues (``line_clues``)."""
    return evidence_totals(line_clues(lines, speakers, cast, settings), speakers, cast)


def voice_bank_clues(speakers: dict[str, Any], cast: list[str], bank: VoiceBank, video_id: str,
                     settings: AttributeSettings) -> list[Clue]:
    """A whole-cluster clue for the bank's nearest name when it is close and clearly ahead."""
    clues = []
    for speaker, info in speakers.items():
        matches = bank.match(info.get("embedding"), exclude_video=video_id)
        if matches and matches[0].name in cast and matches[0].similarity >= settings.bank_match_cosine \
                and matches[0].margin >= settings.bank_margin:
            clues.append(Clue(None, speaker, matches[0].name, "voice_bank", settings.bank_weight))
    return clues


# ---- assignment ---------------------------------------------------------------------------------
def assign(evidence: dict[str, dict[str, float]], speakers: list[str], cast: list[str],
           settings: AttributeSettings) -> dict[str, tuple[str | None, float]]:
    """One-to-one speaker → name (or no one) maximising the evidence; (name or None, strength).

    A name's strength is how clearly its evidence beats the speaker's best alternative (another name, or no
    one); a None's is how clearly "no one" beats the speaker's best name."""
    result: dict[str, tuple[str | None, float]] = {s: (None, 0.0) for s in speakers}
    if not speakers or not cast:
        return result
    from scipy.optimize import linear_sum_assignment

    scores = np.array([[evidence[s][n] for n in cast] for s in speakers], dtype=float)
    no_one = np.full((len(speakers), len(speakers)), -1e6)
    np.fill_diagonal(no_one, settings.no_one_score)
    rows, cols = linear_sum_assignment(np.hstack([scores, no_one]), maximize=True)
    for row, col in zip(rows, cols):
        speaker = speakers[row]
        if col >= len(cast):
            best = float(scores[row].max())
            result[speaker] = (None, _sigmoid(settings.confidence_slope * (settings.no_one_score - best)))
            continue
        alternatives = [settings.no_one_score, *(scores[row, j] for j in range(len(cast)) if j != col)]
        result[speaker] = (cast[col], _sigmoid(settings.confidence_slope * float(scores[row, col] - max(alternatives))))
    return result


def attribute_speakers(clues: list[Clue], lines: list[dict[str, Any]], speakers: list[str], cast: list[str],
                       settings: AttributeSettings) -> dict[str, dict[str, Any]]:
    """Per speaker: character (or None), confidence, status, reason, coverage, evidence, conflicts.

    A speaker whose own evidence contradicts itself (``find_conflicts``) is left null with status
    ``conflict``. The others share the names one-to-one (``assign``); a name is given only when
    ``strength × coverage`` (how clearly it beats the alternatives × the share of the speaker's speech near a
    line supporting it) reaches ``min_confidence``; otherwise null with status ``low_confidence``."""
    evidence = evidence_totals(clues, speakers, cast)
    conflicts = {s: find_conflicts(clues, s, lines) for s in speakers}
    picks = assign(evidence, [s for s in speakers if not conflicts[s]], cast, settings)
    verdicts: dict[str, dict[str, Any]] = {}
    for speaker in speakers:
        verdict: dict[str, Any] = {"character": None, "confidence": 0.0,
                                   "evidence": {n: round(v, 3) for n, v in evidence[speaker].items() if v}}
        if not cast:
            verdict.update(status="no_cast", reason="no cast list")
        elif conflicts[speaker]:
            verdict.update(status="conflict", confidence=1.0, conflicts=conflicts[speaker],
                           reason="the cluster's own evidence points to more than one person: "
                                  + "; ".join(_describe(c) for c in conflicts[speaker]))
        else:
            name, strength = picks[speaker]
            if name is None:
                verdict.update(status="no_evidence", confidence=strength,
                               reason="no name's evidence beats 'no one'")
            else:
                covered = coverage(clues, speaker, name, lines, settings.support_window_s)
                confidence = strength * covered
                verdict.update(coverage=round(covered, 3), strength=round(strength, 3), candidate=name)
                if confidence >= settings.min_confidence:
                    verdict.update(character=name, confidence=confidence, status="named",
                                   reason=f"{name}: strength {strength:.2f} × coverage {covered:.2f}")
                else:
                    verdict.update(confidence=1.0 - confidence, status="low_confidence",
                                   reason=f"{name}: strength {strength:.2f} × coverage {covered:.2f} = "
                                          f"{confidence:.2f} < {settings.min_confidence}")
        verdict["clues"] = [{"line": line_ref(lines, c.line), "name": c.name, "kind": c.kind}
                            for c in clues if c.speaker == speaker and c.kind != "mention"]
        verdicts[speaker] = verdict
    return verdicts


def _describe(conflict: dict[str, Any]) -> str:
    if conflict["kind"] == "two_names":
        return f"supported as {' and '.join(conflict['names'])} ({', '.join(conflict['lines'])})"
    if conflict["kind"] == "self_address":
        return f"calls {conflict['name']} ({conflict['line']}) and is supported as {conflict['name']}"
    if conflict["kind"] == "self_answer":
        return f"answers its own question ({conflict['line']})"
    return f"calls {conflict['name']} ({conflict['line']}) with no other speaker around to answer"


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def arbitration_prompt(speaker: str, lines: list[dict[str, Any]], names: list[str], max_lines: int = 60) -> str:
    """The question put to an LLM about one speaker left null: the dialogue by speaker label, and the names."""
    dialogue = "\n".join(f"{ln.get('speaker') or 'UNKNOWN'}: {ln.get('text', '')}" for ln in lines[:max_lines])
    return (f"A transcript of a video, lines labelled by anonymous speaker:\n{dialogue}\n\n"
            f"Which of these characters is {speaker}: {', '.join(names)}? Answer with exactly one of the names, "
            "or 'none' when the transcript does not make it clear.")


def arbitrate_with_llm(assignment: dict[str, tuple[str | None, float]], lines: list[dict[str, Any]],
                       cast: list[str], complete: Callable[[str], str] | None = None,
                       confidence: float = 0.6) -> dict[str, tuple[str | None, float]]:
    """LLM arbitration for the speakers left null (off by default: ``llm_arbitration: false``).

    ``complete(prompt) -> answer`` is the LLM call (the stage passes the shared ``llm`` endpoint's client).
    An answer counts only when it is exactly one of the names no other speaker holds; it gets ``confidence``
    (the threshold), never more. Without ``complete`` the assignment comes back unchanged.
    """
    if complete is None:
        return assignment
    out = dict(assignment)
    for speaker, (character, _) in assignment.items():
        taken = {c for c, _ in out.values() if c}
        free = [n for n in cast if n not in taken]
        if character is not None or not free:
            continue
        answer = complete(arbitration_prompt(speaker, lines, free)).strip().strip(".\"'").strip()
        if answer in free:
            out[speaker] = (answer, confidence)
    return out
