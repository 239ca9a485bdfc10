"""The time-span algebra that transcription and diarization share."""

from __future__ import annotations

import random

import pytest

from v60k.core.spans import intersect_spans, merge_spans, overlap_s, subtract_spans, total_s, widen


def test_merge_sorts_joins_touching_and_drops_empty() -> None:
    assert merge_spans([(5.0, 6.0), (0.0, 1.0), (1.0, 2.0), (3.0, 3.0), (1.5, 2.5)]) == [(0.0, 2.5), (5.0, 6.0)]
    assert merge_spans([]) == []


def test_intersect_and_subtract() -> None:
    spans, others = [(0.0, 4.0), (6.0, 8.0)], [(1.0, 2.0), (3.0, 7.0)]
    assert intersect_spans(spans, others) == [(1.0, 2.0), (3.0, 4.0), (6.0, 7.0)]
    assert subtract_spans(spans, others) == [(0.0, 1.0), (2.0, 3.0), (7.0, 8.0)]
    assert subtract_spans(spans, []) == spans and intersect_spans(spans, []) == []


def test_widen_stays_within_limits_and_merges() -> None:
    assert widen([(0.1, 1.0), (1.3, 2.0)], 0.2, limit_s=2.1) == [(0.0, 2.1)]


@pytest.mark.parametrize("seed", range(5))
def test_union_splits_into_shared_and_rest(seed: int) -> None:
    rng = random.Random(seed)

    def draw() -> list[tuple[float, float]]:
        starts = [rng.uniform(0, 100) for _ in range(20)]
        return [(s, s + rng.uniform(0, 8)) for s in starts]

    spans, others = draw(), draw()
    shared, rest = intersect_spans(spans, others), subtract_spans(spans, others)
    assert total_s(spans) == pytest.approx(total_s(shared) + total_s(rest))
    assert overlap_s(spans, others) == pytest.approx(overlap_s(others, spans)) == pytest.approx(total_s(shared))
    assert overlap_s(rest, others) == pytest.approx(0.0, abs=1e-9)
