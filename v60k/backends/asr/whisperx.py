"""The whisperx backend (production, GPU): batched faster-whisper inference over VAD chunks, then wav2vec2
forced alignment for word timestamps (whisperx 3.8.x API).

Offline operation: with ``local_files_only`` the adapter sets ``HF_HUB_OFFLINE=1`` (and
``TRANSFORMERS_OFFLINE=1``) before whisperx is imported, loads the Whisper model with ``local_files_only`` and the
alignment model with ``model_cache_only``; ``model`` and ``align_model`` may be local directories and
``download_root`` / ``align_model_dir`` the pre-staged caches, so a cluster never touches the Hub.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from v60k.backends.asr import Segment, Transcript, Word
from v60k.backends.asr.guards import text_compression_ratio  # whisperx does not report it
from v60k.core.stage import StageError


def _number(value: Any) -> float | None:
    """A finite float, or None (whisperx leaves unalignable times out or NaN)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def words_with_times(raw_words: list[dict[str, Any]], seg_start: float, seg_end: float) -> list[Word]:
    """whisperx words → ``Word``s; words without times (numerals, symbols: no characters in the alignment
    model's dictionary) get the gap between their timed neighbours, shared evenly, and no probability."""
    words = [(str(w.get("word", "")).strip(), _number(w.get("start")), _number(w.get("end")), _number(w.get("score")))
             for w in raw_words]
    words = [w for w in words if w[0]]
    out: list[Word] = []
    i = 0
    while i < len(words):
        text, start, end, score = words[i]
        if start is not None and end is not None:
            out.append(Word(text, start, end, score))
            i += 1
            continue
        j = i  # a run of untimed words [i, j)
        while j < len(words) and (words[j][1] is None or words[j][2] is None):
            j += 1
        gap_start = out[-1].end_s if out else seg_start
        gap_end = words[j][1] if j < len(words) and words[j][1] is not None else seg_end
        gap_end = max(gap_end, gap_start)
        step = (gap_end - gap_start) / (j - i)
        for k in range(i, j):
            out.append(Word(words[k][0], gap_start + (k - i) * step, gap_start + (k - i + 1) * step, None))
        i = j
    return out


class WhisperXBackend:
    name = "whisperx"

    def __init__(self, model: str = "large-v3", device: str = "cuda", compute_type: str = "float16",
                 batch_size: int = 16, beam_size: int = 5, align_model: str | None = None,
                 align_model_dir: str | None = None, download_root: str | None = None,
                 local_files_only: bool = False, vad_method: str = "pyannote", threads: int = 4):
        self.model_name = model
        self.device = device
        self.compute_type = compute_type
        self.batch_size = batch_size
        self.beam_size = beam_size
        self.align_model = align_model
        self.align_model_dir = align_model_dir
        self.download_root = download_root
        self.local_files_only = local_files_only
        self.vad_method = vad_method
        self.threads = threads
        self._whisperx: Any = None
        self._pipeline: Any = None
        self._aligners: dict[str, tuple[Any, Any] | None] = {}

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": Path(self.model_name).name, "compute_type": self.compute_type,
                "align_model": self.align_model}

    def load(self) -> None:
        if self._pipeline is not None:
            return
        if self.local_files_only:
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:
            import whisperx
        except ImportError as exc:
            raise StageError("the whisperx backend needs the gpu extra: pip install 'v60k[gpu]'",
                             "backend_missing") from exc
        self._whisperx = whisperx
        try:
            self._pipeline = whisperx.load_model(
                self.model_name, self.device, compute_type=self.compute_type,
                asr_options={"beam_size": self.beam_size, "condition_on_previous_text": False},
                vad_method=self.vad_method, download_root=self.download_root,
                local_files_only=self.local_files_only, threads=self.threads,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise StageError(f"cannot load whisperx model {self.model_name!r}: {exc}", "model_load") from exc

    def _aligner(self, language: str) -> tuple[Any, Any] | None:
        """The alignment model for ``language`` (loaded once per language); None when it has none."""
        if language not in self._aligners:
            try:
                self._aligners[language] = self._whisperx.load_align_model(
                    language_code=language, device=self.device, model_name=self.align_model,
                    model_dir=self.align_model_dir, model_cache_only=self.local_files_only,
                )
            except ValueError:  # "No default align-model for language: xx"
                self._aligners[language] = None
        return self._aligners[language]

    def _set_prompt(self, initial_prompt: str | None, hotwords: str | None) -> None:
        """The pipeline's decoding options are fixed at load time: swap this video's prompt in."""
        options = getattr(self._pipeline, "options", None)
        if options is not None and dataclasses.is_dataclass(options):
            self._pipeline.options = dataclasses.replace(options, initial_prompt=initial_prompt, hotwords=hotwords)

    def detect_language(self, audio: np.ndarray) -> tuple[str | None, float | None]:
        """whisperx's detection on the first 30 s (it reports no probability); None for an English-only model."""
        self.load()
        if Path(self.model_name).name.endswith(".en"):
            return "en", None
        return self._pipeline.detect_language(audio), None

    def transcribe(self, audio_path: str, language: str | None = None, initial_prompt: str | None = None,
                   hotwords: str | None = None, audio: np.ndarray | None = None) -> Transcript:
        self.load()
        wx = self._whisperx
        if audio is None:
            audio = wx.load_audio(str(audio_path))
        duration_s = len(audio) / 16000
        self._set_prompt(initial_prompt, hotwords)
        result = self._pipeline.transcribe(audio, batch_size=self.batch_size, language=language)
        detected = result.get("language") or language
        raw_segments = list(result.get("segments") or [])
        aligner = self._aligner(detected) if raw_segments and detected else None
        if aligner is not None:
            align_model, metadata = aligner
            raw_segments = wx.align(raw_segments, align_model, metadata, audio, self.device,
                                    return_char_alignments=False)["segments"]
        segments = []
        for raw in raw_segments:
            text = str(raw.get("text", "")).strip()
            start, end = _number(raw.get("start")), _number(raw.get("end"))
            words = words_with_times(raw.get("words") or [], start or 0.0, end or duration_s)
            start = start if start is not None else (words[0].start_s if words else 0.0)
            end = end if end is not None else (words[-1].end_s if words else start)
            segments.append(Segment(start_s=start, end_s=end, text=text, words=words,
                                    avg_logprob=_number(raw.get("avg_logprob")),
                                    compression_ratio=text_compression_ratio(text)))
        return Transcript(backend=self.name, model=Path(self.model_name).name, language=detected,
                          language_probability=None, duration_s=duration_s, segments=segments,
                          prompted_with_cast=bool(initial_prompt or hotwords))
