"""The stage registry: names in pipeline order, each a module ``v60k.stages.<name>`` with one Stage class.

A stage declares the documents it reads and writes; its ``requires`` is derived here: the stage that writes a
document is required by every stage that reads it (``derive_requires``).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Generic, TypeVar

from v60k.core.documents import DOCUMENTS, Document
from v60k.core.stage import Stage

K = TypeVar("K")
V = TypeVar("V")

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


def stage_documents() -> dict[str, type[Document]]:
    """Each registered stage's own document: the first JSON document it writes (download: info.json)."""
    return {klass.name: DOCUMENTS[doc] for klass in registered_stages()
            for doc in [next((d for d in klass.writes if d in DOCUMENTS), None)] if doc}


def with_requirements(classes: Sequence[type[Stage]]) -> list[type[Stage]]:
    """The given stages plus, transitively, the registered stages they read from, in pipeline order (stages
    that are not registered last)."""
    by_name = {c.name: c for c in classes}
    queue = list(classes)
    while queue:
        for req in queue.pop().requires:
            if req not in by_name:
                by_name[req] = stage_class(req)
                queue.append(by_name[req])
    order = {name: i for i, name in enumerate(STAGE_ORDER)}
    return sorted(by_name.values(), key=lambda c: order.get(c.name, len(order)))


def stages_through(document: str) -> tuple[str, ...]:
    """The stage that writes ``document`` and, transitively, every stage it requires, in pipeline order."""
    return tuple(c.name for c in with_requirements([stage_class(writers()[document])]))


class Derived(Mapping[K, V], Generic[K, V]):
    """A read-only mapping computed from the registered stages when first used: a module can define a
    constant from the registry without importing every stage module when it is imported."""

    def __init__(self, compute: Callable[[], Mapping[K, V]]):
        self._compute = compute
        self._value: Mapping[K, V] | None = None

    def _mapping(self) -> Mapping[K, V]:
        if self._value is None:
            self._value = self._compute()
        return self._value

    def __getitem__(self, key: K) -> V:
        return self._mapping()[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())

    def __repr__(self) -> str:
        return repr(dict(self._mapping()))


def _load(name: str) -> type[Stage]:
    module = importlib.import_module(f"v60k.stages.{name}")
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Stage) and getattr(value, "name", None) == name:
            return value
    raise LookupError(f"v60k.stages.{name} defines no Stage named {name!r}")
