"""Word error rate with a small text normalizer (tests and the transcribe benchmark use it)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

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
