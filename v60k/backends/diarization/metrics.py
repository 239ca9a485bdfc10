"""Diarization scores against a reference (the tests and the diarize benchmark use them).

A reference is a list of ``(start_s, end_s, speaker)`` spans; hypothesis turns are dicts with ``start_s``,
``end_s`` and ``speaker`` (``Turn.to_dict()`` or diarization.json's ``turns``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

Span = tuple[float, float, str]


def overlap_seconds(turns: Sequence[dict[str, Any]], reference: Sequence[Span]) -> dict[tuple[str, str], float]:
    """Seconds shared by each (hypothesis speaker, reference speaker) pair."""
    overlap: dict[tuple[str, str], float] = {}
    for turn in turns:
        for start, end, speaker in reference:
            shared = min(turn["end_s"], end) - max(turn["start_s"], start)
            if shared > 0:
                key = (turn["speaker"], speaker)
                overlap[key] = overlap.get(key, 0.0) + shared
    return overlap


def cluster_purity(turns: Sequence[dict[str, Any]], reference: Sequence[Span]) -> float:
    """Share of overlapped time whose hypothesis cluster's majority reference speaker is the right one."""
    overlap = overlap_seconds(turns, reference)
    total = sum(overlap.values())
    majority = sum(max(v for (h, _), v in overlap.items() if h == hyp) for hyp in {h for h, _ in overlap})
    return majority / total if total else 0.0


def speaker_at(lines: Sequence[dict[str, Any]], start_s: float, end_s: float) -> str | None:
    """The ``speaker`` of the line that overlaps [start_s, end_s) the most (None: no line overlaps it)."""
    best, best_overlap = None, 0.0
    for line in lines:
        overlap = min(end_s, line["end_s"]) - max(start_s, line["start_s"])
        if overlap > best_overlap:
            best, best_overlap = line["speaker"], overlap
    return best


def louder_channel_reference(stereo: np.ndarray, rate: int, step_s: float = 0.1, min_rms: float = 0.01) -> list[Span]:
    """For a recording with one speaker per channel (samples x 2, floats): per ``step_s``, the louder channel
    ("left" / "right") where either is above ``min_rms``."""
    step = int(rate * step_s)
    reference: list[Span] = []
    for i in range(0, len(stereo) - step + 1, step):
        energy = np.sqrt((stereo[i : i + step] ** 2).mean(axis=0))
        if energy.max() > min_rms:
            reference.append((i / rate, (i + step) / rate, "left" if energy[0] > energy[1] else "right"))
    return reference


def read_rttm(path: str | Path) -> dict[str, list[Span]]:
    """An RTTM file's ``SPEAKER`` lines as reference spans per file id (in file order)."""
    spans: dict[str, list[Span]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[0] == "SPEAKER":
            start, duration = float(fields[3]), float(fields[4])
            spans.setdefault(fields[1], []).append((start, start + duration, fields[7]))
    return spans


def diarization_error(turns: Sequence[dict[str, Any]], reference: Sequence[Span],
                      scored: tuple[float, float] | None = None) -> dict[str, float]:
    """Diarization error rate with ``pyannote.metrics`` (no collar, overlapped speech scored) over ``scored``
    (start, end; default: the reference's extent), and its parts as shares of the reference speech:
    ``der``, ``missed``, ``false_alarm``, ``confusion``, plus ``speech_s`` (reference seconds)."""
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    truth, hypothesis = Annotation(), Annotation()
    for index, (start, end, speaker) in enumerate(reference):
        truth[Segment(start, end), index] = speaker
    for index, turn in enumerate(turns):
        hypothesis[Segment(turn["start_s"], turn["end_s"]), index] = turn["speaker"]
    if scored is None:
        scored = (min((s for s, _, _ in reference), default=0.0), max((e for _, e, _ in reference), default=0.0))
    metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    # one speaker's overlapping spans are one span (else they would count as two speakers at once)
    parts = metric(truth.support(), hypothesis.support(), uem=Timeline([Segment(*scored)]), detailed=True)
    total = parts["total"] or 1.0
    return {"der": float(parts["diarization error rate"]), "missed": parts["missed detection"] / total,
            "false_alarm": parts["false alarm"] / total, "confusion": parts["confusion"] / total,
            "speech_s": float(parts["total"])}
