"""The stage registry: names in pipeline order, each a module ``v60k.stages.<name>`` with one Stage class.

A stage declares the documents it reads and writes; its ``requires`` is derived here: the stage that writes a
document is required by every stage that reads it (``derive_requires``).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence

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


class ContractError(LookupError):
    """Stages whose reads and writes do not form an order: a document read before (or without) its writer,
    or written by two stages."""


def derive_requires(classes: Sequence[type[Stage]]) -> dict[str, tuple[str, ...]]:
    """For stages in pipeline order: each stage's writers of the documents it reads, in that order."""
    writer: dict[str, str] = {}
    requires: dict[str, tuple[str, ...]] = {}
    position = {klass.name: i for i, klass in enumerate(classes)}
    for klass in classes:
        missing = [doc for doc in klass.reads if doc not in writer]
        if missing:
            raise ContractError(f"{klass.name} reads {', '.join(missing)}, which no earlier stage writes")
        requires[klass.name] = tuple(sorted({writer[doc] for doc in klass.reads}, key=position.__getitem__))
        for doc in klass.writes:
            if doc in writer:
                raise ContractError(f"{doc} is written by both {writer[doc]} and {klass.name}")
            writer[doc] = klass.name
    return requires


@functools.cache
def registered_stages() -> tuple[type[Stage], ...]:
    """Every registered Stage class in pipeline order, each with its derived ``requires`` set."""
    classes = tuple(_load(name) for name in STAGE_ORDER)
    for klass, requires in zip(classes, derive_requires(classes).values(), strict=True):
        klass.requires = requires
    return classes


def stage_class(name: str) -> type[Stage]:
    """The Stage subclass registered under ``name`` (its ``requires`` derived)."""
    if name not in STAGE_ORDER:
        raise KeyError(f"unknown stage {name!r}; stages are {', '.join(STAGE_ORDER)}")
    return registered_stages()[STAGE_ORDER.index(name)]


def writers() -> dict[str, str]:
    """Document (or media file) name -> the registered stage that writes it."""
    return {doc: klass.name for klass in registered_stages() for doc in klass.writes}


def _load(name: str) -> type[Stage]:
    module = importlib.import_module(f"v60k.stages.{name}")
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Stage) and getattr(value, "name", None) == name:
            return value
    raise LookupError(f"v60k.stages.{name} defines no Stage named {name!r}")
