"""clips: group consecutive scenes into clips of about ``min_s``–``max_s`` seconds (30–120 s by default).

A clip is cut only at a scene boundary and never inside a line: a line that crosses a boundary (speech over a
cut) keeps the scenes on both sides together. Scenes glued this way form units; units are grouped greedily,
each clip growing while it is shorter than ``min_s`` or while the next unit brings it closer to ``target_s``
without passing ``max_s``. A unit longer than ``max_s`` is a clip of its own (it cannot be cut); a short tail
joins the clip before it when the two fit in ``max_s``. Every line belongs to exactly one clip (the one holding
its midpoint). Reads scenes.json and lines.json (absent when the speech stages were skipped: clips then come from
scenes alone, and such clips simply produce no dialogues); writes clips.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import Field, model_validator

from v60k.core import documents
from v60k.core.documents import Clip, DocumentError, Line, Lines, Scenes
from v60k.core.errors import BAD_INPUT
from v60k.core.stage import SkipVideo, Stage, StageError, StageResult, StageSettings, Video

BOUNDARY_TOLERANCE_S = 0.05  # a line within this of a cut does not cross it (timestamp jitter)


class ClipsSettings(StageSettings):
    min_s: float = Field(30.0, gt=0, description="a clip shorter than this grows by the next scenes")
    target_s: float = Field(60.0, gt=0, description="clips grow towards this length")
    max_s: float = Field(120.0, gt=0, description="no clip grows past this (one longer scene aside)")

    @model_validator(mode="after")
    def ordered(self) -> ClipsSettings:
        if not self.min_s <= self.target_s <= self.max_s:
            raise ValueError("clips: expected min_s <= target_s <= max_s")
        return self


@dataclass
class Unit:
    """Scenes that must stay in one clip."""

    start_s: float
    end_s: float
    scene_indices: list[int] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def scene_spans(scenes_doc: Scenes) -> list[tuple[int, float, float]]:
    """(index, start_s, end_s) of the scenes; the whole stream as one scene when none were detected."""
    scenes = sorted(((s.index, s.start_s, s.end_s) for s in scenes_doc.scenes if s.end_s > s.start_s),
                    key=lambda s: s[1])
    if not scenes:
        duration = scenes_doc.stream.duration_s
        if duration > 0:
            scenes = [(0, 0.0, duration)]
    return scenes


def glue_units(scenes: Sequence[tuple[int, float, float]], lines: Sequence[Line]) -> list[Unit]:
    """Merge scenes whose common boundary a line crosses."""
    crossed = set()
    for line in lines:
        start, end = line.start_s, line.end_s
        for i in range(len(scenes) - 1):
            boundary = scenes[i][2]
            if start < boundary - BOUNDARY_TOLERANCE_S and end > boundary + BOUNDARY_TOLERANCE_S:
                crossed.add(i)
    units: list[Unit] = []
    for i, (index, start, end) in enumerate(scenes):
        if units and (i - 1) in crossed:
            units[-1].end_s = end
            units[-1].scene_indices.append(index)
        else:
            units.append(Unit(start, end, [index]))
    return units


def group_units(units: Sequence[Unit], min_s: float, target_s: float, max_s: float) -> list[Unit]:
    """Consecutive units grouped into clips (see the module docstring)."""
    clips: list[Unit] = []
    current: Unit | None = None
    for unit in units:
        if current is None:
            current = Unit(unit.start_s, unit.end_s, list(unit.scene_indices))
            continue
        grown = unit.end_s - current.start_s
        fits = grown <= max_s
        closer = abs(grown - target_s) < abs(current.duration_s - target_s)
        if fits and (current.duration_s < min_s or closer):
            current.end_s = unit.end_s
            current.scene_indices += unit.scene_indices
        else:
            clips.append(current)
            current = Unit(unit.start_s, unit.end_s, list(unit.scene_indices))
    if current is not None:
        if clips and current.duration_s < min_s and current.end_s - clips[-1].start_s <= max_s:
            clips[-1].end_s = current.end_s
            clips[-1].scene_indices += current.scene_indices
        else:
            clips.append(current)
    return clips


def make_clips(video_id: str, scenes_doc: Scenes, lines: Sequence[Line], settings: ClipsSettings) -> list[Clip]:
    """The clips.json records of one video."""
    grouped = group_units(glue_units(scene_spans(scenes_doc), lines), settings.min_s, settings.target_s,
                          settings.max_s)
    records = [Clip(clip_id=f"{video_id}-c{i:03d}", index=i, start_s=round(c.start_s, 3), end_s=round(c.end_s, 3),
                    scene_indices=c.scene_indices, line_ids=[])
               for i, c in enumerate(grouped)]
    for line in lines:
        middle = (line.start_s + line.end_s) / 2
        owner = next((r for r in records if middle < r.end_s), records[-1] if records else None)
        if owner is not None:
            owner.line_ids.append(line.line_id)
    return records


class Clips(Stage):
    name = "clips"
    version = "1"
    reads = ("scenes", "lines")
    writes = ("clips",)
    Settings = ClipsSettings

    def process(self, video: Video) -> StageResult:
        paths = video.paths
        if not Scenes.exists(paths):
            raise SkipVideo("no scenes.json (the scenes stage did not run for this video)", "no_scenes")
        has_lines = Lines.exists(paths)
        try:
            scenes_doc = Scenes.load(paths)
            lines = Lines.load(paths).lines if has_lines else []
        except DocumentError as exc:
            raise StageError(str(exc), BAD_INPUT) from exc
        records = make_clips(video.video_id, scenes_doc, lines, self.settings)
        if not records:
            raise SkipVideo("no scenes and no stream duration: nothing to cut into clips", "no_scenes")
        documents.Clips(clips=records).save(paths)
        durations = [r.end_s - r.start_s for r in records]
        return StageResult(
            outputs={"clips": paths.clips_json.name},
            metrics={"clips": len(records), "lines": len(lines), "has_lines": has_lines,
                     "clips_with_lines": sum(1 for r in records if r.line_ids),
                     "mean_duration_s": round(sum(durations) / len(durations), 2),
                     "shorter_than_min": sum(1 for d in durations if d < self.settings.min_s),
                     "longer_than_max": sum(1 for d in durations if d > self.settings.max_s)})
