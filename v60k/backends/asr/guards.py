"""Guards against hallucinated text, shared by every ASR backend.

Whisper models invent text over silence and music ("Thank you.", "[Music]", a phrase looped ten times).
Each guard moves a whole segment from ``segments`` to ``dropped`` with its reason:

- ``no_speech``: the decoder's no-speech probability is high and its confidence low;
- ``low_confidence``: the no-speech probability is raised and the words are unsure (a murmur heard in effects);
- ``compression_ratio``: the text compresses too well (gzip ratio above the threshold): a loop;
- ``repetition``: a phrase repeated back to back inside a segment, or the same text three segments running;
- ``annotation``: nothing but bracketed annotations or music symbols ("[Music]", "♪");
- ``silence``: most of the segment's words lie where the Silero VAD hears no speech or the signal has no energy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from v60k.backends.asr import Segment, Transcript, Word
from v60k.backends.asr.metrics import normalize_words

SAMPLE_RATE = 16000
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|[♪♫♬#]")


@dataclass
class GuardSettings:
    max_no_speech_prob: float = 0.6
    no_speech_max_logprob: float = -0.7  # a no_speech segment is dropped only when avg_logprob is below this
    doubtful_no_speech_prob: float = 0.45  # with a mean word probability below min_word_probability: dropped
    min_word_probability: float = 0.5
    max_compression_ratio: float = 2.4
    max_phrase_repeats: int = 3  # a phrase of 2+ words said this many times in a row is a loop
    max_word_repeats: int = 5  # a single word (people do say "no, no, no")
    min_speech_fraction: float = 0.5  # of a segment's words that must lie in speech
    silence_dbfs: float = -50.0  # a word whose span is quieter than this is in silence
    vad: bool = True  # use the Silero VAD (bundled with faster-whisper) for the silence guard
    speech_pad_s: float = 0.2


def speech_regions(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, min_silence_ms: int = 300) -> list[tuple[float, float]]:
    """Where the Silero VAD that faster-whisper bundles hears speech, in seconds."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    chunks = get_speech_timestamps(audio.astype(np.float32), VadOptions(min_silence_duration_ms=min_silence_ms),
                                   sampling_rate=sample_rate)
    return [(c["start"] / sample_rate, c["end"] / sample_rate) for c in chunks]


def span_dbfs(audio: np.ndarray, start_s: float, end_s: float, sample_rate: int = SAMPLE_RATE) -> float:
    """RMS level of ``audio[start_s:end_s]`` in dB relative to full scale (-inf dB is reported as -120)."""
    lo, hi = max(0, int(start_s * sample_rate)), min(len(audio), int(np.ceil(end_s * sample_rate)))
    if hi <= lo:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(audio[lo:hi], dtype=np.float64))))
    return 20 * np.log10(rms) if rms > 1e-6 else -120.0


def repeated_phrase(text: str, max_phrase_repeats: int = 3, max_word_repeats: int = 5) -> str | None:
    """The phrase that ``text`` repeats back to back too often, or None."""
    words = normalize_words(text)
    for size in range(1, 9):
        limit = max_word_repeats if size == 1 else max_phrase_repeats
        for start in range(len(words) - size * limit + 1):
            phrase = words[start : start + size]
            count = 1
            while words[start + count * size : start + (count + 1) * size] == phrase:
                count += 1
            if count >= limit:
                return " ".join(phrase)
    return None


def _in_speech(word: Word, regions: list[tuple[float, float]] | None, audio: np.ndarray, settings: GuardSettings) -> bool:
    if span_dbfs(audio, word.start_s, word.end_s) < settings.silence_dbfs:
        return False
    if regions is None:
        return True
    pad = settings.speech_pad_s
    return any(word.start_s < end + pad and word.end_s > start - pad for start, end in regions)


def _drop(segment: Segment, reason: str, detail: str | None = None) -> dict[str, Any]:
    entry = {"start_s": round(segment.start_s, 3), "end_s": round(segment.end_s, 3), "text": segment.text,
             "reason": reason}
    if detail:
        entry["detail"] = detail
    return entry


def segment_problem(segment: Segment, history: list[str], audio: np.ndarray,
                    regions: list[tuple[float, float]] | None, settings: GuardSettings) -> tuple[str, str | None] | None:
    """(reason, detail) when a guard rejects ``segment``; ``history`` is the kept segments' normalized texts."""
    words = normalize_words(_ANNOTATION.sub(" ", segment.text))
    if not words:
        return "annotation", None
    if (segment.no_speech_prob is not None and segment.no_speech_prob >= settings.max_no_speech_prob
            and (segment.avg_logprob is None or segment.avg_logprob < settings.no_speech_max_logprob)):
        return "no_speech_prob", f"{segment.no_speech_prob:.2f}"
    probabilities = [w.probability for w in segment.words if w.probability is not None]
    if (segment.no_speech_prob is not None and segment.no_speech_prob >= settings.doubtful_no_speech_prob
            and probabilities and float(np.mean(probabilities)) < settings.min_word_probability):
        return "low_confidence", f"no_speech_prob {segment.no_speech_prob:.2f}, word p {np.mean(probabilities):.2f}"
    if segment.compression_ratio is not None and segment.compression_ratio > settings.max_compression_ratio:
        return "compression_ratio", f"{segment.compression_ratio:.2f}"
    phrase = repeated_phrase(segment.text, settings.max_phrase_repeats, settings.max_word_repeats)
    if phrase:
        return "repetition", phrase
    normalized = " ".join(words)
    if len(history) >= 2 and history[-1] == history[-2] == normalized:
        return "repetition", "same text three segments running"
    timed = segment.words or [Word(segment.text, segment.start_s, segment.end_s)]
    in_speech = sum(_in_speech(w, regions, audio, settings) for w in timed)
    if in_speech / len(timed) < settings.min_speech_fraction:
        return "silence", f"{len(timed) - in_speech}/{len(timed)} words outside speech"
    return None


def undertranscribed_speech_s(transcript: Transcript, regions: list[tuple[float, float]], min_region_s: float = 1.5,
                              min_words_per_s: float = 1.0) -> float:
    """Seconds of VAD speech (regions of at least ``min_region_s``) holding fewer than ``min_words_per_s`` words
    (by word midpoint): speech the decoder skipped. tiny.en with a prompt sometimes stops emitting timestamps
    for its first window and drops a whole line; the neighbouring words are then stretched over it."""
    mids = [(w.start_s + w.end_s) / 2 for s in transcript.segments for w in s.words]
    missed = 0.0
    for start, end in regions:
        if end - start >= min_region_s and sum(start <= m < end for m in mids) < min_words_per_s * (end - start):
            missed += end - start
    return missed


def apply_guards(transcript: Transcript, audio: np.ndarray, settings: GuardSettings | None = None,
                 regions: list[tuple[float, float]] | None = None) -> Transcript:
    """Move hallucinated segments of ``transcript`` to ``transcript.dropped`` (in place; also returned).
    ``regions``: speech regions already computed (``speech_regions``), else computed here when needed."""
    settings = settings or GuardSettings()
    if regions is None and settings.vad and transcript.segments and len(audio):
        regions = speech_regions(audio)
    if not settings.vad:
        regions = None
    kept: list[Segment] = []
    history: list[str] = []
    for segment in transcript.segments:
        problem = segment_problem(segment, history, audio, regions, settings)
        if problem:
            transcript.dropped.append(_drop(segment, *problem))
            continue
        kept.append(segment)
        history.append(" ".join(normalize_words(segment.text)))
    transcript.segments = kept
    return transcript
