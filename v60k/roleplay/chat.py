"""The framework at inference (``v60k chat``): talk to a character of a video.

    prepared = prepare_video("episode.mp4", ["Ross", "Monica"], "chat-work", config)
    client = make_client(config, WorkDir("chat-work"))       # None without an endpoint
    profile = await build_profile(prepared, "Ross", client=client)
    session = ChatSession(profile, client, model="gpt-4o-mini")
    answer = await session.ask("How was the museum?")

``prepare_video`` runs the speech stages on the video in a work dir (``v60k.core.pipeline.run``: download, scenes,
transcribe, diarize, attribute), ``build_profile`` samples frames with the reference sampler (temporal order) and makes the summary
context from the attributed transcript with the generation stage's summary prompt through the LLM client — or the
extractive summary when no endpoint is configured. All of that works offline; only ``ask`` needs a model.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from v60k.core.catalog import Catalog
from v60k.core.config import PipelineConfig
from v60k.core.documents import Info, Line, Lines, Scenes
from v60k.core.errors import V60kError
from v60k.core.manifest import derive_id, load_manifest
from v60k.core.progress import Progress
from v60k.core.stage import Video
from v60k.core.workdir import VideoPaths, WorkDir
from v60k.roleplay.format import (
    PERSONA_LINES,
    Prompt,
    RolePlayProfile,
    Turn,
    build_messages,
    frames_for_character,
    image_parts,
    persona_text,
    without_images,
)
from v60k.stages import STAGE_SUMMARIES, Derived, stages_through
from v60k.testing.sample_episodes import MediaServer

# the stages that make lines.json (iterating gives their names in order), derived from the stage registry
SPEECH_STAGES = Derived(lambda: {s: STAGE_SUMMARIES[s] for s in stages_through("lines")})
SUMMARY_PROMPT = "summary-v1"  # the generation stage's summary prompt
IMAGE_REFUSAL_KINDS = ("server_error", "bad_request")  # how text-only servers answer image parts


class ChatError(V60kError, RuntimeError):
    """The video cannot be prepared for a chat (download or probing failed), with the reason."""


@dataclass
class PreparedVideo:
    """The work dir's view of the chat's video after the speech stages."""

    video: Video
    title: str | None
    duration_s: float
    lines: list[Line]  # attributed lines (lines.json), possibly empty
    scenes: Scenes = field(default_factory=Scenes)  # scenes.json: scenes and the motion profile
    notes: list[str] = field(default_factory=list)  # stages that were skipped or failed, and why

    @property
    def paths(self) -> VideoPaths:
        return self.video.paths


def _local_file(video: str) -> Path | None:
    """The local file ``video`` names (None for a URL); FileNotFoundError when it does not exist."""
    if "://" in video:
        return None
    path = Path(video).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {video}")
    return path.resolve()


def _refresh_known_video(workdir: WorkDir, row: dict[str, Any]) -> bool:
    """A video chatted about before keeps its id: give the catalog today's URL (a local file is served on a new
    port each time) and cast, so that a stage that has to run again fetches from the right place."""
    with Catalog(workdir) as catalog:
        if not catalog.videos([row["video_id"]]):
            return False
        catalog.update_video(row["video_id"], characters=row["characters"], source_url=row["source_url"])
    return True


def _quiet(*_: object) -> None:
    """Swallow the HTTP server's per-request error report."""


def prepare_video(
    video: str,
    cast: Sequence[str],
    workdir: str | Path | WorkDir,
    config: PipelineConfig | None = None,
    progress: Progress | None = None,
) -> PreparedVideo:
    """Run the speech stages on one video (resumable in ``workdir``) and read what they produced."""
    from v60k.core import pipeline

    workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
    workdir.create()
    local = _local_file(video)
    config = config or PipelineConfig()
    if local is not None:  # served from this machine's loopback address by chat itself
        config = config.with_sections({"download": {"allow_private_networks": True}})
    with contextlib.ExitStack() as stack:
        if local is None:
            row = {"url": video, "characters": list(cast)}
        else:  # the download stage fetches over HTTP only: serve the file's folder on 127.0.0.1 meanwhile
            server = stack.enter_context(MediaServer(local.parent))
            server.httpd.handle_error = _quiet  # the downloader closing a probe connection early is no error
            row = {"url": server.url(quote(local.name)), "id": derive_id(local.as_uri()), "title": local.stem,
                   "characters": list(cast)}
        manifest_path = workdir.root / "chat-manifest.jsonl"
        manifest_path.write_text(json.dumps(row) + "\n", "utf-8")
        manifest = load_manifest(manifest_path)
        if not manifest.rows:
            reason = manifest.rejected[0].reason if manifest.rejected else "no row"
            raise ChatError(f"not a usable video reference {video!r}: {reason}")
        row = manifest.rows[0]
        if _refresh_known_video(workdir, row):
            pipeline.retry(workdir)  # what failed last time (say, a download from an old port) is tried again
        pipeline.run(workdir, manifest=manifest, config=config, stages=list(SPEECH_STAGES),
                     progress=progress, command="chat")
    with Catalog(workdir) as catalog:
        items = {stage: catalog.item(row["video_id"], stage) or {} for stage in SPEECH_STAGES}
    for stage in ("download", "scenes"):
        if items[stage].get("state") != "done":
            raise ChatError(f"{stage} did not finish for {video}: {_explain(items[stage])}")
    notes = [f"{stage} {item.get('state')}: {_explain(item)}" for stage, item in items.items()
             if item.get("state") != "done"]
    paths = workdir.paths(row["video_id"])
    info = Info.load_or_empty(paths)
    scenes = Scenes.load_or_empty(paths)
    lines = Lines.load_or_empty(paths).lines
    duration = float(scenes.stream.duration_s or info.duration or 0.0)
    video_row = Video(video_id=row["video_id"], source_url=row["source_url"], dir=paths.root,
                      characters=list(cast), title=row.get("title"))
    return PreparedVideo(video_row, row.get("title") or info.title, duration, lines, scenes, notes)


def _explain(item: dict[str, Any]) -> str:
    if not item:
        return "not run"
    return f"{item.get('error_class') or item.get('state')}: {item.get('error_message') or ''}".strip().rstrip(":")


def video_frames(prepared: PreparedVideo, max_frames: int | None,
                 character: str | None = None) -> list[tuple[float, bytes]]:
    """Up to ``max_frames`` of the reference sampler's frames over the whole video, in temporal order (reusing
    the scenes stage's scenes and motion profile), chosen by ``frames_for_character`` for ``character``'s lines:
    the sampler's usual frames are the candidates."""
    from v60k.media.frame_sampler import DEFAULT_MAX_FRAMES, sample

    source = prepared.paths.source
    if source is None:
        raise ChatError(f"no downloaded source in {prepared.paths.root}")
    spans = [(ln.start_s, ln.end_s) for ln in prepared.lines if character and ln.character == character]
    candidates = max_frames if max_frames is None or not spans else max(max_frames, DEFAULT_MAX_FRAMES)
    scenes = [scene.model_dump() for scene in prepared.scenes.scenes] or None
    frames = sample(source, 0.0, prepared.duration_s, max_frames=candidates,
                    motion=prepared.scenes.motion, scenes=scenes)
    return frames_for_character([(float(t), bytes(jpeg)) for t, jpeg in frames], max_frames, spans)


def character_lines(lines: Sequence[Line], character: str, limit: int = PERSONA_LINES) -> list[str]:
    return [line.text for line in lines if line.character == character and line.text][:limit]


@dataclass
class ChatSession:
    """A conversation with one character; the history (both sides) is kept across turns."""

    profile: RolePlayProfile
    client: Any  # the LLM client: ``await chat(messages, model=..., ...)``
    model: str | None = None
    vision: bool = True
    image_detail: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens (default: the llm section's)
    user_name: str | None = None
    history: list[Turn] = field(default_factory=list)
    last_result: Any = None
    warnings: list[str] = field(default_factory=list)  # e.g. the fall back to text-only

    def messages_for(self, question: str) -> list[dict[str, Any]]:
        return build_messages(self.profile, self.history, Turn("user", question, self.user_name),
                              vision=self.vision, detail=self.image_detail)

    async def ask(self, question: str) -> str:
        """The character's answer to ``question``; both are appended to the history. A server that refuses the
        frames' image parts (a text-only model: HTTP 500 / 400) is asked again without them, once; the session
        stays text-only from then on and says so in ``warnings``."""
        params = dict(self.params)
        if self.model:
            params["model"] = self.model
        messages = self.messages_for(question)
        try:
            result = await self.client.chat(messages, **params)
        except Exception as exc:
            if not (self.vision and image_parts(messages) and refuses_images(exc)):
                raise
            result = await self.client.chat(without_images(messages), **params)  # fails too: not the images
            self.vision = False
            self.warnings.append(f"the model refused the frames' images ({exc}); continuing text-only: the "
                                 "frames' times and the summary context only")
        self.last_result = result
        answer = (result.content or "").strip()
        self.history += [Turn("user", question, self.user_name), Turn("character", answer, self.profile.character)]
        return answer


def refuses_images(exc: BaseException) -> bool:
    """Whether a failed request is what a text-only server answers to image parts: the LLM client's
    ``server_error`` (llama.cpp: HTTP 500) or ``bad_request`` (400)."""
    from v60k.backends.llm import LLMError

    return isinstance(exc, LLMError) and exc.kind in IMAGE_REFUSAL_KINDS


def persona_for(character: str, persona: str | None, prepared: PreparedVideo) -> str:
    """The given persona, or a plain one with a few of the character's own lines from the video."""
    if persona and persona.strip():
        return persona.strip()
    return persona_text(character, prepared.title, character_lines(prepared.lines, character))


def llm_settings(config: PipelineConfig) -> Any:
    """The config's ``llm`` section as the LLM backend's settings (checked when the config was loaded)."""
    return config.llm


def make_client(config: PipelineConfig, workdir: WorkDir) -> Any:
    """The LLM client for the config's endpoint, caching in ``workdir``; None when no endpoint is configured."""
    from v60k.backends.llm import LLMClient

    settings = llm_settings(config)
    if not settings.enabled:
        return None
    return LLMClient(settings, cache_path=workdir.llm_cache_path)


def configured_model(config: PipelineConfig) -> str | None:
    return llm_settings(config).model or None


async def video_summary(prepared: PreparedVideo, client: Any = None) -> str:
    """The summary context of the whole video from its attributed transcript: the generation stage's summary
    prompt through the LLM client, or (no endpoint, or the request failed: noted) its extractive summary."""
    from v60k.backends.llm import LLMError
    from v60k.stages.generate import ClipSummary, extractive_summary, transcript_text

    if not prepared.lines:
        return ""
    lines = [line.model_dump() for line in prepared.lines]  # the generation stage's helpers take mappings
    if client is None:
        return extractive_summary(lines)
    messages = Prompt.load(SUMMARY_PROMPT).messages(
        title=prepared.title or prepared.video.video_id, start_s="0.0", end_s=f"{prepared.duration_s:.1f}",
        frames_note="", transcript=transcript_text(lines))
    try:
        result = await client.chat(messages, ClipSummary)
    except LLMError as exc:
        prepared.notes.append(f"summary request failed ({exc}); using the extractive summary")
        return extractive_summary(lines)
    return result.parsed.text()


async def build_profile(
    prepared: PreparedVideo,
    character: str,
    persona: str | None = None,
    *,
    max_frames: int | None = 8,
    client: Any = None,
) -> RolePlayProfile:
    """The character's profiles for this video: sampled frames, the summary context and the persona."""
    return RolePlayProfile(
        character=character,
        persona=persona_for(character, persona, prepared),
        summary=await video_summary(prepared, client),
        frames=video_frames(prepared, max_frames, character),
        title=prepared.title,
    )
