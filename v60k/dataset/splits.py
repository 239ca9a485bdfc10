"""Split assignment: per series (per video where there is none), deterministic, never per row.

``hash`` (the default) places each group by a seeded hash against the cumulative ratios: a series keeps its
split as the corpus grows. ``rank`` orders the groups by the same hash and fills the splits by count, so that
small corpora (a demo) get every split with a non-zero ratio.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping


def split_group(video_id: str, series: str | None) -> str:
    """The unit a split is assigned to: the series, else the video itself."""
    return f"series:{series}" if series else f"video:{video_id}"


def _unit_interval(seed: int, group: str) -> float:
    digest = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(groups: Iterable[str], ratios: Mapping[str, float], seed: int = 0,
                  method: str = "hash") -> dict[str, str]:
    """{group: split} for every group; ``ratios`` need not sum to 1 (they are normalised)."""
    names = [name for name, ratio in ratios.items() if ratio > 0]
    if not names:
        raise ValueError("at least one split needs a ratio > 0")
    total = sum(ratios[name] for name in names)
    unique = sorted(set(groups))
    if method == "hash":
        bounds, acc = [], 0.0
        for name in names:
            acc += ratios[name] / total
            bounds.append((acc, name))
        out = {}
        for group in unique:
            point = _unit_interval(seed, group)
            out[group] = next((name for bound, name in bounds if point < bound), names[-1])
        return out
    if method == "rank":
        ordered = sorted(unique, key=lambda g: (_unit_interval(seed, g), g))
        quotas = _quotas(len(ordered), [ratios[n] / total for n in names])
        out, start = {}, 0
        for name, quota in zip(names, quotas):
            for group in ordered[start : start + quota]:
                out[group] = name
            start += quota
        return out
    raise ValueError(f"unknown split method {method!r} (hash or rank)")


def _quotas(count: int, shares: list[float]) -> list[int]:
    """Largest-remainder counts; every share > 0 gets at least one group while groups remain."""
    quotas = [int(count * s) for s in shares]
    for index in sorted(range(len(shares)), key=lambda i: -(count * shares[i] - quotas[i])):
        if sum(quotas) >= count:
            break
        quotas[index] += 1
    for index in reversed(range(len(quotas))):  # no empty split when it can be avoided (later ones first)
        if quotas[index] == 0:
            donor = max(range(len(quotas)), key=lambda i: quotas[i])
            if quotas[donor] > 1:
                quotas[donor] -= 1
                quotas[index] += 1
    return quotas
