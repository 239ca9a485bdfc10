"""The real whisperx pipeline on a GPU (``make gpu-smoke``): batched transcription and alignment of a
generated two-speaker episode, offline (pre-staged weights only). Skipped without CUDA, whisperx or weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from v60k.backends.asr.metrics import word_error_rate
from v60k.executors.base import run_one
from v60k.media import probe
from v60k.samples import build_episode, two_speaker_spec
from v60k.stage import Video
from v60k.stages.transcribe import Transcribe, TranscribeSettings
from v60k.workdir import read_json, write_json

pytestmark = pytest.mark.gpu


def test_whisperx_transcribes_and_aligns_an_episode(cuda_device: str, whisperx_weights: dict[str, str | None],
                                                    tmp_path: Path) -> None:
    episode = build_episode(two_speaker_spec(), tmp_path / "media")
    video_dir = tmp_path / "videos" / "ep"
    video_dir.mkdir(parents=True)
    source = video_dir / "source.mp4"
    source.write_bytes(episode.path.read_bytes())
    write_json(video_dir / "scenes.json", {"stream": probe(source).to_dict()})
    video = Video(video_id="ep", source_url="x", dir=video_dir, characters=episode.truth["cast"])

    stage = Transcribe(TranscribeSettings(backend="whisperx", device=cuda_device, model=whisperx_weights["model"],
                                          download_root=whisperx_weights["download_root"],
                                          align_model_dir=whisperx_weights["align_model_dir"],
                                          local_files_only=True, batch_size=8))
    stage.setup()
    outcome = run_one(stage, video)
    assert outcome.state == "done", outcome.error_message
    doc = read_json(video.paths.transcript_json)
    assert doc["backend"] == "whisperx" and doc["language"] == "en"
    reference = " ".join(line["text"] for line in episode.truth["lines"])
    text = " ".join(s["text"] for s in doc["segments"])
    assert word_error_rate(reference, text) <= 0.15, text
    words = [w for s in doc["segments"] for w in s["words"]]
    assert len(words) > 50 and all(w["start_s"] <= w["end_s"] for w in words)
    for line in episode.truth["lines"]:
        assert any(w["start_s"] < line["end_s"] and w["end_s"] > line["start_s"] for w in words), line
