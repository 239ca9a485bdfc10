"""The work dir's per-video documents: one typed model per JSON file, with its name, file and version.

These are the contract between stages (docs/architecture.md, "File formats"). A stage declares the names it
reads and writes (``Stage.reads`` / ``Stage.writes``); the stage registry derives the order from them.
Models accept fields they do not name (``extra="allow"``): a stage may add facts without breaking readers.

    scenes = Scenes.load(video.paths)       # DocumentError (one line) when missing or malformed
    save(video.paths, Clips(clips=[...]))   # written atomically (v60k.core.workdir.write_json)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator

from v60k.core.workdir import VideoPaths, read_json, write_json

ANALYSIS_FPS = 5.0  # the motion profile's default rate (analysed frames per second)


class DocumentError(ValueError):
    """A document is missing or does not match its model (the message names the file and the first problem)."""


class Part(BaseModel):
    """A section of a document: named fields typed, any other field kept as it is."""

    model_config = ConfigDict(extra="allow")


class Document(Part):
    """One JSON file of a video's directory."""

    name: ClassVar[str]  # what stages declare in ``reads`` / ``writes``
    file_name: ClassVar[str]
    version: ClassVar[str] = "1"

    @classmethod
    def path(cls, paths: VideoPaths) -> Path:
        return paths.root / cls.file_name

    @classmethod
    def paths_attribute(cls) -> str:
        """The ``VideoPaths`` property naming this file (``scenes.json`` -> ``scenes_json``)."""
        return cls.file_name.replace(".", "_")

    @classmethod
    def exists(cls, paths: VideoPaths) -> bool:
        return cls.path(paths).exists()

    @classmethod
    def load(cls: type[D], paths: VideoPaths) -> D:
        """The document of this video; ``DocumentError`` when it is missing, not JSON or not of this shape."""
        path = cls.path(paths)
        try:
            return cls.model_validate(read_json(path))
        except FileNotFoundError as exc:
            raise DocumentError(f"{path.name} is missing") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "document"
            raise DocumentError(f"{path.name} is not valid: {where}: {first['msg']}") from exc
        except ValueError as exc:  # not JSON
            raise DocumentError(f"{path.name} is not valid JSON: {exc}") from exc

    @classmethod
    def load_or_empty(cls: type[D], paths: VideoPaths) -> D:
        """``load``, or an empty document (every field at its default) when the file does not exist."""
        return cls.load(paths) if cls.exists(paths) else cls()

    def save(self, paths: VideoPaths, *, exclude_unset: bool = False) -> Path:
        """Write atomically (every field, then the extra ones). ``exclude_unset``: only the fields that were
        given or read (what came from upstream is written back as it came, no defaults added)."""
        return write_json(self.path(paths), self.model_dump(mode="json", exclude_unset=exclude_unset))


D = TypeVar("D", bound=Document)


def load(paths: VideoPaths, kind: type[D]) -> D:
    """``kind.load(paths)``."""
    return kind.load(paths)


def save(paths: VideoPaths, doc: Document) -> Path:
    """``doc.save(paths)``."""
    return doc.save(paths)


# ---- download ------------------------------------------------------------------------------------
class Info(Document):
    """info.json: yt-dlp's facts about the video (id, title, channel, duration, license, subtitles, ...)."""

    name = "info"
    file_name = "info.json"

    id: str | None = None
    title: str | None = None
    duration: float | None = None
    subtitles: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None
    license: str | None = None
    channel: str | None = None
    uploader: str | None = None
    upload_date: str | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None


# ---- scenes --------------------------------------------------------------------------------------
class Stream(Part):
    duration_s: float = 0.0
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    frame_count: int | None = None
    has_video: bool = True
    has_audio: bool | None = None
    video_codec: str | None = None
    audio_codec: str | None = None


class Scene(Part):
    """``end_s`` / ``end_frame`` are exclusive."""

    index: int
    start_s: float
    end_s: float
    start_frame: int | None = None
    end_frame: int | None = None


class Motion(Part):
    """The motion profile: per analysed frame its time, luma change score (0-255) and 64-bit dHash
    (an int here, 16 hex digits in the file). The scenes stage writes it; the frame sampler reuses it."""

    fps: float = ANALYSIS_FPS
    times_s: list[float] = Field(default_factory=list)
    scores: list[float] = Field(default_factory=list)
    dhash: list[int] = Field(default_factory=list)
    # the whole video's keyframe times and frame rate, when the analysis decoded every keyframe (the scenes
    # stage): the sampler then plans its decoding runs without probing the file again
    keyframes_s: list[float] | None = None
    frame_rate: float | None = None

    @field_validator("dhash", mode="before")
    @classmethod
    def _from_hex(cls, value: Any) -> Any:
        return [int(h, 16) if isinstance(h, str) else h for h in value or []]

    @field_validator("dhash", mode="after")
    @classmethod
    def _same_lengths(cls, value: list[int], info: Any) -> list[int]:
        times, scores = info.data.get("times_s", []), info.data.get("scores", [])
        if not len(times) == len(scores) == len(value):
            raise ValueError(
                f"motion profile lengths differ: {len(times)} times, {len(scores)} scores, {len(value)} hashes"
            )
        return value

    @field_validator("fps", mode="before")
    @classmethod
    def _default_fps(cls, value: Any) -> Any:
        return value or ANALYSIS_FPS

    @field_serializer("dhash")
    def _to_hex(self, value: list[int]) -> list[str]:
        return [f"{h:016x}" for h in value]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Motion:
        """scenes.json's ``motion`` section; ``ValueError`` when it is malformed."""
        return cls.model_validate(data)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def add(self, time_s: float, score: float, dhash: int) -> None:
        self.times_s.append(time_s)
        self.scores.append(score)
        self.dhash.append(dhash)

    def span(self, start_s: float, end_s: float) -> Motion:
        """The analysed frames with ``start_s <= t < end_s``."""
        keep = [i for i, t in enumerate(self.times_s) if start_s - 1e-6 <= t < end_s - 1e-6]
        return Motion.model_construct(
            fps=self.fps,
            times_s=[self.times_s[i] for i in keep],
            scores=[self.scores[i] for i in keep],
            dhash=[self.dhash[i] for i in keep],
            keyframes_s=self.keyframes_s,
            frame_rate=self.frame_rate,
        )

    def covers(self, start_s: float, end_s: float) -> bool:
        """Whether the profile has analysed frames across the span (not just a corner of it)."""
        inside = self.span(start_s, end_s).times_s
        if not inside:
            return False
        period = 1.0 / self.fps if self.fps > 0 else 1.0
        return inside[0] - start_s <= 2 * period + 0.05 and end_s - inside[-1] <= 2 * period + 0.05


class Scenes(Document):
    """scenes.json: stream facts, the detector's settings, the scenes and the motion profile."""

    name = "scenes"
    file_name = "scenes.json"

    stream: Stream = Field(default_factory=Stream)
    detector: dict[str, Any] = Field(default_factory=dict)
    scenes: list[Scene] = Field(default_factory=list)
    motion: Motion | None = None


# ---- transcribe / diarize / attribute --------------------------------------------------------------
class Word(Part):
    text: str
    start_s: float | None = None
    end_s: float | None = None
    probability: float | None = None


class Segment(Part):
    start_s: float
    end_s: float
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    words: list[Word] = Field(default_factory=list)


class Transcript(Document):
    """transcript.json: the ASR segments with words; ``dropped`` holds what the filters removed."""

    name = "transcript"
    file_name = "transcript.json"

    backend: str | None = None
    model: str | None = None
    language: str | None = None
    language_probability: float | None = None
    duration_s: float | None = None
    prompted_with_cast: bool | None = None
    segments: list[Segment] = Field(default_factory=list)
    dropped: list[dict[str, Any]] = Field(default_factory=list)  # each with start_s, end_s and the reason
    redecoded: list[dict[str, Any]] = Field(default_factory=list)


class Line(Part):
    line_id: str
    start_s: float
    end_s: float
    text: str = ""
    speaker: str | None = None
    character: str | None = None
    confidence: float | None = None
    words: list[Word] = Field(default_factory=list)


class Turn(Part):
    start_s: float
    end_s: float
    speaker: str


class Diarization(Document):
    """diarization.json: speaker turns, per-speaker facts and the lines split where the speaker changes."""

    name = "diarization"
    file_name = "diarization.json"

    backend: str | None = None
    model: str | None = None
    num_speakers: int | None = None
    turns: list[Turn] = Field(default_factory=list)
    speakers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    lines: list[Line] = Field(default_factory=list)


class Lines(Document):
    """lines.json: the cast, each speaker's character (or none) and the attributed lines."""

    name = "lines"
    file_name = "lines.json"

    cast: list[str] = Field(default_factory=list)
    cast_source: str | None = None
    speakers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    lines: list[Line] = Field(default_factory=list)


# ---- clips / sample / generate -------------------------------------------------------------------
class Clip(Part):
    clip_id: str
    index: int | None = None
    start_s: float
    end_s: float
    scene_indices: list[int] = Field(default_factory=list)
    line_ids: list[str] = Field(default_factory=list)


class Clips(Document):
    """clips.json: consecutive scenes grouped into clips."""

    name = "clips"
    file_name = "clips.json"

    clips: list[Clip] = Field(default_factory=list)


class FrameRef(Part):
    t_s: float
    path: str  # relative to the video dir
    scene_index: int | None = None


class Frames(Document):
    """frames.json: per clip its sampled frames in temporal order, and the settings that chose them."""

    name = "frames"
    file_name = "frames.json"

    clips: dict[str, list[FrameRef]] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)


class Summary(Part):
    """A clip's summary and who wrote it."""

    text: str | None = None
    generation_type: str | None = None
    generator: str | None = None
    prompt_version: str | None = None


class DialogueTurn(Part):
    role: str | None = None
    speaker: str | None = None
    text: str | None = None


class Dialogue(Part):
    """One role-play dialogue of a clip, with the judge's verdict when there is one."""

    dialogue_id: str
    clip_id: str | None = None
    character: str | None = None
    generation_type: str | None = None
    generator: str | None = None
    prompt_version: str | None = None
    turns: list[DialogueTurn] = Field(default_factory=list)
    judge_scores: dict[str, Any] | None = None
    judge_score: float | None = None
    judge_problem: str | None = None


class Generation(Document):
    """generation.json: clip summaries, role-play dialogues, usage and per-clip failures."""

    name = "generation"
    file_name = "generation.json"

    summaries: dict[str, Summary] = Field(default_factory=dict)
    personas: dict[str, Any] = Field(default_factory=dict)
    dialogues: list[Dialogue] = Field(default_factory=list)
    rejected: list[Any] = Field(default_factory=list)  # each a mapping: kind, clip, reason, ...
    failures: list[dict[str, Any]] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    usage: dict[str, int | float] = Field(default_factory=dict)


DOCUMENTS: dict[str, type[Document]] = {
    doc.name: doc for doc in (Info, Scenes, Transcript, Diarization, Lines, Clips, Frames, Generation)
}
# media files stages hand each other besides the documents (``VideoPaths`` attribute of each)
MEDIA: dict[str, str] = {"source": "source", "audio": "audio_wav"}
NAMES: tuple[str, ...] = (*MEDIA, *DOCUMENTS)  # what ``Stage.reads`` / ``Stage.writes`` may name
