"""Split assignment: whole series (a video without one is its own group), deterministic, never per row.

One method, ``series``, wherever shards are written (``v60k run`` and ``v60k shard`` alike; the config's
``output.split_method`` names it, and the older names ``hash`` and ``rank`` mean the same method):

1. each group is placed by a seeded hash against the cumulative ratios, so a series keeps its split as the
   corpus grows;
2. then every split with a ratio > 0 that got no group takes one from the split with the most groups (the one
   whose hash is lowest), as long as that split keeps one: with at least as many groups as splits, train,
   validation and test are never empty (three videos of three series, or without series, fill all three);
3. a series is never cut across splits (its episodes would leak characters and scenes into the test split):
   when there are fewer groups than splits, the plan's ``notes`` say which splits stay empty and why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SPLIT_METHOD = "series"
METHOD_ALIASES = frozenset({"series", "hash", "rank"})  # hash / rank: the names of earlier versions
EVAL_SPLITS = ("validation", "test")


def split_group(video_id: str, series: str | None) -> str:
    """The unit a split is assigned to: the series, else the video itself."""
    return f"series:{series}" if series else f"video:{video_id}"


def _unit_interval(seed: int, group: str) -> float:
    digest = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _check(ratios: Mapping[str, float], method: str) -> list[str]:
    if method not in METHOD_ALIASES:
        raise ValueError(f"unknown split method {method!r} (the method is {SPLIT_METHOD!r})")
    names = [name for name, ratio in ratios.items() if ratio > 0]
    if not names:
        raise ValueError("at least one split needs a ratio > 0")
    return names


def assign_splits(groups: Iterable[str], ratios: Mapping[str, float], seed: int = 0,
                  method: str = SPLIT_METHOD) -> dict[str, str]:
    """{group: split} for every group; ``ratios`` need not sum to 1 (they are normalised)."""
    names = _check(ratios, method)
    total = sum(ratios[name] for name in names)
    bounds, acc = [], 0.0
    for name in names:
        acc += ratios[name] / total
        bounds.append((acc, name))
    unique = sorted(set(groups))
    points = {group: _unit_interval(seed, group) for group in unique}
    out = {group: next((name for bound, name in bounds if point < bound), names[-1]) for group, point in points.items()}
    for empty in [name for name in reversed(names) if name not in out.values()]:  # test, then validation
        members = {name: sorted((g for g, s in out.items() if s == name), key=lambda g: (points[g], g))
                   for name in names}
        donor = max(names, key=lambda name: (len(members[name]), -names.index(name)))
        if len(members[donor]) < 2:
            break  # fewer groups than splits: the rest stay empty (SplitPlan says so)
        out[members[donor][0]] = empty
    return out


@dataclass
class SplitPlan:
    """Each video's split, and what a reader of the corpus should know about it (empty splits and why)."""

    split_of: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def videos_in(self, split: str) -> int:
        return sum(1 for s in self.split_of.values() if s == split)


def plan_splits(series_of: Mapping[str, str | None], ratios: Mapping[str, float], seed: int = 0,
                method: str = SPLIT_METHOD) -> SplitPlan:
    """The split of every video (``{video_id: series or None}``), whole series together; notes for every split
    with a ratio > 0 that stays empty, with the reason."""
    names = _check(ratios, method)
    groups = {video: split_group(video, series) for video, series in series_of.items()}
    by_group = assign_splits(groups.values(), ratios, seed, method)
    plan = SplitPlan({video: by_group[group] for video, group in groups.items()})
    empty = [name for name in names if plan.videos_in(name) == 0]
    if empty and series_of:
        count = len(set(groups.values()))
        plan.notes.append(
            f"split(s) {', '.join(repr(n) for n in empty)} are empty: {len(series_of)} video(s) in {count} "
            f"series-or-video group(s) for {len(names)} splits, and a series is never cut across splits; "
            "add videos of other series (or evaluate on another split with `v60k eval --split`)")
    return plan


def empty_eval_splits(rows_by_split: Mapping[str, int]) -> list[str]:
    """The evaluation splits (validation, test) a table has no row in."""
    return [name for name in EVAL_SPLITS if not rows_by_split.get(name)]
