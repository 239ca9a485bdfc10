"""Segments short enough to carry one speaker: a decoded segment (up to a 30 s window of speech, often several
people) is split between words where they leave a silence, where the Silero VAD hears a pause, and where it
outgrows a maximum length; diarization and attribution then work per line.
"""

from __future__ import annotations

from dataclasses import dataclass

from v60k.backends.asr import Segment, Word
from v60k.core.spans import Span


@dataclass
class SplitSettings:
    max_word_gap_s: float = 0.6  # a silence this long between two words ends a line
    min_pause_s: float = 0.5  # a VAD pause this long between two words' midpoints ends a line
    max_segment_s: float = 8.0  # a longer line is cut at its widest gap between words
    min_line_s: float = 0.1  # a line the decoder gave no duration (one word, start == end) is given this much


def pauses_between(speech: list[Span], min_pause_s: float) -> list[Span]:
    """The silences of at least ``min_pause_s`` between consecutive speech regions (sorted, disjoint)."""
    return [(end, start) for (_, end), (start, _) in zip(speech, speech[1:]) if start - end >= min_pause_s]


def _midpoint(word: Word) -> float:
    return (word.start_s + word.end_s) / 2


def _cuts(words: list[Word], pauses: list[Span], settings: SplitSettings) -> list[int]:
    """Indices i where a new line starts at ``words[i]``: a silence between words or a VAD pause."""
    cuts = []
    for i in range(1, len(words)):
        before, after = words[i - 1], words[i]
        if after.start_s - before.end_s >= settings.max_word_gap_s:
            cuts.append(i)
            continue
        lo, hi = _midpoint(before), _midpoint(after)
        if any(lo < (start + end) / 2 < hi and end - start >= settings.min_pause_s for start, end in pauses):
            cuts.append(i)
    return cuts


def _cut_long(words: list[Word], max_segment_s: float) -> list[list[Word]]:
    """``words`` cut at their widest gaps (the one nearer the middle on a tie) until each part fits."""
    if len(words) < 2 or words[-1].end_s - words[0].start_s <= max_segment_s:
        return [words]
    middle = (words[0].start_s + words[-1].end_s) / 2
    best = max(range(1, len(words)),
               key=lambda i: (round(words[i].start_s - words[i - 1].end_s, 2), -abs(words[i].start_s - middle)))
    return _cut_long(words[:best], max_segment_s) + _cut_long(words[best:], max_segment_s)


def split_segment(segment: Segment, pauses: list[Span], settings: SplitSettings | None = None) -> list[Segment]:
    """``segment`` as one or more lines (each with its words, their span and text, the decoder's facts);
    a segment without word times is returned as it is."""
    settings = settings or SplitSettings()
    words = segment.words
    if len(words) < 2:
        return [segment]
    bounds = [0, *_cuts(words, pauses, settings), len(words)]
    parts = [part for lo, hi in zip(bounds, bounds[1:]) for part in _cut_long(words[lo:hi], settings.max_segment_s)]
    if len(parts) == 1:
        return [segment]
    return [segment.with_words(part) for part in parts]


def split_segments(segments: list[Segment], speech: list[Span], settings: SplitSettings | None = None) -> list[Segment]:
    """Every segment split into lines (``speech``: the VAD's speech regions, whose pauses end lines too)."""
    settings = settings or SplitSettings()
    pauses = pauses_between(speech, settings.min_pause_s)
    lines = [line for segment in segments for line in split_segment(segment, pauses, settings)]
    return [_with_duration(line, settings.min_line_s) for line in lines]


def _with_duration(line: Segment, min_line_s: float) -> Segment:
    """``line`` with an end after its start: a word timed ``start == end`` (it happens) still takes some time,
    and a line of no duration is no utterance."""
    if line.end_s > line.start_s:
        return line
    line.end_s = line.start_s + min_line_s
    for word in line.words:
        word.end_s = max(word.end_s, min(word.start_s + min_line_s, line.end_s))
    return line
