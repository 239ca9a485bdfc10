"""The rules a generated summary, persona or dialogue must pass before it enters ``generation.json``.

Each check returns ``None`` (it passes) or a ``Problem``: a short ``code`` (counted per reason in the stage's
metrics) and a ``detail`` that says what was wrong (sent back to the model once when it is asked again, and kept
with the rejected item). The rules:

- ``empty_turn`` / ``json_fragment``: a text that is empty, has no letter, or is a piece of JSON (``{``);
- ``bare_name``: a turn that is only a name (``Monica``);
- ``turn_length``: a turn with fewer than ``min_turn_words`` or more than ``max_turn_words`` words;
- ``exchange_count``: not the number of user/character exchanges asked for;
- ``invented_character``: a name that is neither in the cast nor in the transcript;
- ``self_address``: the speaking character addresses itself by name (``Ross, ...`` in Ross's turn);
- ``ai_phrase``: "as an AI", "language model", ...;
- ``repetition``: one sentence said three times or more (a model caught in a loop);
- ``language``: the text is, with high confidence, in another language than the video's (``langid``; skipped,
  with a note, when the video's language is unknown or ``langid`` is not installed).
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

AI_PHRASES = re.compile(r"\b(as an ai\b|an ai\b(?! of)|ai (language )?model|language model|as an assistant|"
                        r"i am an ai|i'm an ai|virtual assistant|ai assistant)", re.IGNORECASE)
_DESCRIPTORS = re.compile(r"^(the|a|an|another|some|someone|somebody|unknown|unnamed|other|others|everyone|"
                          r"nobody|narrator|user|group|crowd)\b", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*", re.UNICODE)
_JSON_MARKERS = re.compile(r"\"(role|text|turns|what_happens|characters|name)\"\s*:")


class QualitySettings(BaseModel):
    """``generate.quality``: bounds of the rules (see the module docstring)."""

    min_turn_words: int = Field(2, ge=1)
    max_turn_words: int = Field(120, ge=1)
    language_check: bool = True
    language_min_chars: int = Field(40, ge=1, description="shorter texts are too short to identify reliably")
    language_min_probability: float = Field(0.95, gt=0, le=1)
    dedup_threshold: float = Field(0.7, gt=0, le=1, description="MinHash Jaccard estimate of a near-duplicate")


@dataclass(frozen=True)
class Problem:
    """Why an item breaks a rule: a reason code and what exactly was wrong."""

    code: str
    detail: str

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def _fold(text: str) -> str:
    return " ".join(words(text)).casefold()


class KnownNames:
    """The names a clip may speak of: the cast and every name that occurs in its transcript."""

    def __init__(self, cast: Iterable[str], transcript: str):
        self.cast = sorted({c.strip() for c in cast if c and c.strip()})
        self._cast = {_fold(c) for c in self.cast} | {_fold(part) for c in self.cast for part in words(c)}
        self._transcript = f" {_fold(transcript)} "

    def knows(self, name: str) -> bool:
        """A name from the cast (or one of its words), one that the transcript contains, or a descriptor
        ("the waiter", "someone")."""
        folded = _fold(name)
        if not folded:
            return False
        if folded in self._cast or f" {folded} " in self._transcript:
            return True
        parts = [re.sub(r"['’]s$", "", part) for part in folded.split()]
        if len(parts) > 1 and any(part in self._cast for part in parts):
            return True  # "Monica Geller" for Monica, "Ross's sister"
        return bool(_DESCRIPTORS.match(name.strip()))

    def is_bare_name(self, text: str) -> bool:
        folded = _fold(text)
        return bool(folded) and len(folded.split()) <= 2 and folded in self._cast


# ------------------------------------------------------------------------------------------------ text rules
def fragment_problem(text: str, where: str) -> Problem | None:
    """Empty text, text without a letter, or a piece of JSON."""
    stripped = text.strip()
    if not stripped:
        return Problem("empty_turn", f"{where} is empty")
    if not words(stripped) or _JSON_MARKERS.search(stripped):
        return Problem("json_fragment", f"{where} is a JSON fragment, not text: {_quote(stripped)}")
    if stripped[0] in "{[" or stripped[-1] in "}]":
        try:
            json.loads(stripped)
        except ValueError:
            if stripped[0] in "{[" and stripped.count(stripped[0]) > stripped.count("}" if stripped[0] == "{" else "]"):
                return Problem("json_fragment", f"{where} is a JSON fragment, not text: {_quote(stripped)}")
        else:
            return Problem("json_fragment", f"{where} is JSON, not text: {_quote(stripped)}")
    return None


def repetition_problem(text: str, where: str) -> Problem | None:
    """A sentence of three words or more that comes back three times or more."""
    sentences = [_fold(x) for x in re.split(r"[.!?…\n]+", text)]
    counts = Counter(x for x in sentences if len(x.split()) >= 3)
    if counts and (top := counts.most_common(1)[0])[1] >= 3:
        return Problem("repetition", f"{where} repeats {_quote(top[0])} {top[1]} times")
    return None


def ai_phrase_problem(text: str, where: str) -> Problem | None:
    found = AI_PHRASES.search(text)
    return Problem("ai_phrase", f"{where} says {found.group(0)!r}") if found else None


def self_address_problem(text: str, character: str, where: str) -> Problem | None:
    """The character calls itself by (one of the words of) its name, as one addresses someone."""
    for name in {character, *words(character)}:
        if len(name) < 2:
            continue
        n = re.escape(name)
        vocative = (rf"(^|[.!?…]\s+|\b(hey|hi|oh|well|listen|look|come on|thanks|thank you|okay|ok)[,!]?\s+){n}\b"
                    rf"(?!\s*(here|speaking|is|was|has|had|did|does|and|will|would|'s|’s))|,\s*{n}\s*([,.!?…]|$)")
        if re.search(vocative, text.strip(), re.IGNORECASE if name.islower() else 0):
            return Problem("self_address", f"{where}: {character} addresses itself by name: {_quote(text)}")
    return None


@functools.lru_cache(maxsize=1)
def _identifier() -> Any:
    try:
        from langid.langid import LanguageIdentifier, model
    except ImportError:
        return None
    import numpy as np

    identifier = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    weights, priors = identifier.nb_ptc, identifier.nb_pc

    def class_log_probs(fv: Any) -> Any:
        """langid's Naive Bayes sum over the text's non-zero features only: the same figures, ~20x faster
        than its dense product with the whole feature x language matrix."""
        present = np.flatnonzero(fv)
        return fv[present] @ weights[present] + priors

    identifier.nb_classprobs = class_log_probs
    return identifier


def language_available() -> bool:
    return _identifier() is not None


def language_problem(text: str, language: str | None, settings: QualitySettings, where: str) -> Problem | None:
    """``language`` when ``langid`` is sure (``language_min_probability``) the text is in another language."""
    if not settings.language_check or not language or len(text) < settings.language_min_chars:
        return None
    identifier = _identifier()
    if identifier is None:
        return None
    found, probability = identifier.classify(text)
    expected = language.split("-")[0].split("_")[0].lower()
    if found != expected and probability >= settings.language_min_probability:
        return Problem("language", f"{where} is in {found!r} (p={probability:.2f}), the video is in {expected!r}")
    return None


def _quote(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return json.dumps(flat if len(flat) <= limit else flat[: limit - 1] + "…", ensure_ascii=False)


# ------------------------------------------------------------------------------------------------ items
@dataclass
class ClipRules:
    """What one clip's items are checked against."""

    names: KnownNames
    language: str | None
    settings: QualitySettings

    def text_problem(self, text: str, where: str) -> Problem | None:
        return (fragment_problem(text, where) or ai_phrase_problem(text, where) or repetition_problem(text, where)
                or language_problem(text, self.language, self.settings, where))

    def names_problem(self, names: Iterable[str], where: str) -> Problem | None:
        invented = [n for n in names if not self.names.knows(n)]
        if invented:
            return Problem("invented_character",
                           f"{where} names {', '.join(map(repr, invented))}, who is neither in the cast "
                           f"({', '.join(self.names.cast) or 'none'}) nor in the transcript")
        return None

    def check_summary(self, what_happens: str, notes: Sequence[dict[str, str]]) -> Problem | None:
        """A summary: real text, only known characters."""
        problem = self.names_problem([n["name"] for n in notes], "the summary")
        if problem:
            return problem
        for label, text in [("what_happens", what_happens),
                            *((f"{n['name']}'s {k}", n[k]) for n in notes for k in ("does", "says", "feels"))]:
            problem = fragment_problem(text, label) or ai_phrase_problem(text, label)
            if problem:
                return problem
        full = " ".join([what_happens, *(n[k] for n in notes for k in ("does", "says", "feels"))])
        return language_problem(full, self.language, self.settings, "the summary")

    def check_persona(self, character: str, fields: dict[str, str], known: dict[str, str]) -> Problem | None:
        """A persona: known people only (``known``: name → relation), and every field a real description of a
        sane length (not a name)."""
        problem = self.names_problem(known, f"{character}'s persona")
        if problem:
            return problem
        s = self.settings
        for name, relation in known.items():
            where = f"{character}'s persona (relation to {name})"
            problem = self.text_problem(relation, where)
            if problem is None and len(words(relation)) > s.max_turn_words:
                problem = Problem("turn_length", f"{where} has {len(words(relation))} words (allowed "
                                                 f"{s.max_turn_words} at most)")
            if problem:
                return problem
        for label, text in fields.items():
            where = f"{character}'s persona ({label})"
            problem = self.text_problem(text, where)
            if problem:
                return problem
            if self.names.is_bare_name(text):
                return Problem("bare_name", f"{where} is only a name: {_quote(text)}")
            count = len(words(text))
            if not 3 <= count <= s.max_turn_words:
                return Problem("turn_length", f"{where} has {count} words (allowed 3–{s.max_turn_words})")
        return None

    def check_dialogue(self, turns: Sequence[dict[str, Any]], character: str, exchanges: int) -> Problem | None:
        """A dialogue: every turn real text of a sane length, the exchanges asked for, the character in its
        own voice."""
        s = self.settings
        for number, turn in enumerate(turns, 1):
            who = character if turn["role"] == "character" else (turn.get("speaker") or "the user")
            where = f"turn {number} ({who})"
            text = str(turn.get("text") or "")
            problem = fragment_problem(text, where)
            if problem:
                return problem
            if self.names.is_bare_name(text):
                return Problem("bare_name", f"{where} is only a name: {_quote(text)}")
            count = len(words(text))
            if not s.min_turn_words <= count <= s.max_turn_words:
                return Problem("turn_length", f"{where} has {count} words (allowed {s.min_turn_words}–"
                                              f"{s.max_turn_words})")
            problem = ai_phrase_problem(text, where) or repetition_problem(text, where)
            if problem is None and turn["role"] == "character":
                problem = self_address_problem(text, character, where)
            if problem:
                return problem
        got = sum(t["role"] == "character" for t in turns)
        if got != exchanges:
            return Problem("exchange_count", f"{got} exchange{'s' * (got != 1)} where exactly {exchanges} were asked")
        return language_problem(" ".join(str(t.get("text") or "") for t in turns), self.language, s, "the dialogue")
