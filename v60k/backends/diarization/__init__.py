"""Speaker diarization backends: one interface, two adapters.

- ``embeddings`` (CPU default, offline): Silero speech regions → resemblyzer embeddings of overlapping windows →
  average-linkage clustering cut at a cosine distance (the count comes from the data) → frame resegmentation →
  a second speaker where pyannote's segmentation model hears overlapped speech (``overlap.py``).
- ``pyannote`` (production, GPU): the pyannote.audio 4 pipeline (``speaker-diarization-community-1`` by default);
  its overlap-aware output gives the second speakers.

Both return a ``DiarizationResult``: exclusive (non-overlapping) turns (words are assigned to them), a second
speaker's turns where two speak at once (``overlap``), and, per speaker, a mean
embedding when the backend has one. Heavy libraries are imported inside the adapters only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

SPEAKER_PREFIX = "SPEAKER_"


@dataclass
class Turn:
    """Who speaks when: ``[start_s, end_s)`` for one speaker label."""

    start_s: float
    end_s: float
    speaker: str

    def to_dict(self) -> dict[str, Any]:
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3), "speaker": self.speaker}


@dataclass
class SpeakerCountHint:
    """What is known about the number of speakers. ``num`` is exact; ``min``/``max`` bound the search;
    ``cast_size`` is only a soft lower bound (uncast speakers appear, cast members may be absent)."""

    num: int | None = None
    min: int | None = None
    max: int | None = None
    cast_size: int | None = None


@dataclass
class DiarizationResult:
    turns: list[Turn]
    embeddings: dict[str, list[float] | None] = field(default_factory=dict)
    backend: str = ""
    model: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    overlap: list[Turn] = field(default_factory=list)  # a second speaker where two speak at once

    @property
    def speakers(self) -> list[str]:
        return sorted({t.speaker for t in self.turns})


class DiarizationBackend(Protocol):
    """What the diarize stage needs from a backend."""

    name: str

    def load(self) -> None:
        """Load models (once per worker)."""

    def identity(self) -> dict[str, Any]:
        """What decides the output besides the settings (model name, revision): part of the fingerprint."""

    def diarize(self, audio: np.ndarray, sample_rate: int, hint: SpeakerCountHint,
                speech_spans: list[tuple[float, float]] | None = None) -> DiarizationResult:
        """Turns for mono float32 ``audio``; ``speech_spans`` (from the transcript) may restrict where speech is."""


def speaker_label(index: int) -> str:
    return f"{SPEAKER_PREFIX}{index:02d}"


def relabel_by_first_turn(result: DiarizationResult) -> DiarizationResult:
    """Speakers renamed SPEAKER_00, SPEAKER_01, ... in order of their first turn (stable, readable labels);
    a speaker heard only over another (in ``overlap``) comes after them, by their first overlapped turn."""
    order: list[str] = []
    for turn in [*sorted(result.turns, key=lambda t: (t.start_s, t.end_s)),
                 *sorted(result.overlap, key=lambda t: (t.start_s, t.end_s))]:
        if turn.speaker not in order:
            order.append(turn.speaker)
    mapping = {old: speaker_label(i) for i, old in enumerate(order)}
    turns = [Turn(t.start_s, t.end_s, mapping[t.speaker]) for t in sorted(result.turns, key=lambda t: t.start_s)]
    embeddings = {mapping[k]: v for k, v in result.embeddings.items() if k in mapping}
    overlap = [Turn(t.start_s, t.end_s, mapping[t.speaker]) for t in result.overlap]
    return DiarizationResult(turns, embeddings, result.backend, result.model, result.details, overlap)


def make_backend(name: str, **options: Any) -> DiarizationBackend:
    """The backend called ``name`` (``embeddings`` or ``pyannote``) built from its options."""
    if name == "embeddings":
        from v60k.backends.diarization.embeddings import EmbeddingDiarizer

        return EmbeddingDiarizer(**options)
    if name == "pyannote":
        from v60k.backends.diarization.pyannote import PyannoteDiarizer

        return PyannoteDiarizer(**options)
    raise ValueError(f"unknown diarization backend {name!r}; choose 'embeddings' or 'pyannote'")
