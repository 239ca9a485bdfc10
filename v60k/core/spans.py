"""Time-span algebra on (start_s, end_s) pairs: union, intersection, difference, widening, totals.

Transcription (re-decoding, coverage figures) and diarization (overlapped speech) share it.
"""

from __future__ import annotations

from collections.abc import Iterable

Span = tuple[float, float]


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """The union of time spans as sorted, disjoint spans (empty spans left out)."""
    merged: list[Span] = []
    for start, end in sorted((s, e) for s, e in spans if e > s):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def intersect_spans(spans: Iterable[Span], others: Iterable[Span]) -> list[Span]:
    """The time the union of ``spans`` shares with the union of ``others``, as sorted, disjoint spans."""
    first, second = merge_spans(spans), merge_spans(others)
    shared: list[Span] = []
    j = 0
    for start, end in first:
        while j < len(second) and second[j][1] <= start:
            j += 1
        k = j
        while k < len(second) and second[k][0] < end:
            shared.append((max(start, second[k][0]), min(end, second[k][1])))
            k += 1
    return shared


def subtract_spans(spans: Iterable[Span], others: Iterable[Span]) -> list[Span]:
    """The union of ``spans`` without the union of ``others``, as sorted, disjoint spans."""
    rest: list[Span] = []
    holes = merge_spans(others)
    for start, end in merge_spans(spans):
        cursor = start
        for hole_start, hole_end in holes:
            if hole_end <= cursor or hole_start >= end:
                continue
            if hole_start > cursor:
                rest.append((cursor, hole_start))
            cursor = max(cursor, hole_end)
        if cursor < end:
            rest.append((cursor, end))
    return rest


def total_s(spans: Iterable[Span]) -> float:
    """Seconds covered by the union of ``spans``."""
    return sum(end - start for start, end in merge_spans(spans))


def overlap_s(spans: Iterable[Span], others: Iterable[Span]) -> float:
    """Seconds that the union of ``spans`` shares with the union of ``others``."""
    return sum(end - start for start, end in intersect_spans(spans, others))


def widen(spans: Iterable[Span], pad_s: float, limit_s: float | None = None) -> list[Span]:
    """Each span widened by ``pad_s`` on both sides (kept within [0, ``limit_s``]), merged."""
    upper = float("inf") if limit_s is None else limit_s
    return merge_spans((max(0.0, start - pad_s), min(upper, end + pad_s)) for start, end in spans)
