"""attribute: map each diarization speaker to a character of the cast, or to no one.

Evidence per (speaker, name), from the dialogue itself:
- a vocative or greeting ("Hi Monica", "Ross, are you ...", "..., Monica.") says the current speaker is *not*
  that character, and the addressee is probably the next different speaker (a greeting, a question) or the
  previous one (an answer: "Yes Ross, ..."); when both are the same speaker, that one;
- a self-introduction ("I'm Ross", "my name is Ross") says the speaker is that character;
- a third-person mention is weak evidence that the speaker is not that character;
- optionally, a per-series voice bank (v60k.voice_bank) adds evidence by nearest-neighbour voice match.
The assignment is one-to-one within a video (Hungarian over the evidence, with a "no one" option for every
speaker). A speaker's confidence is how clearly its evidence for the chosen name beats its best alternative
(another name, or no one); below ``min_confidence`` the character stays null. Reads diarization.json (+ info.json
when the manifest has no cast), writes lines.json.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from v60k.stage import SkipVideo, Stage, StageResult, StageSettings, Video
from v60k.stages.diarize import read_input_json, upstream_reason
from v60k.voice_bank import VoiceBank
from v60k.workdir import read_json, write_json

GREETINGS = ("hi", "hey", "hello", "morning", "good morning", "good evening", "good night", "bye", "goodbye",
             "welcome", "excuse me", "listen", "look", "come on", "oh", "dear")
ANSWERS = ("yes", "yeah", "yep", "no", "nope", "thanks", "thank you", "sure", "okay", "ok", "right", "sorry",
           "well", "of course", "fine", "alright", "all right")
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
    # per-series voice bank
    voice_bank: bool = True
    bank_match_cosine: float = 0.85
    bank_margin: float = 0.05
    bank_weight: float = 1.5
    bank_min_confidence: float = 0.8
    # LLM arbitration of low-confidence speakers (off by default; see docs/diarization.md)
    llm_arbitration: bool = False
    max_cast_from_info: int = 12


class Attribute(Stage):
    name = "attribute"
    version = "1"
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
        diarization = read_input_json(paths.diarization_json)
        lines = diarization.get("lines") or []
        dialogue = " ".join(str(ln.get("text") or "") for ln in lines)
        cast, cast_source = resolve_cast(video, paths.info_json, paths.root, dialogue, self.settings.max_cast_from_info)
        speakers = sorted(diarization.get("speakers") or {})
        evidence = dialogue_evidence(lines, speakers, cast, self.settings)
        bank_used = 0
        bank = None
        if self.settings.voice_bank and video.series and self.context is not None and cast:
            bank = VoiceBank.for_series(self.workdir, video.series)
            bank_used = add_voice_bank_evidence(evidence, diarization["speakers"], cast, bank, video.video_id,
                                                self.settings)
        assignment = assign(evidence, speakers, cast, self.settings)
        usage: dict[str, float] = {}
        if self.settings.llm_arbitration and cast and self._llm is not None:
            before = self._llm.meter.snapshot()
            assignment = arbitrate_with_llm(assignment, lines, cast, self.context, complete=self._ask_llm,
                                            confidence=self.settings.min_confidence)
            usage = (self._llm.meter.snapshot() - before).to_dict()
        speaker_out = {
            s: {"character": assignment[s][0], "confidence": round(assignment[s][1], 3),
                "evidence": {n: round(v, 3) for n, v in evidence[s].items() if v}}
            for s in speakers
        }
        out_lines = []
        for line in lines:
            character, confidence = assignment.get(line.get("speaker"), (None, 0.0))
            out_lines.append({**{k: v for k, v in line.items() if k != "words"}, "character": character,
                              "confidence": round(confidence, 3), "words": line.get("words", [])})
        document: dict[str, Any] = {"cast": cast, "cast_source": cast_source, "speakers": speaker_out,
                                    "lines": out_lines}
        if not cast:
            document["note"] = "no cast list (manifest, title, description, subtitles): every character is null"
        write_json(paths.lines_json, document)
        if bank is not None:
            confident = {assignment[s][0]: diarization["speakers"][s]["embedding"] for s in speakers
                         if assignment[s][0] and assignment[s][1] >= self.settings.bank_min_confidence
                         and diarization["speakers"][s].get("embedding")}
            bank.update(video.video_id, confident)
        named = sum(1 for ln in out_lines if ln["character"])
        return StageResult(
            outputs={"lines": paths.lines_json.name},
            metrics={"cast_size": len(cast), "cast_source": cast_source, "speakers": len(speakers),
                     "named_speakers": sum(1 for s in speaker_out.values() if s["character"]),
                     "lines": len(out_lines), "named_lines": named, "voice_bank_matches": bank_used,
                     "llm_arbitration": ("on" if self._llm is not None else "no_llm_endpoint")
                     if self.settings.llm_arbitration else "off"},
            usage=usage,
        )


# ---- the cast -----------------------------------------------------------------------------------
def resolve_cast(video: Video, info_json: Path, video_dir: Path, dialogue: str, limit: int) -> tuple[list[str], str]:
    """The manifest's characters; else names found in info.json: speaker prefixes of the subtitles, and
    capitalised words of the title and description that the dialogue also says capitalised (and never in
    lower case: 'Breakfast' in a title is no name)."""
    if video.characters:
        return _unique([c.strip() for c in video.characters if c and c.strip()]), "manifest"
    if not info_json.exists():
        return [], "none"
    info = read_json(info_json)
    speakers_in_subtitles: list[str] = []
    for relative in (info.get("subtitles") or {}).values():
        path = video_dir / str(relative)
        if path.exists() and path.is_file():  # "NAME: text" speaker prefixes in subtitle cues
            speakers_in_subtitles += re.findall(r"^\s*(?:-\s*)?([A-Z][A-Za-z]+)\s*:", path.read_text("utf-8", "replace"), re.M)
    text = " ".join(str(info.get(k) or "") for k in ("title", "description"))
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


def dialogue_evidence(lines: list[dict[str, Any]], speakers: list[str], cast: list[str],
                      settings: AttributeSettings) -> dict[str, dict[str, float]]:
    """Evidence[speaker][name] from vocatives, self-introductions and mentions (see the module docstring)."""
    evidence = {s: dict.fromkeys(cast, 0.0) for s in speakers}
    turns = [ln.get("speaker") for ln in lines]
    for i, line in enumerate(lines):
        speaker, text = line.get("speaker"), str(line.get("text") or "")
        if speaker not in evidence:
            continue
        previous = next((s for s in reversed(turns[:i]) if s and s != speaker), None)
        following = next((s for s in turns[i + 1 :] if s and s != speaker), None)
        for name in cast:
            if is_self_introduction(text, name):
                evidence[speaker][name] += settings.self_intro_weight
                continue
            kinds = find_vocatives(text, name)
            if not kinds:
                if mentions(text, name):
                    evidence[speaker][name] -= settings.mention_penalty
                continue
            evidence[speaker][name] -= settings.vocative_weight  # one does not call oneself by name
            for kind in kinds[:1]:
                weight = settings.vocative_weight
                if previous and previous == following:
                    evidence[previous][name] += 1.5 * weight
                    continue
                likely, other = (previous, following) if kind == "answer" else (following, previous)
                if likely is None:
                    likely, other = other, None
                if likely:
                    evidence[likely][name] += weight
                if other:
                    evidence[other][name] += weight / 2
    return evidence


def add_voice_bank_evidence(evidence: dict[str, dict[str, float]], speakers: dict[str, Any], cast: list[str],
                            bank: VoiceBank, video_id: str, settings: AttributeSettings) -> int:
    """Bank voices close to a speaker's embedding (threshold and margin) add evidence for that name."""
    used = 0
    for speaker, info in speakers.items():
        matches = bank.match(info.get("embedding"), exclude_video=video_id)
        if matches and matches[0].name in cast and matches[0].similarity >= settings.bank_match_cosine \
                and matches[0].margin >= settings.bank_margin:
            evidence[speaker][matches[0].name] += settings.bank_weight
            used += 1
    return used


# ---- assignment ---------------------------------------------------------------------------------
def assign(evidence: dict[str, dict[str, float]], speakers: list[str], cast: list[str],
           settings: AttributeSettings) -> dict[str, tuple[str | None, float]]:
    """One-to-one speaker → name (or no one) maximising the evidence; (character or None, confidence).

    The confidence is that of the value given, null included: a name's is how clearly its evidence beats the
    speaker's best alternative; a null's is how clearly "no one" beats the speaker's best name (or, for a name
    that fell below ``min_confidence``, one minus that name's confidence)."""
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
            result[speaker] = (None, round(_sigmoid(settings.confidence_slope * (settings.no_one_score - best)), 3))
            continue
        alternatives = [settings.no_one_score, *(scores[row, j] for j in range(len(cast)) if j != col)]
        margin = float(scores[row, col] - max(alternatives))
        confidence = _sigmoid(settings.confidence_slope * margin)
        result[speaker] = (cast[col], confidence) if confidence >= settings.min_confidence else (None, 1 - confidence)
    return result


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def arbitration_prompt(speaker: str, lines: list[dict[str, Any]], names: list[str], max_lines: int = 60) -> str:
    """The question put to an LLM about one speaker left null: the dialogue by speaker label, and the names."""
    dialogue = "\n".join(f"{ln.get('speaker') or 'UNKNOWN'}: {ln.get('text', '')}" for ln in lines[:max_lines])
    return (f"A transcript of a video, lines labelled by anonymous speaker:\n{dialogue}\n\n"
            f"Which of these characters is {speaker}: {', '.join(names)}? Answer with exactly one of the names, "
            "or 'none' when the transcript does not make it clear.")


def arbitrate_with_llm(assignment: dict[str, tuple[str | None, float]], lines: list[dict[str, Any]],
                       cast: list[str], context: Any,
                       complete: Callable[[str], str] | None = None,
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
