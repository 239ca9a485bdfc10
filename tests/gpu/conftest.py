"""GPU smoke tests (``make gpu-smoke``): fixtures that skip cleanly without CUDA or without weights.

The caches are read when this file is imported, before the autouse ``isolated_home`` fixture points HOME,
HF_HOME and TORCH_HOME at a temporary dir: the real models live in the user's caches.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
