"""The real pyannote.audio pipeline on a GPU (``make gpu-smoke``). Skipped without CUDA, without
pyannote.audio, or without weights: a local pipeline dir in ``V60K_PYANNOTE_MODEL``, the pipeline in the
Hugging Face cache, or ``HF_TOKEN`` for the gated Hub repo (all read here, before the autouse fixtures clear
the token and point HF_HOME at a temporary dir)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from v60k.core.stage import StageContext, Video
from v60k.core.workdir import WorkDir, read_json, write_json
from v60k.media.streams import extract_audio
from v60k.stages.diarize import Diarize
from v60k.testing.sample_episodes import build_episode, two_speaker_spec

pytestmark = pytest.mark.gpu

_TOKEN = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
_HF_HOME = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
_LOCAL_MODEL = os.environ.get("V60K_PYANNOTE_MODEL")
MODEL = "pyannote/speaker-diarization-community-1"
_CACHED = (Path(_HF_HOME) / "hub" / ("models--" + MODEL.replace("/", "--"))).is_dir()


def _require_gpu_and_weights() -> str:
    torch = pytest.importorskip("torch")
    pytest.importorskip("pyannote.audio")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if _LOCAL_MODEL and Path(_LOCAL_MODEL).exists():
        return _LOCAL_MODEL
    if not _TOKEN and not _CACHED:
        pytest.skip("no pyannote weights: set V60K_PYANNOTE_MODEL (local dir), HF_TOKEN, or stage "
                    f"{MODEL} in {_HF_HOME}/hub")
    return MODEL


def test_pyannote_diarizes_a_two_speaker_episode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _require_gpu_and_weights()
    if _TOKEN:
        monkeypatch.setenv("HF_TOKEN", _TOKEN)
    monkeypatch.setenv("HF_HOME", _HF_HOME)  # the user's cache, not the test's empty one
    if _TOKEN and not _CACHED:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # a first download needs the Hub
    episode = build_episode(two_speaker_spec(), tmp_path / "media")
    workdir = WorkDir(tmp_path / "work").create()
    video = Video(video_id="ep", source_url="file:///ep", dir=workdir.video_dir("ep"), characters=["Monica", "Ross"])
    video.dir.mkdir(parents=True)
    extract_audio(episode.path, video.paths.audio_wav)
    segments = [{"start_s": ln["start_s"], "end_s": ln["end_s"], "text": ln["text"], "words": []}
                for ln in episode.truth["lines"]]
    write_json(video.paths.transcript_json, {"segments": segments})
    stage = Diarize(Diarize.Settings(backend="pyannote", model=model, device="cuda"), StageContext(workdir))
    stage.setup()
    stage.process(video)
    document = read_json(video.paths.diarization_json)
    assert document["num_speakers"] == 2
    truth = [ln["speaker"] for ln in episode.truth["lines"]]
    mapping: dict[str, set[str]] = {}
    for line, speaker in zip(document["lines"], truth):
        mapping.setdefault(line["speaker"], set()).add(speaker)
    assert all(len(names) == 1 for names in mapping.values())
    assert all(len(info["embedding"] or []) > 0 for info in document["speakers"].values())
