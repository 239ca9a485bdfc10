"""The work dir: where every stage's per-video outputs live, and how they are written safely."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_ID_LENGTH = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_id(raw: str, max_length: int = MAX_ID_LENGTH) -> str:
    """A file-system-safe id: ASCII letters, digits, '.', '_' and '-'; no path separators, no '..'.

    Long ids are cut and suffixed with a short hash of the original so that they stay unique.
    """
    text = unicodedata.normalize("NFKD", str(raw)).encode("ascii", "ignore").decode("ascii")
    text = _UNSAFE.sub("-", text)
    text = re.sub(r"\.{2,}", ".", text).strip(".-_")
    if not text:
        text = "video"
    if text != raw or len(text) > max_length:
        digest = hashlib.sha1(str(raw).encode("utf-8")).hexdigest()[:8]
        text = f"{text[: max_length - 9].rstrip('.-_') or 'video'}-{digest}"
    return text


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success it is renamed into place, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        if tmp.is_dir():
            if path.exists():
                _remove_tree(path)
            os.replace(tmp, path)
        else:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            _remove_tree(tmp) if tmp.is_dir() else tmp.unlink()


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def write_json(path: Path, data: Any) -> Path:
    """Write JSON atomically (``name.tmp`` then rename)."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1, sort_keys=False), encoding="utf-8")
    return Path(path)


def write_bytes(path: Path, data: bytes) -> Path:
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class VideoPaths:
    """Where each stage writes for one video (see docs/architecture.md for the file formats)."""

    root: Path

    @property
    def info_json(self) -> Path:  # download
        return self.root / "info.json"

    @property
    def subs_dir(self) -> Path:  # download
        return self.root / "subs"

    @property
    def source(self) -> Path | None:  # download: source.<ext>
        for candidate in sorted(self.root.glob("source.*")):
            if ".tmp" not in candidate.name and ".part" not in candidate.name:
                return candidate
        return None

    @property
    def scenes_json(self) -> Path:  # scenes
        return self.root / "scenes.json"

    @property
    def audio_wav(self) -> Path:  # transcribe (16 kHz mono)
        return self.root / "audio.wav"

    @property
    def transcript_json(self) -> Path:  # transcribe
        return self.root / "transcript.json"

    @property
    def diarization_json(self) -> Path:  # diarize
        return self.root / "diarization.json"

    @property
    def lines_json(self) -> Path:  # attribute
        return self.root / "lines.json"

    @property
    def clips_json(self) -> Path:  # clips
        return self.root / "clips.json"

    @property
    def frames_dir(self) -> Path:  # sample: frames/<clip_id>/<t_ms>.jpg
        return self.root / "frames"

    @property
    def frames_json(self) -> Path:  # sample
        return self.root / "frames.json"

    @property
    def generation_json(self) -> Path:  # generate
        return self.root / "generation.json"


class WorkDir:
    """The root of a run: ``catalog.sqlite``, ``videos/<video_id>/``, caches and batch files."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()

    def create(self) -> WorkDir:
        (self.root / "videos").mkdir(parents=True, exist_ok=True)
        return self

    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.sqlite"

    @property
    def llm_cache_path(self) -> Path:
        return self.root / "llm-cache.sqlite"

    @property
    def batches_dir(self) -> Path:
        return self.root / "batches"

    @property
    def lock_path(self) -> Path:
        return self.root / ".run.lock"

    def video_dir(self, video_id: str) -> Path:
        if video_id != sanitize_id(video_id):
            raise ValueError(f"unsafe video id: {video_id!r}")
        return self.root / "videos" / video_id

    def paths(self, video_id: str) -> VideoPaths:
        return VideoPaths(self.video_dir(video_id))

    def __repr__(self) -> str:
        return f"WorkDir({str(self.root)!r})"
