"""Shared fixtures: an isolated HOME/caches per test, and the tests' own HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from v60k.testing.sample_episodes import MediaServer

REPO = Path(__file__).resolve().parent.parent
SHARED_MEDIA = REPO.parent / "shared" / "media"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nothing a test does leaks outside its tmp dir: HOME, caches, Hugging Face, torch, Ray."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("TORCH_HOME", str(home / ".cache" / "torch"))
    monkeypatch.setenv("HF_HOME", str(home / ".cache" / "huggingface"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    for secret in ("OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(secret, raising=False)
    return home


@pytest.fixture
def media_server(tmp_path: Path) -> Iterator[MediaServer]:
    root = tmp_path / "served"
    root.mkdir()
    with MediaServer(root) as server:
        yield server


def shared_media(name: str) -> Path:
    """A file of ../shared/media, or a clean skip when the folder (or file) is absent."""
    path = SHARED_MEDIA / name
    if not path.exists():
        pytest.skip(f"real media not available: {path}")
    return path
