"""The real whisperx pipeline on a GPU (``make gpu-smoke``): batched transcription and alignment of a
generated two-speaker episode, offline (pre-staged weights only). Skipped without CUDA, whisperx or weights.

The caches are read when this file is imported, before the autouse ``isolated_home`` fixture points HOME,
HF_HOME and TORCH_HOME at a temporary dir: the real models live in the user's caches. (The fixtures live here,
not in a tests/gpu/conftest.py: a second module named ``conftest`` would shadow tests/conftest.py for the test
modules that import ``shared_media`` from it.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from v60k.backends.asr.metrics import word_error_rate
from v60k.core.executors.base import run_one
from v60k.core.stage import Video
from v60k.core.workdir import read_json, write_json
from v60k.media.streams import probe
from v60k.stages.transcribe import Transcribe, TranscribeSettings
from v60k.testing.sample_episodes import build_episode, two_speaker_spec

pytestmark = pytest.mark.gpu

HF_HUB_CACHE = Path(os.environ.get("HF_HUB_CACHE")
                    or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
TORCH_HUB_CHECKPOINTS = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"


@pytest.fixture
def cuda_device() -> str:
    """"cuda" when torch sees a CUDA device; a skip otherwise."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return "cuda"


@pytest.fixture
def whisperx_weights() -> dict[str, str | None]:
    """Where the whisperx weights are staged: ``V60K_WHISPERX_MODEL`` (a CTranslate2 dir or a model name in
    the Hugging Face cache), ``V60K_WHISPERX_ALIGN_DIR`` (the alignment model cache); a skip without them."""
    pytest.importorskip("whisperx")
    model = os.environ.get("V60K_WHISPERX_MODEL", "large-v3")
    local_dir = Path(model).expanduser()
    in_cache = any(HF_HUB_CACHE.glob(f"models--Systran--faster-whisper-{model}")) if HF_HUB_CACHE.exists() else False
    if not local_dir.is_dir() and not in_cache:
        pytest.skip(f"no whisperx weights: set V60K_WHISPERX_MODEL to a local dir, or stage {model} in {HF_HUB_CACHE}")
    align_dir = os.environ.get("V60K_WHISPERX_ALIGN_DIR") or (
        str(TORCH_HUB_CHECKPOINTS) if TORCH_HUB_CHECKPOINTS.exists() else None)
    return {"model": str(local_dir) if local_dir.is_dir() else model, "download_root": str(HF_HUB_CACHE),
            "align_model_dir": align_dir}


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
