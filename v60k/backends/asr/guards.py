"""Guards against hallucinated text, shared by every ASR backend.

Whisper models invent text over silence and music ("Thank you.", "[Music]", a phrase looped ten times).
A guard never throws away a stretch of real speech for a local defect:

- a word or phrase repeated back to back is trimmed to what was plausibly said (``keep_word_repeats`` of one
  word, ``keep_phrase_repeats`` of a longer phrase); the extra words go to ``dropped`` (``repetition``) and the
  rest of the segment is kept;
- the guards below move a whole segment (after the stage split it into lines, ``v60k.backends.asr.splitting``)
  from ``segments`` to ``dropped`` with its reason:

- ``no_speech``: the decoder's no-speech probability is high and its confidence low;
- ``low_confidence``: the no-speech probability is raised and the words are unsure (a murmur heard in effects);
- ``compression_ratio``: the segment's own text compresses too well (gzip ratio above the threshold): a loop
  that trimming could not undo;
- ``repetition``: a loop in a segment without word times, or a fourth segment running with the same text (three
  copies are kept, as for a repeated word: "Hello?" "Hello?" "Oh, hello." is what people say);
- ``annotation``: nothing but bracketed annotations or music symbols ("[Music]", "♪");
- ``silence``: most of the segment's words lie where the Silero VAD hears no speech or the signal has no energy.

Suspicious segments are decoded again before any of this (``v60k.backends.asr.redecode``).
"""

from __future__ import annotations

import re
import zlib
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
    keep_phrase_repeats: int = 2  # what trimming keeps of a looped phrase of 2+ words
    keep_word_repeats: int = 3  # ... and of a looped single word
    min_avg_logprob: float = -1.0  # below: the decoding is suspicious (re-decoded), Whisper's own threshold
    min_speech_fraction: float = 0.5  # of a segment's words that must lie in speech
    silence_dbfs: float = -50.0  # a word whose span is quieter than this is in silence
    vad: bool = True  # use the Silero VAD (bundled with faster-whisper) for the silence guard
    speech_pad_s: float = 0.2


def speech_regions(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, min_silence_ms: int = 300,
                   pad_ms: int = 400) -> list[tuple[float, float]]:
    """Where the Silero VAD that faster-whisper bundles hears speech, in seconds, each region widened by
    ``pad_ms`` (Silero's default margin; 0: the speech itself, as the coverage figures measure it)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=min_silence_ms, speech_pad_ms=pad_ms)
    chunks = get_speech_timestamps(audio.astype(np.float32), options, sampling_rate=sample_rate)
    return [(c["start"] / sample_rate, c["end"] / sample_rate) for c in chunks]


def pad_regions(speech: list[tuple[float, float]], pad_s: float = 0.4,
                limit_s: float | None = None) -> list[tuple[float, float]]:
    """Unpadded speech regions (``speech_regions(..., pad_ms=0)``) padded as Silero pads them: ``pad_s`` each
    side, or half the silence where two regions are closer than twice that (they stay apart)."""
    padded = []
    for i, (start, end) in enumerate(speech):
        before = start - speech[i - 1][1] if i else float("inf")
        after = speech[i + 1][0] - end if i + 1 < len(speech) else float("inf")
        upper = end + min(pad_s, after / 2) if after < 2 * pad_s else end + pad_s
        lower = start - min(pad_s, before / 2) if before < 2 * pad_s else start - pad_s
        padded.append((max(0.0, lower), upper if limit_s is None else min(limit_s, upper)))
    return padded


def text_compression_ratio(text: str) -> float:
    """gzip compression ratio of ``text``, as Whisper computes it over a whole 30 s window."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


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


def word_key(word: Word) -> str:
    """A word as the repetition checks compare it: normalized, without punctuation or annotations."""
    return " ".join(normalize_words(_ANNOTATION.sub(" ", word.text)))


@dataclass
class Trimmed:
    """Words that trimming removed: ``phrase`` said ``count`` times back to back, ``kept`` of them kept."""

    words: list[Word]
    phrase: str
    count: int
    kept: int


def trim_repeats(words: list[Word], keep_word_repeats: int = 3, keep_phrase_repeats: int = 2,
                 max_phrase_words: int = 12) -> tuple[list[Word], list[Trimmed]]:
    """``words`` with every run of a repeated word cut to ``keep_word_repeats`` copies and of a repeated phrase
    (2 to ``max_phrase_words`` words) to ``keep_phrase_repeats`` copies; and what was removed. Where several
    phrase lengths loop at one place, the one that removes the most words is trimmed."""
    keys = [word_key(w) for w in words]
    kept: list[Word] = []
    removed: list[Trimmed] = []
    i = 0
    while i < len(words):
        best: tuple[int, int, int, int] | None = None  # (words removed, phrase size, count, copies kept)
        for size in range(1, max_phrase_words + 1):
            phrase = keys[i : i + size]
            if len(phrase) < size or not all(phrase):
                break
            count = 1
            while keys[i + count * size : i + (count + 1) * size] == phrase:
                count += 1
            keep = keep_word_repeats if size == 1 else keep_phrase_repeats
            if count > keep and (best is None or (count - keep) * size > best[0]):
                best = ((count - keep) * size, size, count, keep)
        if best is None:
            kept.append(words[i])
            i += 1
            continue
        _, size, count, keep = best
        kept.extend(words[i : i + keep * size])
        removed.append(Trimmed(words[i + keep * size : i + count * size], " ".join(keys[i : i + size]), count, keep))
        i += count * size
    return kept, removed


def excess_repeats(words: list[Word], settings: GuardSettings) -> int:
    """How many of ``words`` trimming would remove."""
    _, removed = trim_repeats(words, settings.keep_word_repeats, settings.keep_phrase_repeats)
    return sum(len(t.words) for t in removed)


def trim_repetitions(transcript: Transcript, settings: GuardSettings | None = None) -> Transcript:
    """Trim looped words and phrases inside every timed segment (in place; also returned): the segment keeps
    its other words, the removed ones go to ``dropped`` with reason ``repetition``."""
    settings = settings or GuardSettings()
    for segment in transcript.segments:
        if not segment.words:
            continue
        kept, removed = trim_repeats(segment.words, settings.keep_word_repeats, settings.keep_phrase_repeats)
        if not removed:
            continue
        for trimmed in removed:
            words = trimmed.words
            transcript.dropped.append({
                "start_s": round(words[0].start_s, 3), "end_s": round(words[-1].end_s, 3),
                "text": " ".join(w.text for w in words), "reason": "repetition",
                "detail": f"{trimmed.phrase!r} said {trimmed.count} times in a row; {trimmed.kept} kept"})
        trimmed_segment = segment.with_words(kept)
        segment.words, segment.text = trimmed_segment.words, trimmed_segment.text
    return transcript


def _in_speech(word: Word, regions: list[tuple[float, float]] | None, audio: np.ndarray, settings: GuardSettings) -> bool:
    """Whether ``word`` lies in speech, give or take ``speech_pad_s`` (word times are often off that much; the
    signal level is measured that much wider only for a word the decoder is sure of)."""
    pad = settings.speech_pad_s
    sure = word.probability is not None and word.probability >= settings.min_word_probability
    widen_s = pad if sure else 0.0
    if span_dbfs(audio, word.start_s - widen_s, word.end_s + widen_s) < settings.silence_dbfs:
        return False
    if regions is None:
        return True
    return any(word.start_s < end + pad and word.end_s > start - pad for start, end in regions)


def _drop(segment: Segment, reason: str, detail: str | None = None) -> dict[str, Any]:
    entry = {"start_s": round(segment.start_s, 3), "end_s": round(segment.end_s, 3), "text": segment.text,
             "reason": reason}
    if detail:
        entry["detail"] = detail
    return entry


def says_no_speech(segment: Segment, settings: GuardSettings) -> bool:
    """Whether the decoder rates ``segment`` as no speech (``max_no_speech_prob``) and is not sure of its words
    (average log-probability below ``no_speech_max_logprob``)."""
    return (segment.no_speech_prob is not None and segment.no_speech_prob >= settings.max_no_speech_prob
            and (segment.avg_logprob is None or segment.avg_logprob < settings.no_speech_max_logprob))


def segment_problem(segment: Segment, history: list[str], audio: np.ndarray,
                    regions: list[tuple[float, float]] | None, settings: GuardSettings) -> tuple[str, str | None] | None:
    """(reason, detail) when a guard rejects ``segment``; ``history`` is the kept segments' normalized texts.
    The compression ratio is the segment's own text's: the decoder reports one for its whole 30 s window, which
    a loop elsewhere in the window would raise."""
    words = normalize_words(_ANNOTATION.sub(" ", segment.text))
    if not words:
        return "annotation", None
    if says_no_speech(segment, settings):
        return "no_speech_prob", f"{segment.no_speech_prob:.2f}"
    probabilities = [w.probability for w in segment.words if w.probability is not None]
    if (segment.no_speech_prob is not None and segment.no_speech_prob >= settings.doubtful_no_speech_prob
            and probabilities and float(np.mean(probabilities)) < settings.min_word_probability):
        return "low_confidence", f"no_speech_prob {segment.no_speech_prob:.2f}, word p {np.mean(probabilities):.2f}"
    ratio = text_compression_ratio(segment.text)
    if ratio > settings.max_compression_ratio:
        return "compression_ratio", f"{ratio:.2f}"
    if not segment.words:  # untimed text cannot be trimmed word by word
        phrase = repeated_phrase(segment.text, settings.max_phrase_repeats, settings.max_word_repeats)
        if phrase:
            return "repetition", phrase
    normalized = " ".join(words)
    if len(history) >= 3 and history[-1] == history[-2] == history[-3] == normalized:
        return "repetition", "same text four segments running"
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
    """Trim repetitions, then move hallucinated segments of ``transcript`` to ``transcript.dropped`` (in place;
    also returned). ``regions``: speech regions already computed (``speech_regions``), else computed here."""
    settings = settings or GuardSettings()
    trim_repetitions(transcript, settings)
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
