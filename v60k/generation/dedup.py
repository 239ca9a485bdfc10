"""Near-duplicate texts among generated summaries and dialogues: MinHash signatures of word 3-gram shingles
and an LSH index (``datasketch``); a candidate counts only when its estimated Jaccard similarity reaches the
threshold (the LSH index alone also returns some less similar candidates)."""

from __future__ import annotations

import zlib
from functools import lru_cache
from typing import Any

from datasketch import MinHash, MinHashLSH

from v60k.generation.quality import words

NUM_PERM = 64
SHINGLE_WORDS = 3
# the permutations of MinHash(num_perm=NUM_PERM, seed=1), drawn once: drawing them per text took most of the time.
# Shingles are hashed to 32 bits with CRC-32 (C, deterministic) before the permutations, not datasketch's
# default SHA-1 (a Python call per shingle, most of the rest): signatures are compared only within one process.
_PERMUTATIONS = MinHash(num_perm=NUM_PERM, seed=1).permutations


def signature(text: str) -> MinHash:
    """The MinHash of the text's word 3-grams (casefolded; a text of fewer words: its words)."""
    tokens = [w.casefold() for w in words(text)]
    shingles = ({" ".join(tokens[i:i + SHINGLE_WORDS]) for i in range(len(tokens) - SHINGLE_WORDS + 1)}
                if len(tokens) >= SHINGLE_WORDS else set(tokens))
    minhash = MinHash(num_perm=NUM_PERM, seed=1, hashfunc=zlib.crc32, permutations=_PERMUTATIONS)
    minhash.update_batch([s.encode("utf-8") for s in sorted(shingles)])
    return minhash


def dialogue_text(dialogue: dict[str, Any]) -> str:
    """A dialogue's turns, one line each: the text its near-duplicates are found by."""
    return "\n".join(str(t.get("text") or "") for t in dialogue.get("turns") or [])


@lru_cache(maxsize=16)
def _bands(threshold: float) -> tuple[int, int]:
    """The LSH (bands, rows) datasketch chooses for the threshold: found by numeric integration (milliseconds),
    so once per threshold rather than per index."""
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    return lsh.b, lsh.r


class NearDuplicates:
    """Texts seen so far; ``first_match`` says which earlier text a new one nearly repeats (or keeps it)."""

    def __init__(self, threshold: float = 0.7):
        self.threshold = threshold
        self._lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM, params=_bands(threshold))
        self._signatures: dict[str, MinHash] = {}

    def first_match(self, item_id: str, text: str) -> str | None:
        """The id of the most similar earlier text at or above the threshold; None: ``text`` is new and is
        remembered under ``item_id``."""
        minhash = signature(text)
        match = self.closest(minhash)
        if match is None:
            self.remember(item_id, minhash)
        return match

    def closest(self, minhash: MinHash) -> str | None:
        """The id of the most similar remembered text at or above the threshold (ties: the smaller id)."""
        scored = [(minhash.jaccard(self._signatures[other]), other) for other in self._lsh.query(minhash)]
        close = sorted(((-score, other) for score, other in scored if score >= self.threshold))
        return close[0][1] if close else None

    def remember(self, item_id: str, minhash: MinHash) -> None:
        """Index ``minhash`` under ``item_id`` (for texts checked with ``closest`` first)."""
        self._lsh.insert(item_id, minhash)
        self._signatures[item_id] = minhash
