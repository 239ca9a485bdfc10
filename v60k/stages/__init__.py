"""The stage registry: names in pipeline order, each a module ``v60k.stages.<name>`` with one Stage class."""

from __future__ import annotations

import importlib

from v60k.stage import Stage

STAGE_SUMMARIES: dict[str, str] = {
    "download": "Download each manifest URL with yt-dlp (format cap, info.json, creator subtitles).",
    "scenes": "Detect scenes (PySceneDetect) and record stream facts and a motion profile.",
    "transcribe": "Transcribe speech with word timestamps (faster-whisper on CPU, whisperx on GPU).",
    "diarize": "Find who speaks when (offline speaker embeddings, or pyannote.audio) and split lines by speaker.",
    "attribute": "Map each diarization speaker to a character of the cast list, or to no one.",
    "clips": "Group consecutive scenes into clips of 30-120 s, cut only at scene boundaries.",
    "sample": "Sample each clip's frames adaptively, in temporal order (the dynamic profile).",
    "generate": "Write summaries and role-play dialogues per clip (LLM, or raw lines offline).",
}
STAGE_ORDER: tuple[str, ...] = tuple(STAGE_SUMMARIES)


def stage_class(name: str) -> type[Stage]:
    """The Stage subclass registered under ``name``."""
    if name not in STAGE_ORDER:
        raise KeyError(f"unknown stage {name!r}; stages are {', '.join(STAGE_ORDER)}")
    module = importlib.import_module(f"v60k.stages.{name}")
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Stage) and getattr(value, "name", None) == name:
            return value
    raise LookupError(f"v60k.stages.{name} defines no Stage named {name!r}")
