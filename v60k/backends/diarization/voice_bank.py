"""A per-series voice bank: speaker embeddings of characters attributed with high confidence, reused across
episodes of the same series (nearest neighbour with thresholds).

Stored in the work dir as ``voice_banks/<series>.json``::

    {"series": "friends", "version": 1,
     "entries": {"<video_id>": {"Ross": [0.01, ...], "Monica": [...]}}}

Entries are keyed by video so that re-running a video replaces its own contribution, and a video never
matches against itself. Writes are atomic (last writer wins on a concurrent update: a lost entry only means
one episode less of evidence).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from v60k.core.workdir import WorkDir, read_json, sanitize_id, write_json

BANK_VERSION = 1
MAX_ENTRIES_PER_SERIES = 200


@dataclass
class VoiceMatch:
    name: str
    similarity: float
    margin: float  # over the best other name


class VoiceBank:
    def __init__(self, path: Path, series: str):
        self.path = Path(path)
        self.series = series
        self.entries: dict[str, dict[str, list[float]]] = {}
        if self.path.exists():
            data = read_json(self.path)
            if data.get("version") == BANK_VERSION:
                self.entries = data.get("entries", {})

    @classmethod
    def for_series(cls, workdir: WorkDir, series: str) -> VoiceBank:
        return cls(workdir.root / "voice_banks" / f"{sanitize_id(series)}.json", series)

    def names(self, exclude_video: str | None = None) -> dict[str, np.ndarray]:
        """Every bank embedding per name (rows L2-normalised), other videos only."""
        found: dict[str, list[list[float]]] = {}
        for video_id, voices in self.entries.items():
            if video_id == exclude_video:
                continue
            for name, vector in voices.items():
                found.setdefault(name, []).append(vector)
        out = {}
        for name, vectors in found.items():
            matrix = np.asarray(vectors, dtype=np.float64)
            out[name] = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-9)
        return out

    def match(self, embedding: list[float] | None, exclude_video: str | None = None) -> list[VoiceMatch]:
        """Per name: the best cosine similarity of ``embedding`` to that name's voices, best first, with the
        margin over the next name."""
        if embedding is None:
            return []
        vector = np.asarray(embedding, dtype=np.float64)
        vector = vector / max(float(np.linalg.norm(vector)), 1e-9)
        scores = sorted(((float(np.max(m @ vector)), name) for name, m in self.names(exclude_video).items()
                         if m.shape[1] == len(vector)), reverse=True)
        matches = []
        for i, (similarity, name) in enumerate(scores):
            others = [s for j, (s, _) in enumerate(scores) if j != i]
            matches.append(VoiceMatch(name, similarity, similarity - (max(others) if others else 0.0)))
        return matches

    def update(self, video_id: str, voices: dict[str, list[float]]) -> None:
        """Replace ``video_id``'s voices (empty: remove them) and save atomically."""
        if self.path.exists():  # re-read: another worker may have written since we loaded
            data = read_json(self.path)
            if data.get("version") == BANK_VERSION:
                self.entries = data.get("entries", {})
        self.entries.pop(video_id, None)
        if voices:
            self.entries[video_id] = {name: [round(float(v), 5) for v in vec] for name, vec in voices.items()}
        while len(self.entries) > MAX_ENTRIES_PER_SERIES:
            self.entries.pop(next(iter(self.entries)))
        write_json(self.path, self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"series": self.series, "version": BANK_VERSION, "entries": self.entries}
