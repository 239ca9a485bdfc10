"""The stage contract: every per-video step of the pipeline is a small ``Stage`` subclass.

A stage reads earlier stages' outputs for one video from the work dir, writes its own (atomically),
and returns a ``StageResult``. The executor calls ``setup()`` once per worker (load models there)
and ``process(video)`` once per video. Raise ``SkipVideo`` for an explained non-failure
("no audio stream"), ``StageError`` (or a subclass) for a classified failure; any other exception
is recorded as a failure with its type name as the class.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SecretStr

from v60k.core.workdir import VideoPaths, WorkDir


class StageSettings(BaseModel):
    """Base for a stage's config section. Secrets are ``SecretStr``: never hashed, dumped or logged."""

    model_config = ConfigDict(extra="forbid")

    def public_dict(self) -> dict[str, Any]:
        """The settings without secret values (what the catalog stores and the fingerprint hashes)."""
        return _redact(self.model_dump(mode="python"))


def _redact(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "<secret>" if value.get_secret_value() else None
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs (the Ray executor turns this into actor options), and optionally how
    many workers the stage gets (None: the run's ``workers``). A config's ``resources:`` section overrides it."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float = 0.0
    workers: int | None = None

    def __post_init__(self) -> None:
        if min(self.cpus, self.gpus, self.memory_gb) < 0 or (self.workers is not None and self.workers < 1):
            raise ValueError(f"invalid resources {self}: amounts must be >= 0 and workers >= 1")

    @classmethod
    def on_device(cls, device: str, cpus: float = 1.0) -> Resources:
        """One GPU per worker for a torch/CTranslate2 device "cuda" / "cuda:N", none for "cpu"."""
        return cls(cpus=cpus, gpus=1.0 if device.startswith("cuda") else 0.0)

    def merged(self, overrides: dict[str, Any] | None) -> Resources:
        """These resources with some fields replaced (a config's ``resources: {stage: {...}}`` entry)."""
        if not overrides:
            return self
        known = [f.name for f in fields(self)]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f"unknown resource(s) {unknown}; known: {', '.join(known)}")
        return replace(self, **overrides)


@dataclass
class Video:
    """One manifest row, as a stage sees it."""

    video_id: str
    source_url: str
    dir: Path
    series: str | None = None
    characters: list[str] = field(default_factory=list)
    language: str | None = None
    license: str | None = None
    title: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def paths(self) -> VideoPaths:
        return VideoPaths(self.dir)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["dir"] = str(self.dir)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Video:
        return cls(**{**data, "dir": Path(data["dir"])})


@dataclass
class StageResult:
    """What ``process`` returns: the outputs it wrote (names → paths), plus optional facts.

    ``usage`` (tokens, requests, cost_usd, ...) is summed by ``status``; ``new_videos`` are manifest
    rows discovered while processing (a playlist's entries) that the pipeline adds to the catalog.
    """

    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, float] = field(default_factory=dict)
    new_videos: list[dict[str, Any]] = field(default_factory=list)
    skip_reason: str | None = None


class SkipVideo(Exception):
    """The stage does not apply to this video (no audio, language filtered, ...): a final, explained state."""

    def __init__(self, reason: str, error_class: str = "skipped"):
        super().__init__(reason)
        self.reason = reason
        self.error_class = error_class


class StageError(Exception):
    """A classified failure. ``error_class`` is what ``status`` groups by; ``transient`` ones may be retried."""

    error_class: str = "error"
    transient: bool = False

    def __init__(self, message: str, error_class: str | None = None, transient: bool | None = None):
        super().__init__(message)
        if error_class:
            self.error_class = error_class
        if transient is not None:
            self.transient = transient


@dataclass
class StageContext:
    """What a stage gets besides its own settings: the work dir and the run's shared config sections."""

    workdir: WorkDir
    shared: dict[str, Any] = field(default_factory=dict)  # e.g. {"llm": {...}, "output": {...}}

    def upstream_item(self, video_id: str, stage: str) -> dict[str, Any] | None:
        """The catalog row of an earlier stage for this video (state, error_class, error_message, ...), read-only;
        None when the catalog has none or cannot be read. Stages learn upstream states only through this."""
        import sqlite3

        from v60k.core.catalog import Catalog
        from v60k.core.errors import V60kError

        try:
            with Catalog(self.workdir, read_only=True) as catalog:
                return catalog.item(video_id, stage)
        except (FileNotFoundError, V60kError, sqlite3.Error):
            return None


class Stage:
    """Base class. Subclasses set ``name``, ``version``, ``reads``, ``writes``, ``Settings`` and implement
    ``process``.

    ``reads`` / ``writes`` name work-dir documents and media files (``v60k.core.documents.NAMES``). ``requires``
    (the stages whose rows must be final first; a change to one re-queues this stage) is derived by the
    registry (``v60k.stages``): the writer of each document this stage reads. A stage outside the registry
    (a test's) sets ``requires`` itself.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()
    Settings: ClassVar[type[StageSettings]] = StageSettings
    resources: ClassVar[Resources] = Resources()
    # failure classes that every run retries by itself (e.g. a batch that was still running last time)
    retry_on_run: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: StageSettings | None = None, context: StageContext | None = None):
        self.settings = settings if settings is not None else self.Settings()
        self.context = context

    @property
    def workdir(self) -> WorkDir:
        assert self.context is not None, "stage built without a context"
        return self.context.workdir

    def fingerprint(self) -> str:
        """Version + settings hash; a change re-runs this stage and every later one. Override to add
        inputs that live outside the settings (prompt files, a model's identity)."""
        return fingerprint_of(self.version, self.settings.public_dict(), self.fingerprint_extra())

    def fingerprint_extra(self) -> Any:
        return None

    def worker_resources(self) -> Resources:
        """What one worker needs with these settings (e.g. a GPU when ``device`` is cuda); default ``resources``."""
        return self.resources

    def setup(self) -> None:
        """Load models and open clients; called once per worker before any ``process``."""

    def process(self, video: Video) -> StageResult:
        raise NotImplementedError

    def teardown(self) -> None:
        """Release what ``setup`` acquired."""


def fingerprint_of(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
