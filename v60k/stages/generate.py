"""generate: per clip, a summary context and role-play dialogues; ``generation.json``.

For every clip with attributed lines:
1. a summary context (what happens, who is present, what each character does, says and feels) — by the LLM
   (``generation_type`` "llm", prompt ``summary-v1``), or, with no endpoint configured, an extractive summary
   made from the attributed transcript ("extractive", generator "v60k");
2. LLM role-play dialogues (prompt ``dialogue-v1``): a user talks to one character of the clip about what just
   happened; up to ``max_characters_per_clip`` characters (those with the most lines), ``dialogues_per_character``
   each; skipped with no endpoint;
3. ``raw_lines`` dialogues from the real attributed lines: a character's real line answers the preceding line of
   someone else (alternating exchanges of up to ``raw_lines_max_turns`` turns) — no LLM.
Clips without attributed lines produce nothing (counted in the metrics). A request that gives no usable answer
(invalid JSON after the repair request, schema violation, cut at max_tokens, refusal, no choices, a batch
request error) is recorded in ``failures`` with its reason; transient errors (429 / 5xx / timeouts after the
retries) fail the video with error_class ``llm_transient`` so that a retry asks again — the response cache
makes that retry repeat only what failed. Authentication or unknown-model errors fail it as ``llm_endpoint``.

Batch mode (``batch: true``): requests not in the cache are submitted to the Batch API and the video fails with
error_class ``batch_pending`` (transient); the next ``v60k generate --batch`` (or ``v60k run``) polls and collects
the answers (summaries first, then a second batch for the dialogues that need them). See docs/generation.md.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from v60k.backends.llm import LLMError, LLMSettings
from v60k.core.stage import SkipVideo, Stage, StageError, StageResult, StageSettings, Video
from v60k.core.workdir import VideoPaths, read_json, write_json

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"  # also reachable as pipelines/prompts/
RAW_GENERATOR = "v60k"
CARRIED_USAGE = "generation-usage.carry.json"  # usage of failed attempts, until a run writes generation.json
_HEADER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)


# ------------------------------------------------------------------------------------------------ prompts
@dataclass(frozen=True)
class Prompt:
    """A versioned prompt file: a ``---`` header (``version: ...``), then ``[system]`` and ``[user]`` parts
    with ``$name`` placeholders."""

    version: str
    system: str
    user: str
    sha256: str

    @classmethod
    def load(cls, name: str, prompts_dir: Path | None = None) -> Prompt:
        """A prompt by version name (``summary-v1``: ``v60k/prompts/summary-v1.md``) or by a ``.md`` file path."""
        path = Path(name).expanduser() if name.endswith(".md") else (prompts_dir or PROMPTS_DIR) / f"{name}.md"
        if not path.exists():
            raise FileNotFoundError(f"prompt file not found: {path}")
        text = path.read_text(encoding="utf-8")
        header = _HEADER.match(text)
        version = re.search(r"^version:\s*(\S+)\s*$", header.group(1), re.MULTILINE) if header else None
        if not header or not version or "[system]\n" not in text or "[user]\n" not in text:
            raise ValueError(f"{path}: expected a '---' header with 'version:', then [system] and [user] parts")
        body = text[header.end():]
        system, user = body.split("[user]\n", 1)
        return cls(version.group(1), system.replace("[system]\n", "", 1).strip(), user.strip(),
                   hashlib.sha256(text.encode()).hexdigest())

    def messages(self, **values: Any) -> list[dict[str, Any]]:
        fill = {k: "" if v is None else str(v) for k, v in values.items()}
        return [{"role": "system", "content": string.Template(self.system).substitute(fill)},
                {"role": "user", "content": string.Template(self.user).substitute(fill)}]


# ------------------------------------------------------------------------------------------------ schemas
class CharacterNote(BaseModel):
    name: str
    does: str
    says: str
    feels: str


class ClipSummary(BaseModel):
    """The summary prompt's answer."""

    what_happens: str = Field(min_length=1)
    characters: list[CharacterNote]

    def text(self) -> str:
        notes = [f"{c.name} — does: {c.does.strip()}; says: {c.says.strip()}; feels: {c.feels.strip()}"
                 for c in self.characters]
        return "\n".join([self.what_happens.strip(), *notes])


class DialogueTurn(BaseModel):
    role: Literal["user", "character"]
    text: str

    @field_validator("text")
    @classmethod
    def not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty turn")
        return value.strip()


class RolePlayDialogue(BaseModel):
    """The dialogue prompt's answer: turns alternating user / character, opening with the user."""

    turns: list[DialogueTurn]

    @model_validator(mode="after")
    def alternating(self) -> RolePlayDialogue:
        roles = [t.role for t in self.turns]
        if len(roles) < 2 or roles[0] != "user" or roles[-1] != "character":
            raise ValueError("a dialogue opens with the user, ends with the character and has at least 2 turns")
        if any(a == b for a, b in zip(roles, roles[1:])):
            raise ValueError("user and character turns must alternate")
        return self


# ------------------------------------------------------------------------------------------------ text helpers
def transcript_text(lines: Sequence[dict[str, Any]]) -> str:
    """``[12.3] Ross: text`` per line (unattributed lines: "Someone")."""
    return "\n".join(f"[{float(ln['start_s']):.1f}] {ln.get('character') or 'Someone'}: {str(ln.get('text', '')).strip()}"
                     for ln in lines if str(ln.get("text") or "").strip())


def extractive_summary(lines: Sequence[dict[str, Any]], max_quotes: int = 6) -> str:
    """A summary made only from the attributed transcript: who speaks, how much, and their first lines."""
    attributed = [ln for ln in lines if ln.get("character") and str(ln.get("text") or "").strip()]
    counts = Counter(ln["character"] for ln in attributed)
    who = ", ".join(f"{name} ({n} line{'s' if n > 1 else ''})" for name, n in counts.most_common())
    quotes = [f"{ln['character']}: “{str(ln['text']).strip()}”" for ln in attributed[:max_quotes]]
    more = len(attributed) - len(quotes)
    text = f"Present and speaking: {who}.\n" + "\n".join(quotes)
    return text + (f"\n(and {more} more line{'s' if more > 1 else ''})" if more > 0 else "")


def raw_line_dialogues(lines: Sequence[dict[str, Any]], character: str, max_turns: int) -> list[list[dict[str, Any]]]:
    """Exchanges between ``character`` and the others from the real lines: consecutive lines of one speaker are
    one turn; a dialogue is a run of turns alternating others / character, opening with another's line and
    ending with the character's; it is cut at ``max_turns`` turns or where two others speak in a row."""
    merged: list[dict[str, Any]] = []
    for line in lines:
        text = str(line.get("text") or "").strip()
        if not text:
            continue
        who = line.get("character")
        if merged and merged[-1]["speaker"] == who and who is not None:
            merged[-1]["text"] += " " + text
        else:
            merged.append({"speaker": who, "text": text})
    dialogues: list[list[dict[str, Any]]] = []
    run: list[dict[str, Any]] = []

    def flush() -> None:
        while run and run[-1]["role"] != "character":
            run.pop()
        if len(run) >= 2:
            dialogues.append(list(run))
        run.clear()

    for turn in merged:
        if turn["speaker"] == character:
            if run and run[-1]["role"] == "user":
                run.append({"role": "character", "speaker": character, "text": turn["text"]})
                if len(run) >= max_turns:
                    flush()
            else:
                flush()
        else:
            if run and run[-1]["role"] == "user":
                flush()
            run.append({"role": "user", "speaker": turn["speaker"], "text": turn["text"]})
    flush()
    return dialogues


def clip_frames(paths: VideoPaths, frames_doc: dict[str, Any] | None, clip_id: str, max_frames: int) -> list[tuple[float, Path]]:
    """Up to ``max_frames`` of the clip's sampled frames, evenly chosen, in temporal order."""
    entries = sorted(((frames_doc or {}).get("clips") or {}).get(clip_id) or [], key=lambda f: float(f["t_s"]))
    if len(entries) > max_frames > 0:
        step = len(entries) / max_frames
        entries = [entries[int(i * step)] for i in range(max_frames)]
    return [(float(f["t_s"]), paths.root / f["path"]) for f in entries if (paths.root / f["path"]).exists()]


def with_images(messages: list[dict[str, Any]], frames: Sequence[tuple[float, Path]], detail: str) -> list[dict[str, Any]]:
    """The user message with the frames attached as JPEG images, each preceded by its time."""
    if not frames:
        return messages
    parts: list[dict[str, Any]] = [{"type": "text", "text": messages[-1]["content"]}]
    for t_s, path in frames:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts += [{"type": "text", "text": f"Frame at {t_s:.2f} s:"},
                  {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}", "detail": detail}}]
    return [*messages[:-1], {"role": "user", "content": parts}]


# ------------------------------------------------------------------------------------------------ the stage
class GenerateSettings(StageSettings):
    summary_prompt: str = "summary-v1"
    dialogue_prompt: str = "dialogue-v1"
    dialogues_per_character: int = Field(1, ge=0)
    max_characters_per_clip: int = Field(3, ge=1)
    dialogue_exchanges: int = Field(3, ge=1, description="user/character pairs per LLM dialogue")
    raw_lines_max_turns: int = Field(6, ge=2)
    min_attributed_lines: int = Field(1, ge=1, description="a clip with fewer attributed lines gets nothing")
    summary_temperature: float | None = Field(0.2, description="None: the llm section's temperature")
    max_frames: int = Field(8, ge=0, description="frames attached to the summary request (llm.vision)")
    image_detail: Literal["low", "high", "auto"] = "low"
    batch: bool = False
    batch_api: Literal["openai", "offline"] = "openai"
    batch_wait_s: float = Field(0.0, ge=0, description="how long one run polls a submitted batch")
    batch_poll_s: float = Field(15.0, gt=0)


@dataclass
class _Clip:
    record: dict[str, Any]
    lines: list[dict[str, Any]]

    @property
    def clip_id(self) -> str:
        return self.record["clip_id"]

    @property
    def attributed(self) -> list[dict[str, Any]]:
        return [ln for ln in self.lines if ln.get("character")]

    def characters(self, limit: int) -> list[str]:
        counts = Counter(ln["character"] for ln in self.attributed)
        return [name for name, _ in counts.most_common(limit)]


class Generate(Stage):
    name = "generate"
    version = "1"
    reads = ("lines", "clips", "frames")
    writes = ("generation",)
    retry_on_run = ("batch_pending",)  # every run polls the batches still running
    Settings = GenerateSettings

    def __init__(self, settings: StageSettings | None = None, context: Any = None):
        super().__init__(settings, context)
        self.llm = _llm_settings((context.shared.get("llm") if context is not None else None) or {})
        self.summary_prompt = Prompt.load(self.settings.summary_prompt)
        self.dialogue_prompt = Prompt.load(self.settings.dialogue_prompt)
        self.client: Any = None

    def fingerprint_extra(self) -> Any:
        """The prompt files' hashes and what of the llm section changes the text (not prices or keys)."""
        return {"prompts": {p.version: p.sha256 for p in (self.summary_prompt, self.dialogue_prompt)},
                "llm": self.llm.identity()}

    def setup(self) -> None:
        if self.llm.enabled and self.client is None:
            from v60k.backends.llm.client import LLMClient

            self.client = LLMClient(self.llm, cache_path=self.workdir.llm_cache_path)

    def teardown(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def process(self, video: Video) -> StageResult:
        paths = video.paths
        if not paths.clips_json.exists():
            raise SkipVideo("no clips.json (the clips stage did not run for this video)", "no_clips")
        records = read_json(paths.clips_json).get("clips") or []
        lines_by_id = ({ln["line_id"]: ln for ln in read_json(paths.lines_json).get("lines", [])}
                       if paths.lines_json.exists() else {})
        clips = [_Clip(r, [lines_by_id[i] for i in r.get("line_ids", []) if i in lines_by_id]) for r in records]
        usable = [c for c in clips if len(c.attributed) >= self.settings.min_attributed_lines]
        out: dict[str, Any] = {"summaries": {}, "dialogues": [], "usage": {}, "failures": []}
        for clip in usable:
            for turns in self._raw_dialogues(clip):
                out["dialogues"].append({"clip_id": clip.clip_id, "character": turns[-1]["speaker"],
                                         "generation_type": "raw_lines", "generator": RAW_GENERATOR,
                                         "prompt_version": None, "turns": turns})
        carried = paths.root / CARRIED_USAGE
        if self.llm.enabled and usable:
            self.setup()
            before = self.client.meter.snapshot()
            try:
                asyncio.run(self._generate(video, usable, out))
            except StageError:  # what this attempt used is reported by the run that succeeds
                spent = (self.client.meter.snapshot() - before).to_dict()
                _add_usage(carried, {k: v for k, v in spent.items() if k != "cached"})
                raise
            out["usage"] = (self.client.meter.snapshot() - before).to_dict()
            if carried.exists():
                out["usage"] = _sum_usage(out["usage"], read_json(carried))
        elif not self.llm.enabled:
            for clip in usable:
                out["summaries"][clip.clip_id] = {"text": extractive_summary(clip.attributed),
                                                  "generation_type": "extractive", "generator": RAW_GENERATOR,
                                                  "prompt_version": None}
        if not out["usage"]:
            out["usage"] = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached": 0, "cost_usd": 0.0}
        out["dialogues"] = self._numbered(out["dialogues"], [c.clip_id for c in clips])
        write_json(paths.generation_json, out)
        carried.unlink(missing_ok=True)
        types = Counter(d["generation_type"] for d in out["dialogues"])
        return StageResult(
            outputs={"generation": paths.generation_json.name},
            usage=out["usage"],
            metrics={"clips": len(clips), "clips_with_lines": len(usable), "clips_without_lines": len(clips) - len(usable),
                     "summaries": len(out["summaries"]), "dialogues_llm": types.get("llm", 0),
                     "dialogues_raw_lines": types.get("raw_lines", 0), "failures": len(out["failures"]),
                     "mode": "llm" if self.llm.enabled else "offline"})

    def _raw_dialogues(self, clip: _Clip) -> list[list[dict[str, Any]]]:
        found = []
        for character in sorted({ln["character"] for ln in clip.attributed}):
            found += raw_line_dialogues(clip.lines, character, self.settings.raw_lines_max_turns)
        return found

    @staticmethod
    def _numbered(dialogues: list[dict[str, Any]], clip_order: list[str]) -> list[dict[str, Any]]:
        """Dialogue ids ``<clip_id>-dNN`` in clip order: raw_lines first, then llm."""
        position = {c: i for i, c in enumerate(clip_order)}
        ordered = sorted(dialogues, key=lambda d: (position[d["clip_id"]], d["generation_type"] != "raw_lines"))
        counters: Counter[str] = Counter()
        numbered = []
        for d in ordered:
            numbered.append({"dialogue_id": f"{d['clip_id']}-d{counters[d['clip_id']]:02d}", **d})
            counters[d["clip_id"]] += 1
        return numbered

    # ---- the LLM part ----------------------------------------------------------------------------------
    async def _generate(self, video: Video, clips: list[_Clip], out: dict[str, Any]) -> None:
        from v60k.backends.llm.batch import BatchSession
        from v60k.backends.llm.client import ChatRequest

        client = self.client
        session = None
        if self.settings.batch:
            session = BatchSession(client, self.workdir.batches_dir, video.video_id, api=self.settings.batch_api)
            await _batch_call(session.collect(self.settings.batch_wait_s, self.settings.batch_poll_s))
            client.batch = session
        problems = _Problems()
        try:
            title = video.title or video.video_id
            frames_doc = (read_json(video.paths.frames_json)
                          if self.llm.vision and video.paths.frames_json.exists() else None)
            summary_params = ({} if self.settings.summary_temperature is None
                              else {"temperature": self.settings.summary_temperature})
            requests = [ChatRequest(self._summary_messages(video, title, clip, frames_doc), ClipSummary,
                                    summary_params) for clip in clips]
            summaries: dict[str, str] = {}
            for clip, result in zip(clips, await client.chat_many(requests)):
                if isinstance(result, LLMError):
                    problems.add(out, clip.clip_id, "summary", result)
                    continue
                summaries[clip.clip_id] = result.parsed.text()
                out["summaries"][clip.clip_id] = {"text": summaries[clip.clip_id], "generation_type": "llm",
                                                  "generator": result.model or self.llm.model,
                                                  "prompt_version": self.summary_prompt.version}
            jobs, requests = [], []
            for clip in clips:
                characters = clip.characters(self.settings.max_characters_per_clip)
                if clip.clip_id not in summaries:
                    if not problems.pending_or_transient(clip.clip_id) and self.settings.dialogues_per_character:
                        out["failures"].append({"clip_id": clip.clip_id, "kind": "dialogue",
                                                "reason": "no summary for this clip, so no LLM dialogues "
                                                          f"(for {', '.join(characters)})"})
                    continue
                for character in characters:
                    for number in range(1, self.settings.dialogues_per_character + 1):
                        jobs.append((clip, character))
                        requests.append(ChatRequest(self._dialogue_messages(title, clip, character, number,
                                                                            summaries[clip.clip_id]),
                                                    RolePlayDialogue))
            for (clip, character), result in zip(jobs, await client.chat_many(requests)):
                if isinstance(result, LLMError):
                    problems.add(out, clip.clip_id, "dialogue", result, character)
                    continue
                turns = [{"role": t.role, "speaker": character if t.role == "character" else None, "text": t.text}
                         for t in result.parsed.turns]
                out["dialogues"].append({"clip_id": clip.clip_id, "character": character, "generation_type": "llm",
                                         "generator": result.model or self.llm.model,
                                         "prompt_version": self.dialogue_prompt.version, "turns": turns})
            if session is not None and not (session.queued or problems.pending):
                session.report_usage()  # every batch's tokens, in the run that writes the results
            if session is not None and (session.queued or problems.pending):
                submitted = await _batch_call(session.submit())
                waiting = len(session.waiting)
                raise StageError(f"{waiting} request(s) wait for batch results ({submitted or 'submitted earlier'}); "
                                 "the next `v60k generate --batch` collects them",
                                 error_class="batch_pending", transient=True)
        finally:
            client.batch = None
            await client.aclose()
        problems.raise_if_any()

    def _summary_messages(self, video: Video, title: str, clip: _Clip, frames_doc: dict[str, Any] | None) -> list[dict[str, Any]]:
        frames = (clip_frames(video.paths, frames_doc, clip.clip_id, self.settings.max_frames)
                  if frames_doc is not None else [])
        note = (f"{len(frames)} frames of the clip follow, in temporal order, each after its time." if frames else "")
        messages = self.summary_prompt.messages(title=title, start_s=f"{clip.record['start_s']:.1f}",
                                                end_s=f"{clip.record['end_s']:.1f}", frames_note=note,
                                                transcript=transcript_text(clip.lines))
        return with_images(messages, frames, self.settings.image_detail)

    def _dialogue_messages(self, title: str, clip: _Clip, character: str, number: int, summary: str) -> list[dict[str, Any]]:
        return self.dialogue_prompt.messages(character=character, title=title, summary=summary, number=number,
                                             start_s=f"{clip.record['start_s']:.1f}",
                                             end_s=f"{clip.record['end_s']:.1f}",
                                             transcript=transcript_text(clip.lines),
                                             exchanges=self.settings.dialogue_exchanges)


def _llm_settings(section: dict[str, Any]) -> LLMSettings:
    """The ``llm`` config section, or a ConfigError naming what is wrong with it."""
    from pydantic import ValidationError

    from v60k.core.config import ConfigError

    try:
        return LLMSettings(**section)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"llm section: {problems}") from None


def _sum_usage(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: round(a.get(k, 0) + b.get(k, 0), 6) for k in {*a, *b}}


def _add_usage(path: Path, usage: dict[str, float]) -> None:
    """Accumulate the usage of an attempt that failed (transient, batch pending) for the run that succeeds."""
    write_json(path, _sum_usage(read_json(path) if path.exists() else {}, usage))


async def _batch_call(call: Any) -> Any:
    """Await a Batch API call (upload, create, retrieve, download); its errors as classified stage errors."""
    import openai

    from v60k.backends.llm.retry import classify

    try:
        return await call
    except openai.OpenAIError as exc:
        kind, retryable, _ = classify(exc)
        message = f"Batch API: {kind}: {getattr(exc, 'message', None) or exc}"
        if kind in ("auth", "not_found"):
            raise StageError(message, error_class="llm_endpoint") from None
        raise StageError(message, error_class="llm_transient" if retryable else "batch_error",
                         transient=retryable) from None


class _Problems:
    """Errors of one video's requests: permanent ones become ``failures``; transient, fatal and pending ones
    are kept to decide the video's outcome."""

    def __init__(self) -> None:
        self.transient: list[str] = []
        self.fatal: list[str] = []
        self.pending: list[str] = []
        self._clips: set[str] = set()

    def add(self, out: dict[str, Any], clip_id: str, kind: str, error: LLMError, character: str | None = None) -> None:
        who = f" ({character})" if character else ""
        if error.kind == "batch_pending":
            self.pending.append(clip_id)
        elif error.fatal:
            self.fatal.append(f"{clip_id} {kind}: {error}")
        elif error.transient:
            self.transient.append(f"{clip_id} {kind}{who}: {error}")
        else:
            out["failures"].append({"clip_id": clip_id, "kind": kind, "reason": f"{error}{who}"})
            return
        self._clips.add(clip_id)

    def pending_or_transient(self, clip_id: str) -> bool:
        return clip_id in self._clips

    def raise_if_any(self) -> None:
        if self.fatal:
            raise StageError(f"the LLM endpoint refused the requests: {self.fatal[0]}", error_class="llm_endpoint")
        if self.transient:
            raise StageError(f"{len(self.transient)} request(s) failed after retries; a retry asks only for these "
                             f"(answers are cached): {'; '.join(self.transient[:3])}",
                             error_class="llm_transient", transient=True)
