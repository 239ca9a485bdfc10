"""Suspicious or skipped stretches of audio decoded again, alone, before any guard drops anything.

A Whisper decoding goes wrong locally: a loop ("Hello. Hello. Hello. Hello. Hello." over a 23 s segment), a
window decoded with low confidence, a stretch of speech left without a word. Such a stretch is decoded once
more on its own audio: without the cast prompt, without conditioning on previous text, with Whisper's
temperature fallback (the backend's ``transcribe`` does all three when called without a prompt); the words
are mapped back to the video's clock. A re-decoded stretch replaces the original when it loops less (fewer words that
trimming would remove) or, looping as much, its words are surer; words heard in a skipped stretch are added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from v60k.backends.asr import ASRBackend, Segment, Transcript, Word
from v60k.backends.asr.guards import (
    SAMPLE_RATE,
    GuardSettings,
    excess_repeats,
    repeated_phrase,
    says_no_speech,
)
from v60k.backends.asr.metrics import WORD_TOLERANCE_S
from v60k.core.spans import Span, merge_spans, subtract_spans, widen


@dataclass
class RedecodeSettings:
    enabled: bool = True
    min_hole_s: float = 1.0  # VAD speech this long without a word is decoded again
    context_s: float = 0.3  # audio decoded either side of a stretch
    min_words_kept: float = 0.7  # a re-decoding must keep this share of the original's (non-looped) words


def hallucination_signs(segment: Segment, settings: GuardSettings) -> list[str]:
    """Why a decoded segment looks invented: a high compression ratio, a loop, a low average log-probability,
    or the no-speech facts for which a guard would drop it."""
    signs = []
    if segment.compression_ratio is not None and segment.compression_ratio > settings.max_compression_ratio:
        signs.append("compression_ratio")
    if repeated_phrase(segment.text, settings.max_phrase_repeats, settings.max_word_repeats):
        signs.append("repetition")
    if segment.avg_logprob is not None and segment.avg_logprob < settings.min_avg_logprob:
        signs.append("avg_logprob")
    if says_no_speech(segment, settings):
        signs.append("no_speech_prob")
    return signs


@dataclass
class _Stretch:
    """One stretch to decode again: a group of suspicious segments, or speech without words (a hole)."""

    start_s: float
    end_s: float
    reason: str
    segments: list[Segment] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)  # what the new decoding heard here
    heard: list[Segment] = field(default_factory=list)  # the new decoding's segments, cut to this stretch


def decode_stretch(backend: ASRBackend, audio_path: str, audio: np.ndarray, span: Span,
                   language: str | None) -> list[Segment]:
    """The segments heard in ``span`` of ``audio`` decoded alone (no prompt), in ``audio``'s clock."""
    start, end = span
    decoded = backend.transcribe(audio_path, language=language,
                                 audio=audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)].astype(np.float32))
    heard = []
    for segment in decoded.segments:
        words = [Word(w.text, min(end, w.start_s + start), min(end, w.end_s + start), w.probability)
                 for w in segment.words]
        if words:
            heard.append(segment.with_words(words))
    return heard


def _mean_probability(words: list[Word]) -> float:
    probabilities = [w.probability for w in words if w.probability is not None]
    return float(np.mean(probabilities)) if probabilities else 0.0


def _better(new: list[Word], old: list[Word], guards: GuardSettings, settings: RedecodeSettings) -> bool:
    """Whether a re-decoding's words should replace the original's."""
    if not new:
        return False
    new_excess, old_excess = excess_repeats(new, guards), excess_repeats(old, guards)
    if len(new) - new_excess < settings.min_words_kept * (len(old) - old_excess):
        return False
    return (new_excess, -_mean_probability(new)) < (old_excess, -_mean_probability(old))


def _stretches(transcript: Transcript, speech: list[Span], guards: GuardSettings,
               settings: RedecodeSettings) -> list[_Stretch]:
    """Groups of adjacent suspicious segments, then holes: VAD speech of ``min_hole_s`` or more far from any
    word and outside the suspicious segments (a segment without word times covers its span)."""
    stretches: list[_Stretch] = []
    for segment in transcript.segments:
        signs = hallucination_signs(segment, guards)
        if not signs:
            continue
        last = stretches[-1] if stretches else None
        if last is not None and segment.start_s <= last.end_s + settings.context_s:
            last.end_s = max(last.end_s, segment.end_s)
            last.segments.append(segment)
            last.reason = ", ".join(dict.fromkeys(last.reason.split(", ") + signs))
        else:
            stretches.append(_Stretch(segment.start_s, segment.end_s, ", ".join(signs), [segment]))
    covered = widen([(w.start_s, w.end_s) for s in transcript.segments for w in s.words], WORD_TOLERANCE_S)
    covered += [(s.start_s, s.end_s) for s in transcript.segments if not s.words]
    covered += [(s.start_s, s.end_s) for s in stretches]
    holes = [hole for hole in subtract_spans(speech, covered) if hole[1] - hole[0] >= settings.min_hole_s]
    return stretches + [_Stretch(start, end, "no_words") for start, end in holes]


def redecode(transcript: Transcript, audio: np.ndarray, backend: ASRBackend, audio_path: str,
             speech: list[Span], guards: GuardSettings | None = None,
             settings: RedecodeSettings | None = None) -> list[dict[str, Any]]:
    """Decode the suspicious and skipped stretches of ``transcript`` again and keep the better words (in place).
    ``speech``: the VAD's speech regions. Returns one record per stretch (span, reason, outcome)."""
    guards = guards or GuardSettings()
    settings = settings or RedecodeSettings()
    if not settings.enabled or not len(audio):
        return []
    stretches = _stretches(transcript, speech, guards, settings)
    if not stretches:
        return []
    limit = len(audio) / SAMPLE_RATE
    spans = [widen([(s.start_s, s.end_s)], settings.context_s, limit)[0] for s in stretches]
    for stretch, span in zip(stretches, spans):
        for segment in decode_stretch(backend, audio_path, audio, span, transcript.language):
            words = [w for w in segment.words if stretch.start_s <= (w.start_s + w.end_s) / 2 <= stretch.end_s]
            if words:
                stretch.heard.append(segment.with_words(words))
                stretch.words += words
    records = []
    segments = list(transcript.segments)
    for stretch, span in zip(stretches, spans):
        if stretch.segments:
            old = [w for s in stretch.segments for w in s.words]
            replaced = _better(stretch.words, old, guards, settings)
            if replaced:
                segments = [s for s in segments if all(s is not old_segment for old_segment in stretch.segments)]
                segments += stretch.heard
            outcome = "replaced" if replaced else "kept"
        else:
            segments += stretch.heard
            outcome = f"added {len(stretch.words)} words"
        records.append({"start_s": round(span[0], 3), "end_s": round(span[1], 3), "reason": stretch.reason,
                        "outcome": outcome})
    transcript.segments = sorted(segments, key=lambda s: s.start_s)
    return records


def redecoded_s(records: list[dict[str, Any]]) -> float:
    """Seconds of audio decoded again."""
    return float(sum(end - start for start, end in merge_spans((r["start_s"], r["end_s"]) for r in records)))
