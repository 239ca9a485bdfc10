"""Diarization scores against a reference (the tests and the diarize benchmark use them).

A reference is a list of ``(start_s, end_s, speaker)`` spans; hypothesis turns are dicts with ``start_s``,
``end_s`` and ``speaker`` (``Turn.to_dict()`` or diarization.json's ``turns``).
"""

from __future__ import annotations

from collections.abc import Sequence
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
