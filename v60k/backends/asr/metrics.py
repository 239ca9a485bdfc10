"""Transcript quality measures: word error rate with a small text normalizer, and how much of the speech
regions the kept words cover (tests, the transcribe stage's totals and the benchmarks use them)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

from v60k.core.spans import Span, intersect_spans, merge_spans, overlap_s, subtract_spans, total_s, widen

_NUMBERS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
            "7": "seven", "8": "eight", "9": "nine", "10": "ten"}
_CONTRACTIONS = {"don't": "do not", "can't": "cannot", "won't": "will not", "i'm": "i am", "it's": "it is",
                 "that's": "that is", "you're": "you are", "we're": "we are", "i'll": "i will", "i've": "i have",
                 "let's": "let us", "isn't": "is not", "didn't": "did not", "doesn't": "does not"}


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation; common contractions expanded, single digits spelled out."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    words: list[str] = []
    for raw in re.findall(r"[a-z0-9']+", text):
        token = raw.strip("'")
        if not token:
            continue
        expanded = _CONTRACTIONS.get(token) or _NUMBERS.get(token) or token
        words.extend(expanded.split())
    return words


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (substitutions, insertions, deletions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_token in enumerate(reference, 1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_token in enumerate(hypothesis, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_token != hyp_token))
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(S + D + I) / N over normalized words; 0.0 for two empty texts, 1.0 for speech heard as nothing."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else float(len(hyp))
    return edit_distance(ref, hyp) / len(ref)


WORD_TOLERANCE_S = 0.2  # word timestamps (tiny.en, cross-attention alignment) are this far off, often


def speech_coverage(speech: Iterable[Span], words: Iterable[Span], tolerance_s: float = WORD_TOLERANCE_S) -> float:
    """Fraction of the speech regions (the Silero VAD's, unpadded) covered by word time spans, each word widened
    by ``tolerance_s`` on both sides; 1.0 when there is no speech."""
    regions = merge_spans(speech)
    total = sum(end - start for start, end in regions)
    if total <= 0:
        return 1.0
    return overlap_s(regions, widen(words, tolerance_s)) / total


def speech_totals(speech: Iterable[Span], kept_words: Iterable[Span], dropped: Iterable[Span],
                  tolerance_s: float = WORD_TOLERANCE_S) -> dict[str, float]:
    """Seconds of VAD speech, of it covered by kept words (each widened by ``tolerance_s``), and of it lost:
    under what the guards dropped and not covered by a kept word."""
    regions = merge_spans(speech)
    kept = widen(kept_words, tolerance_s)
    lost = subtract_spans(intersect_spans(regions, dropped), kept)
    return {"vad_speech_s": round(float(total_s(regions)), 3),
            "kept_speech_s": round(float(overlap_s(regions, kept)), 3),
            "dropped_speech_s": round(float(total_s(lost)), 3)}
