"""The pyannote backend against a stand-in ``pyannote.audio`` with pyannote.audio 4.0's call signatures:
``Pipeline.from_pretrained(checkpoint, revision=None, hparams_file=None, subfolder=None, token=None,
cache_dir=None)``, ``pipeline.to(torch.device)``, ``pipeline(file, num_speakers=None, min_speakers=None,
max_speakers=None, hook=None)`` → ``DiarizeOutput(speaker_diarization, exclusive_speaker_diarization,
speaker_embeddings)`` with pyannote.core-like Annotations. The real library cannot run here (CUDA wheels,
gated Hub weights); tests/gpu/test_pyannote_gpu.py runs it where it can."""

from __future__ import annotations

import json
import logging
import sys
import types
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from v60k.backends.diarization import SpeakerCountHint
from v60k.backends.diarization.pyannote import PyannoteDiarizer
from v60k.core.stage import StageContext, StageError, Video
from v60k.core.workdir import WorkDir, write_json
from v60k.stages.diarize import Diarize

SECRET = "hf_test_secret_value_123"


@dataclass(frozen=True)
class Segment:
    start: float
    end: float


class Annotation:
    """pyannote.core.Annotation's reading surface: itertracks(yield_label=...) and labels()."""

    def __init__(self, tracks: list[tuple[float, float, str]]):
        self._tracks = sorted(tracks)

    def itertracks(self, yield_label: bool = False):
        for index, (start, end, label) in enumerate(self._tracks):
            yield (Segment(start, end), index, label) if yield_label else (Segment(start, end), index)

    def labels(self) -> list[str]:
        return sorted({label for _, _, label in self._tracks})


@dataclass
class DiarizeOutput:
    speaker_diarization: Annotation
    exclusive_speaker_diarization: Annotation
    speaker_embeddings: np.ndarray | None = None


class FakePipeline:
    calls: list[dict[str, Any]] = []
    returns_none = False
    legacy_output = False
    only_over_others: list[tuple[float, float, str]] = []  # speakers the full output has and the exclusive lacks

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path, revision: str | None = None, hparams_file: Any = None,
                        subfolder: str | None = None, token: str | bool | None = None,
                        cache_dir: Path | str | None = None) -> FakePipeline | None:
        cls.calls.append({"from_pretrained": str(checkpoint), "revision": revision, "token": token,
                          "telemetry": __import__("os").environ.get("PYANNOTE_METRICS_ENABLED")})
        return None if cls.returns_none else cls()

    def to(self, device: torch.device) -> FakePipeline:
        assert isinstance(device, torch.device)
        self.calls.append({"to": str(device)})
        return self

    def __call__(self, file: Any, num_speakers: int | None = None, min_speakers: int | None = None,
                 max_speakers: int | None = None, hook: Any = None) -> Any:
        waveform, rate = file["waveform"], file["sample_rate"]
        assert isinstance(waveform, torch.Tensor) and waveform.dtype == torch.float32 and waveform.ndim == 2
        self.calls.append({"shape": tuple(waveform.shape), "sample_rate": rate, "num_speakers": num_speakers,
                           "min_speakers": min_speakers, "max_speakers": max_speakers})
        duration = waveform.shape[1] / rate
        half = duration / 2
        # overlapping speech around the middle; the exclusive output resolves it
        full = Annotation([(0.5, half + 0.5, "SPEAKER_01"), (half - 0.3, duration - 0.2, "SPEAKER_00"),
                           *self.only_over_others])
        exclusive = Annotation([(0.5, half, "SPEAKER_01"), (half, duration - 0.2, "SPEAKER_00")])
        if self.legacy_output:
            return exclusive
        embeddings = np.stack([np.full(192, 0.5), np.full(192, -0.5)])  # labels() order: 00, 01
        return DiarizeOutput(full, exclusive, embeddings)


@pytest.fixture
def fake_pyannote(monkeypatch: pytest.MonkeyPatch) -> type[FakePipeline]:
    package = types.ModuleType("pyannote")
    audio = types.ModuleType("pyannote.audio")
    audio.Pipeline = FakePipeline
    package.audio = audio
    monkeypatch.setitem(sys.modules, "pyannote", package)
    monkeypatch.setitem(sys.modules, "pyannote.audio", audio)
    monkeypatch.delenv("PYANNOTE_METRICS_ENABLED", raising=False)
    FakePipeline.calls = []
    FakePipeline.returns_none = False
    FakePipeline.legacy_output = False
    FakePipeline.only_over_others = []
    return FakePipeline


def test_hub_model_with_token_from_the_environment(fake_pyannote, monkeypatch, caplog) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    caplog.set_level(logging.DEBUG)
    backend = PyannoteDiarizer(device="cpu")
    result = backend.diarize(np.zeros(16000 * 4, np.float32), 16000, SpeakerCountHint(min=2, max=5, cast_size=3))
    load, move, call = fake_pyannote.calls
    assert load == {"from_pretrained": "pyannote/speaker-diarization-community-1", "revision": None,
                    "token": SECRET, "telemetry": "0"}
    assert move == {"to": "cpu"}
    assert call["shape"] == (1, 64000) and call["sample_rate"] == 16000
    assert (call["num_speakers"], call["min_speakers"], call["max_speakers"]) == (None, 2, 5)
    # the exclusive diarization gives the turns; the full one, where each speaks over the other, the overlap
    assert [(t.start_s, t.end_s, t.speaker) for t in result.turns] == [(0.5, 2.0, "SPEAKER_01"),
                                                                       (2.0, 3.8, "SPEAKER_00")]
    assert [(round(t.start_s, 3), round(t.end_s, 3), t.speaker) for t in result.overlap] == [
        (1.7, 2.0, "SPEAKER_00"), (2.0, 2.5, "SPEAKER_01")]
    assert result.embeddings["SPEAKER_00"][0] == 0.5 and result.embeddings["SPEAKER_01"][0] == -0.5
    assert SECRET not in caplog.text and SECRET not in repr(backend.__dict__)


def test_exact_count_local_dir_and_legacy_annotation(fake_pyannote, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    fake_pyannote.legacy_output = True  # 3.1 pipelines return the Annotation itself
    local = tmp_path / "speaker-diarization-3.1"
    local.mkdir()
    result = PyannoteDiarizer(model=str(local), device="cpu").diarize(
        np.zeros(32000, np.float32), 16000, SpeakerCountHint(num=2, min=1, max=9))
    load, _, call = fake_pyannote.calls
    assert load["from_pretrained"] == str(local) and load["token"] is None  # a local dir needs no token
    assert (call["num_speakers"], call["min_speakers"], call["max_speakers"]) == (2, None, None)
    assert result.speakers == ["SPEAKER_00", "SPEAKER_01"]
    assert result.embeddings == {"SPEAKER_00": None, "SPEAKER_01": None}
    assert PyannoteDiarizer(model="3.1").model == "pyannote/speaker-diarization-3.1"


def test_unavailable_library_or_model_is_classified(fake_pyannote, monkeypatch) -> None:
    fake_pyannote.returns_none = True  # what from_pretrained gives for a gated repo without access
    with pytest.raises(StageError) as caught:
        PyannoteDiarizer(device="cpu").load()
    assert caught.value.error_class == "model_unavailable" and "HF_TOKEN" in str(caught.value)
    monkeypatch.setitem(sys.modules, "pyannote.audio", None)  # not installed
    with pytest.raises(StageError) as caught:
        PyannoteDiarizer(device="cpu").load()
    assert caught.value.error_class == "backend_unavailable"


def _silent_video(tmp_path: Path, characters: list[str] | None = None) -> tuple[WorkDir, Video]:
    """A work dir with one video whose audio.wav is 6 s of silence (the fake pipeline ignores the sound)."""
    workdir = WorkDir(tmp_path / "work").create()
    video = Video(video_id="v1", source_url="file:///x", dir=workdir.video_dir("v1"), characters=characters or [])
    video.dir.mkdir(parents=True)
    with wave.open(str(video.paths.audio_wav), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(np.zeros(16000 * 6, np.int16).tobytes())
    return workdir, video


def test_stage_with_the_pyannote_backend(fake_pyannote, tmp_path: Path, monkeypatch) -> None:
    """Words follow the exclusive turns; the token is in no output and not in the settings."""
    monkeypatch.setenv("HF_TOKEN", SECRET)
    workdir, video = _silent_video(tmp_path, characters=["A", "B"])
    words = [{"text": t, "start_s": s, "end_s": s + 0.4, "probability": 0.9}
             for t, s in [("Hello", 1.0), ("there.", 1.6), ("Hi", 3.5), ("back.", 4.0)]]
    write_json(video.paths.transcript_json, {"segments": [
        {"start_s": 1.0, "end_s": 4.4, "text": "Hello there. Hi back.", "words": words}]})
    stage = Diarize(Diarize.Settings(backend="pyannote", device="cpu", num_speakers=2), StageContext(workdir))
    stage.setup()
    stage.process(video)
    text = video.paths.diarization_json.read_text()
    document = json.loads(text)
    assert document["backend"] == "pyannote" and document["num_speakers"] == 2
    assert [(ln["text"], ln["speaker"]) for ln in document["lines"]] == [("Hello there.", "SPEAKER_00"),
                                                                         ("Hi back.", "SPEAKER_01")]
    assert SECRET not in text and SECRET not in json.dumps(stage.settings.public_dict())
    assert fake_pyannote.calls[-1]["num_speakers"] == 2


def test_a_speaker_heard_only_over_another_is_kept(fake_pyannote, tmp_path: Path) -> None:
    """pyannote's full output can hold a speaker who never speaks alone (a backchannel over the main
    speaker): that speaker stays, after the others, with their overlapped turns; words keep the exclusive turns."""
    fake_pyannote.only_over_others = [(3.0, 3.6, "SPEAKER_07")]
    workdir, video = _silent_video(tmp_path)
    words = [{"text": "Hello", "start_s": 1.0, "end_s": 1.4, "probability": 0.9},
             {"text": "again.", "start_s": 3.1, "end_s": 3.5, "probability": 0.9}]
    write_json(video.paths.transcript_json, {"segments": [
        {"start_s": 1.0, "end_s": 3.5, "text": "Hello again.", "words": words}]})
    stage = Diarize(Diarize.Settings(backend="pyannote", device="cpu"), StageContext(workdir))
    stage.setup()
    stage.process(video)
    document = json.loads(video.paths.diarization_json.read_text())
    assert document["num_speakers"] == 3 and set(document["speakers"]) == {"SPEAKER_00", "SPEAKER_01", "SPEAKER_02"}
    assert {"start_s": 3.0, "end_s": 3.6, "speaker": "SPEAKER_02"} in document["turns"]
    assert {ln["speaker"] for ln in document["lines"]} <= {"SPEAKER_00", "SPEAKER_01"}
