"""pyannote.audio 4 adapter (production, GPU): ``speaker-diarization-community-1`` by default, 3.1 as an option.

The pipeline comes from a local directory (pre-staged weights, nothing touches the Hub) or from the Hub with a
token read from the environment (``HF_TOKEN``); the token is passed to ``Pipeline.from_pretrained`` only and
never logged or stored. Telemetry is switched off (``PYANNOTE_METRICS_ENABLED=0``) before the import. Word
assignment uses the exclusive (non-overlapping) diarization that pyannote.audio 4 returns; 3.1 pipelines
return a bare Annotation, which is used as is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr

from v60k.backends.diarization import DiarizationResult, SpeakerCountHint, Turn
from v60k.core.spans import subtract_spans
from v60k.core.stage import StageError

DEFAULT_MODEL = "pyannote/speaker-diarization-community-1"
MODEL_ALIASES = {
    "community-1": DEFAULT_MODEL,
    "3.1": "pyannote/speaker-diarization-3.1",
}
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def token_from_environment() -> SecretStr | None:
    for variable in TOKEN_VARIABLES:
        value = os.environ.get(variable)
        if value:
            return SecretStr(value)
    return None


class PyannoteDiarizer:
    """The ``pyannote`` backend."""

    name = "pyannote"

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "cuda", revision: str | None = None,
                 token: SecretStr | None = None):
        self.model = MODEL_ALIASES.get(model, model)
        self.device = device
        self.revision = revision
        self._token = token
        self._pipeline: Any = None

    @property
    def is_local(self) -> bool:
        return Path(self.model).expanduser().exists()

    def identity(self) -> dict[str, Any]:
        return {"model": self.model, "revision": self.revision}

    def load(self) -> None:
        if self._pipeline is not None:
            return
        os.environ["PYANNOTE_METRICS_ENABLED"] = "0"
        try:
            import torch
            from pyannote.audio import Pipeline
        except ImportError as exc:
            raise StageError(
                "the pyannote backend needs pyannote.audio (pip install 'v60k[gpu]'); "
                "the offline default is backend: embeddings", "backend_unavailable") from exc
        token = self._token or token_from_environment()
        kwargs: dict[str, Any] = {}
        if self.revision:
            kwargs["revision"] = self.revision
        if not self.is_local and token is not None:
            kwargs["token"] = token.get_secret_value()
        source = str(Path(self.model).expanduser()) if self.is_local else self.model
        try:
            pipeline = Pipeline.from_pretrained(source, **kwargs)
        except Exception as exc:  # gated repo, no network, wrong dir: a classified failure without the token
            hint = "" if self.is_local or token is not None else " (no HF_TOKEN in the environment)"
            raise StageError(f"cannot load pyannote pipeline {self.model!r}{hint}: {type(exc).__name__}",
                             "model_unavailable") from None
        if pipeline is None:  # from_pretrained returns None for a gated repo without access
            raise StageError(f"pyannote pipeline {self.model!r} unavailable (gated: accept its conditions and "
                             "set HF_TOKEN)", "model_unavailable")
        device = self.device if self.device != "cuda" or torch.cuda.is_available() else "cpu"
        pipeline.to(torch.device(device))
        self._pipeline = pipeline

    def diarize(self, audio: np.ndarray, sample_rate: int, hint: SpeakerCountHint,
                speech_spans: list[tuple[float, float]] | None = None) -> DiarizationResult:
        """``speech_spans`` are not used: pyannote's segmentation model finds speech itself."""
        self.load()
        import torch

        waveform = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).unsqueeze(0)  # (channel, time)
        options = {}
        if hint.num:
            options["num_speakers"] = int(hint.num)
        else:
            if hint.min:
                options["min_speakers"] = int(hint.min)
            if hint.max:
                options["max_speakers"] = int(hint.max)
        try:
            output = self._pipeline({"waveform": waveform, "sample_rate": int(sample_rate)}, **options)
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise StageError(f"GPU out of memory diarizing {len(audio) / sample_rate:.0f} s of audio", "gpu_oom",
                             transient=True) from exc
        full = getattr(output, "speaker_diarization", output)
        exclusive = getattr(output, "exclusive_speaker_diarization", None)
        if exclusive is None:
            exclusive = full
        turns = [Turn(float(seg.start), float(seg.end), str(label))
                 for seg, _, label in exclusive.itertracks(yield_label=True) if seg.end > seg.start]
        embeddings: dict[str, list[float] | None] = {}
        vectors = getattr(output, "speaker_embeddings", None)
        labels = [str(label) for label in full.labels()]
        for index, label in enumerate(labels):
            vector = None
            if vectors is not None and index < len(vectors) and np.all(np.isfinite(vectors[index])):
                vector = [round(float(v), 5) for v in np.asarray(vectors[index], dtype=np.float64)]
            embeddings[label] = vector
        overlap = second_speakers(full, turns)
        return DiarizationResult(turns, embeddings, self.name, self.model,
                                 {"overlap_turns": len(overlap),
                                  "overlap_s": round(sum(t.end_s - t.start_s for t in overlap), 3)}, overlap)


def second_speakers(full: Any, exclusive: list[Turn]) -> list[Turn]:
    """Where a speaker of the full (overlap-aware) diarization speaks outside their exclusive turns: the
    second speaker of overlapped speech (``DiarizationResult.overlap``)."""
    out = []
    for label in full.labels():
        own = [(float(seg.start), float(seg.end)) for seg, _, name in full.itertracks(yield_label=True)
               if name == label]
        kept = [(t.start_s, t.end_s) for t in exclusive if t.speaker == str(label)]
        out += [Turn(start, end, str(label)) for start, end in subtract_spans(own, kept) if end - start > 1e-3]
    return sorted(out, key=lambda t: (t.start_s, t.speaker))
