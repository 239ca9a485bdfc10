"""The real pyannote.audio pipeline on a GPU (``make gpu-smoke``). Skipped without CUDA, without
pyannote.audio, or without weights: a local pipeline dir in ``V60K_PYANNOTE_MODEL``, the pipeline in the
Hugging Face cache, or ``HF_TOKEN`` for the gated Hub repo (all read here, before the autouse fixtures clear
the token and point HF_HOME at a temporary dir)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import shared_media

from v60k.backends.diarization.metrics import diarization_error, read_rttm
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


def _use_the_users_weights(monkeypatch: pytest.MonkeyPatch) -> str:
    model = _require_gpu_and_weights()
    if _TOKEN:
        monkeypatch.setenv("HF_TOKEN", _TOKEN)
    monkeypatch.setenv("HF_HOME", _HF_HOME)  # the user's cache, not the test's empty one
    if _TOKEN and not _CACHED:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # a first download needs the Hub
    return model


def test_pyannote_diarizes_a_two_speaker_episode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _use_the_users_weights(monkeypatch)
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


def test_pyannote_on_real_meetings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The production backend on the 7 real AMI excerpts of ../shared/media/real-speech (skipped when absent),
    through the diarize stage, against their reference: wide margins (pyannote reports DER 0.17-0.22 on AMI);
    the figures themselves: ``V60K_BENCH_DIARIZE_BACKEND=pyannote python -m bench real_speech``."""
    rttm = shared_media("real-speech/ami-train.rttm")
    model = _use_the_users_weights(monkeypatch)
    workdir = WorkDir(tmp_path / "work").create()
    stage = Diarize(Diarize.Settings(backend="pyannote", model=model, device="cuda"), StageContext(workdir))
    stage.setup()
    errors, counts = [], []
    for file_id, reference in sorted(read_rttm(rttm).items()):
        video = Video(video_id=file_id, source_url=f"file:///{file_id}", dir=workdir.video_dir(file_id))
        video.dir.mkdir(parents=True)
        extract_audio(rttm.parent / f"ami-{file_id}.flac", video.paths.audio_wav)
        write_json(video.paths.transcript_json, {"segments": [{"start_s": 0.0, "end_s": 30.0, "text": "…"}]})
        stage.process(video)
        document = read_json(video.paths.diarization_json)
        errors.append(diarization_error(document["turns"], reference, (0.0, 30.0))["der"])
        counts.append((document["num_speakers"], len({speaker for _, _, speaker in reference})))
    assert sum(errors) / len(errors) <= 0.30, errors
    assert all(found >= 1 for found, _ in counts), counts
