"""generate: per clip, a summary context and role-play dialogues, per character a persona; ``generation.json``.

For every clip with attributed lines:
1. a summary context (what happens, who is present, what each character does, says and feels) — by the LLM
   (``generation_type`` "llm", prompt ``summary-v2``; the clips in order, each request with the story so far),
   or, with no endpoint configured, an extractive summary made from the attributed transcript ("extractive",
   generator "v60k");
2. per character who gets dialogues, a persona from their own lines and the summaries (prompt ``persona-v1``;
   else an extractive one from their first lines);
3. LLM role-play dialogues (``dialogue_style`` interview: prompt ``dialogue-v2``, a user talks to one character
   of the clip about what just happened; in_scene: ``dialogue-scene-v1``, the character and another of the clip
   continue the scene); up to ``max_characters_per_clip`` characters (those with the most lines),
   ``dialogues_per_character`` each; skipped with no endpoint;
4. ``raw_lines`` dialogues from the real attributed lines: a character's real line answers the preceding line of
   someone else (alternating exchanges of up to ``raw_lines_max_turns`` turns) — no LLM.
Every LLM item passes the quality gate (``v60k.generation.quality``; near-duplicates:
``v60k.generation.dedup``) or is asked again once with the reason, then kept under ``rejected`` with it; an optional judge scores the dialogues.
Clips without attributed lines produce nothing (counted in the metrics). A request that gives no usable answer
(invalid JSON after the repair request, schema violation, cut at max_tokens, refusal, no choices, a batch
request error) is recorded in ``failures`` with its reason; transient errors (429 / 5xx / timeouts after the
retries) fail the video with error_class ``llm_transient`` so that a retry asks again — the response cache
makes that retry repeat only what failed. Authentication or unknown-model errors fail it as ``llm_endpoint``.

Batch mode (``batch: true``): requests not in the cache are submitted to the Batch API and the video fails with
error_class ``batch_pending`` (transient); the next ``v60k generate --batch`` (or ``v60k run``) polls and collects
the answers (summaries first, then a batch for the personas that need them, then one for the dialogues).
See docs/generation.md.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from v60k.backends.llm import ChatResult, LLMError, LLMSettings
from v60k.backends.llm.client import ChatRequest
from v60k.backends.llm.cost import summed_usage
from v60k.core import documents
from v60k.core.stage import SkipVideo, Stage, StageError, StageResult, StageSettings, Video
from v60k.core.workdir import VideoPaths, read_json, write_json
from v60k.generation.dedup import NearDuplicates, dialogue_text
from v60k.generation.quality import ClipRules, KnownNames, Problem, QualitySettings, language_available
from v60k.roleplay.format import (
    Prompt,
    RolePlayProfile,
    Turn,
    frames_for_character,
    image_data_url,
    persona_text,
)

RAW_GENERATOR = "v60k"
CARRIED_USAGE = "generation-usage.carry.json"  # usage of failed attempts, until a run writes generation.json


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


class KnownPerson(BaseModel):
    name: str
    relation: str


class CharacterPersona(BaseModel):
    """The persona prompt's answer."""

    who_they_are: str = Field(min_length=1)
    how_they_speak: str = Field(min_length=1)
    whom_they_know: list[KnownPerson]

    def text(self) -> str:
        known = "; ".join(f"{k.name} ({k.relation.strip()})" for k in self.whom_they_know)
        return "\n".join([self.who_they_are.strip(), f"How they speak: {self.how_they_speak.strip()}",
                          *([f"Whom they know: {known}"] if known else [])])


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


def clip_frames(paths: VideoPaths, frames_doc: documents.Frames | None, clip_id: str, max_frames: int,
                line_spans: Sequence[tuple[float, float]] = ()) -> list[tuple[float, Path]]:
    """Up to ``max_frames`` of the clip's sampled frames in temporal order: the frame nearest each of
    ``line_spans`` (a character's lines) first, the rest evenly (``frames_for_character``)."""
    entries = [(f.t_s, f) for f in (frames_doc.clips.get(clip_id, []) if frames_doc else [])]
    entries = frames_for_character(entries, max_frames if max_frames > 0 else None, line_spans)
    return [(t_s, paths.root / f.path) for t_s, f in entries if (paths.root / f.path).exists()]


def frames_note(frames: Sequence[tuple[float, Path]]) -> str:
    """The prompt's ``$frames_note``: how many frames follow (empty without frames)."""
    return f"{len(frames)} frames of the clip follow, in temporal order, each after its time." if frames else ""


def with_images(messages: list[dict[str, Any]], frames: Sequence[tuple[float, Path]], detail: str) -> list[dict[str, Any]]:
    """The user message with the frames attached as JPEG images, each preceded by its time."""
    if not frames:
        return messages
    parts: list[dict[str, Any]] = [{"type": "text", "text": messages[-1]["content"]}]
    for t_s, path in frames:
        parts += [{"type": "text", "text": f"Frame at {t_s:.2f} s:"},
                  {"type": "image_url", "image_url": {"url": image_data_url(path.read_bytes()), "detail": detail}}]
    return [*messages[:-1], {"role": "user", "content": parts}]


# ------------------------------------------------------------------------------------------------ the stage
class JudgeSettings(BaseModel):
    """``generate.judge``: an LLM judge scores every LLM dialogue on the eval rubric's role-play metrics (through
    the same client, cache and batch path); a dialogue whose mean score is under ``threshold`` is rejected."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    threshold: float = Field(6.0, ge=0, description="mean of the rubric's metric scores (1-10) a dialogue needs")
    rubric: str = "eval-rubric-v1"
    temperature: float = 0.0


class GenerateSettings(StageSettings):
    summary_prompt: str = "summary-v2"
    dialogue_prompt: str | None = Field(None, description="None: dialogue-v2 (interview) or dialogue-scene-v1 (in_scene)")
    persona_prompt: str = "persona-v1"
    dialogue_style: Literal["interview", "in_scene"] = "interview"
    dialogues_per_character: int = Field(1, ge=0)
    max_characters_per_clip: int = Field(3, ge=1)
    dialogue_exchanges: int = Field(3, ge=1, description="user/character pairs per LLM dialogue")
    raw_lines_max_turns: int = Field(6, ge=2)
    min_attributed_lines: int = Field(1, ge=1, description="a clip with fewer attributed lines gets nothing")
    summary_temperature: float | None = Field(0.2, description="None: the llm section's temperature")
    story_clips: int = Field(6, ge=0, description="earlier clips' summaries in the story so far (0: none)")
    personas: bool = True
    persona_max_lines: int = Field(40, ge=1, description="a character's own lines in the persona request")
    max_frames: int = Field(8, ge=0, description="frames attached to summary and dialogue requests (llm.vision)")
    image_detail: Literal["low", "high", "auto"] = "low"
    quality: QualitySettings = Field(default_factory=QualitySettings)
    judge: JudgeSettings = Field(default_factory=JudgeSettings)
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

    def partner_of(self, character: str) -> str | None:
        """The other character of the clip with the most lines (the in-scene partner)."""
        others = [name for name in self.characters(len(self.lines)) if name != character]
        return others[0] if others else None

    @property
    def span(self) -> str:
        return f"{self.record['start_s']:.1f}–{self.record['end_s']:.1f} s"


@dataclass
class _Asked:
    """One checked request: the accepted answer, or why it was rejected (after the re-ask), or the error."""

    result: ChatResult | None = None
    problem: Problem | None = None
    first_problem: Problem | None = None  # why the first answer was asked again
    rejected_content: str | None = None
    error: LLMError | None = None


def reask_messages(messages: list[dict[str, Any]], content: str | None, problem: Problem) -> list[dict[str, Any]]:
    """The conversation plus the answer that broke a rule and a request to write it again, once."""
    return [*messages, {"role": "assistant", "content": content or ""},
            {"role": "user", "content": f"That answer breaks a rule ({problem}). Write it again, following every "
                                        "rule of the instructions, in the same JSON form."}]


def video_language(video: Video) -> str | None:
    """The video's language: the transcript's (detected or forced), else the manifest's."""
    if documents.Transcript.exists(video.paths):
        language = documents.Transcript.load(video.paths).language
        if language:
            return language
    return video.language


class Generate(Stage):
    name = "generate"
    version = "2"
    reads = ("lines", "clips", "frames")
    writes = ("generation",)
    retry_on_run = ("batch_pending",)  # every run polls the batches still running
    Settings = GenerateSettings

    def __init__(self, settings: StageSettings | None = None, context: Any = None):
        super().__init__(settings, context)
        self.llm = _llm_settings((context.shared.get("llm") if context is not None else None) or {})
        s = self.settings
        self.summary_prompt = Prompt.load(s.summary_prompt)
        self.dialogue_prompt = Prompt.load(s.dialogue_prompt or DIALOGUE_PROMPTS[s.dialogue_style])
        self.interview_prompt = (self.dialogue_prompt if s.dialogue_style == "interview"
                                 else Prompt.load(DIALOGUE_PROMPTS["interview"]))  # for clips with one character
        self.persona_prompt = Prompt.load(s.persona_prompt)
        self.rubric: Any = None
        if s.judge.enabled:
            from v60k.roleplay.evaluate import Rubric

            self.rubric = Rubric.load(s.judge.rubric)
        self.client: Any = None

    def fingerprint_extra(self) -> Any:
        """The prompt files' hashes and what of the llm section changes the text (not prices or keys)."""
        prompts = (self.summary_prompt, self.dialogue_prompt, self.interview_prompt, self.persona_prompt)
        return {"prompts": {p.version: p.sha256 for p in prompts},
                "rubric": self.rubric.version if self.rubric is not None else None, "llm": self.llm.identity()}

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
        # the helpers take each clip and line as the mapping its stage wrote (only its own keys)
        records = [clip.model_dump(exclude_unset=True) for clip in documents.Clips.load(paths).clips]
        lines_doc = documents.Lines.load_or_empty(paths)
        lines_by_id = {ln.line_id: ln.model_dump(exclude_unset=True) for ln in lines_doc.lines}
        clips = [_Clip(r, [lines_by_id[i] for i in r.get("line_ids", []) if i in lines_by_id]) for r in records]
        usable = [c for c in clips if len(c.attributed) >= self.settings.min_attributed_lines]
        out: dict[str, Any] = {"summaries": {}, "personas": {}, "dialogues": [], "rejected": [], "failures": [],
                               "warnings": [], "usage": {}}
        language = video_language(video)
        if self.settings.quality.language_check and not language:
            out["warnings"].append("language check skipped: the video's language is unknown")
        elif self.settings.quality.language_check and not language_available():
            out["warnings"].append("language check skipped: langid is not installed")
        cast = [*lines_doc.cast, *video.characters]
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
                asyncio.run(self._generate(video, usable, out, cast, language, [c.clip_id for c in clips]))
            except StageError:  # what this attempt used is reported by the run that succeeds
                spent = (self.client.meter.snapshot() - before).to_dict()
                _add_usage(carried, {k: v for k, v in spent.items() if k != "cached"})
                raise
            out["usage"] = (self.client.meter.snapshot() - before).to_dict()
            if carried.exists():
                out["usage"] = summed_usage(out["usage"], read_json(carried))
        elif not self.llm.enabled:
            for clip in usable:
                out["summaries"][clip.clip_id] = {"text": extractive_summary(clip.attributed),
                                                  "generation_type": "extractive", "generator": RAW_GENERATOR,
                                                  "prompt_version": None}
        for character in self._persona_characters(usable):  # what the LLM did not give (or no endpoint)
            if character not in out["personas"]:
                out["personas"][character] = self._extractive_persona(video, usable, character)
        if not out["usage"]:
            out["usage"] = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached": 0, "cost_usd": 0.0}
        if not (self.llm.enabled and usable):  # else _generate has done it, the judge included
            self._settle_dialogues(out, [c.clip_id for c in clips])
        documents.Generation.model_validate(out).save(paths, exclude_unset=True)
        carried.unlink(missing_ok=True)
        types = Counter(d["generation_type"] for d in out["dialogues"])
        return StageResult(
            outputs={"generation": paths.generation_json.name},
            usage=out["usage"],
            metrics={"clips": len(clips), "clips_with_lines": len(usable), "clips_without_lines": len(clips) - len(usable),
                     "summaries": len(out["summaries"]), "personas": len(out["personas"]),
                     "dialogues_llm": types.get("llm", 0), "dialogues_raw_lines": types.get("raw_lines", 0),
                     "failures": len(out["failures"]), "rejected": len(out["rejected"]),
                     "items": item_counts(out), "warnings": list(out["warnings"]),
                     "mode": "llm" if self.llm.enabled else "offline"})

    def _raw_dialogues(self, clip: _Clip) -> list[list[dict[str, Any]]]:
        found = []
        for character in sorted({ln["character"] for ln in clip.attributed}):
            found += raw_line_dialogues(clip.lines, character, self.settings.raw_lines_max_turns)
        return found

    def _persona_characters(self, clips: list[_Clip]) -> list[str]:
        """The characters who get dialogues, in order of first appearance."""
        if not self.settings.personas:
            return []
        seen: dict[str, None] = {}
        for clip in clips:
            seen.update(dict.fromkeys(clip.characters(self.settings.max_characters_per_clip)))
        return list(seen)

    @staticmethod
    def _extractive_persona(video: Video, clips: list[_Clip], character: str) -> dict[str, Any]:
        own = [str(ln["text"]).strip() for c in clips for ln in c.attributed if ln["character"] == character]
        return {"text": persona_text(character, video.title, own[:5]), "generation_type": "extractive",
                "generator": RAW_GENERATOR, "prompt_version": None}

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

    def _settle_dialogues(self, out: dict[str, Any], clip_order: list[str]) -> None:
        out["dialogues"] = self._numbered(out["dialogues"], clip_order)
        self._drop_near_duplicates(out)

    def _drop_near_duplicates(self, out: dict[str, Any]) -> None:
        """A dialogue that nearly repeats an earlier one of the same character in the video is rejected as
        ``near_duplicate`` (two characters' exchanges from the same real lines overlap by nature)."""
        seen: dict[str, NearDuplicates] = {}
        kept = []
        for dialogue in out["dialogues"]:
            index = seen.setdefault(dialogue["character"], NearDuplicates(self.settings.quality.dedup_threshold))
            match = index.first_match(dialogue["dialogue_id"], dialogue_text(dialogue))
            if match is None:
                kept.append(dialogue)
            else:
                _reject(out, "dialogue", dialogue["clip_id"], Problem("near_duplicate", f"of {match}"),
                        character=dialogue["character"], item=dialogue)
        out["dialogues"] = kept

    # ---- the LLM part ----------------------------------------------------------------------------------
    async def _checked(self, request: ChatRequest, check: Callable[[Any], Problem | None]) -> _Asked:
        """Ask, check the answer against the rules, ask once more with the reason when it breaks one."""
        client = self.client
        try:
            result = await client.chat(request.messages, request.schema, **request.params)
        except LLMError as exc:
            return _Asked(error=exc)
        problem = check(result.parsed)
        if problem is None:
            return _Asked(result)
        try:
            again = await client.chat(reask_messages(request.messages, result.content, problem), request.schema,
                                      **request.params)
        except LLMError as exc:
            if exc.transient or exc.fatal or exc.kind == "batch_pending":
                return _Asked(error=exc)
            return _Asked(problem=problem, rejected_content=result.content,
                          first_problem=Problem(problem.code, f"{problem.detail}; the re-ask failed ({exc})"))
        second = check(again.parsed)
        if second is None:
            return _Asked(again, first_problem=problem)
        return _Asked(problem=second, first_problem=problem, rejected_content=again.content)

    def _summary_params(self) -> dict[str, Any]:
        """The summary and persona requests' parameters: ``summary_temperature`` when set."""
        temperature = self.settings.summary_temperature
        return {} if temperature is None else {"temperature": temperature}

    async def _generate(self, video: Video, clips: list[_Clip], out: dict[str, Any], cast: list[str],
                        language: str | None, clip_order: list[str]) -> None:
        from v60k.backends.llm.batch import BatchSession

        client = self.client
        session = None
        if self.settings.batch:
            session = BatchSession(client, self.workdir.batches_dir, video.video_id, api=self.settings.batch_api)
            await _batch_call(session.collect(self.settings.batch_wait_s, self.settings.batch_poll_s))
            client.batch = session
        problems = _Problems()
        try:
            frames_doc = await self._frames_doc(video, out, problems)
            context = _VideoContext(video, clips, cast, language, self.settings.quality, frames_doc,
                                    self.settings.story_clips)
            summaries = context.summaries = await self._summaries(context, out, problems)
            personas = await self._personas(context, summaries, out, problems)
            await self._dialogues(context, summaries, personas, out, problems)
            self._settle_dialogues(out, clip_order)
            if self.rubric is not None:
                await self._judge(context, out, problems)
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

    async def _frames_doc(self, video: Video, out: dict[str, Any], problems: _Problems) -> documents.Frames | None:
        """frames.json when frames are to be sent: llm.vision on, and the endpoint takes images (asked once)."""
        if not self.llm.vision or not video.paths.frames_json.exists():
            return None
        try:
            vision = await self.client.supports_vision()
        except LLMError as exc:
            problems.add(out, video.video_id, "vision probe", exc)
            return None
        if not vision:
            out["warnings"].append(f"llm.vision is on but {self.llm.model or 'the model'} at {self.llm.base_url} "
                                   "does not take images: the requests were sent as text, without frames")
            return None
        return documents.Frames.load(video.paths)

    async def _summaries(self, context: _VideoContext, out: dict[str, Any], problems: _Problems) -> dict[str, ClipSummary]:
        """Each clip's summary, checked; in order, each request with the story so far (the earlier clips'
        summaries). In batch mode the requests cannot wait for one another: the story is made of the earlier
        clips' extractive summaries, and every summary is asked at once."""
        params = self._summary_params()
        accepted: dict[str, ClipSummary] = {}
        story: list[str] = []
        seen = NearDuplicates(self.settings.quality.dedup_threshold)

        def request(clip: _Clip, recent: list[str]) -> ChatRequest:
            return ChatRequest(self._summary_messages(context, clip, "\n".join(recent) or "(this is the first clip)"),
                               ClipSummary, params)

        def check(clip: _Clip) -> Callable[[Any], Problem | None]:
            rules = context.rules(clip)
            return lambda parsed: rules.check_summary(parsed.what_happens, [c.model_dump() for c in parsed.characters])

        def settle(clip: _Clip, asked: _Asked) -> None:
            if asked.error is not None:
                problems.add(out, clip.clip_id, "summary", asked.error)
                return
            if asked.result is None:
                _reject(out, "summary", clip.clip_id, asked.problem, first=asked.first_problem,
                        item=asked.rejected_content)
                return
            parsed = asked.result.parsed
            match = seen.first_match(clip.clip_id, parsed.text())
            if match is not None:
                _reject(out, "summary", clip.clip_id, Problem("near_duplicate", f"of {match}"), item=parsed.text())
                return
            accepted[clip.clip_id] = parsed
            if not self.settings.batch:
                story.append(f"[{clip.span}] {parsed.what_happens.strip()}")
            out["summaries"][clip.clip_id] = {"text": parsed.text(), "generation_type": "llm",
                                              "generator": asked.result.model or self.llm.model,
                                              "prompt_version": self.summary_prompt.version,
                                              **({"reasked": str(asked.first_problem)} if asked.first_problem else {})}

        if self.settings.batch:
            for clip in context.clips:
                story.append(f"[{clip.span}] {extractive_summary(clip.attributed, max_quotes=2)}")
            requests = [request(clip, last(story[:n], self.settings.story_clips))
                        for n, clip in enumerate(context.clips)]
            answers = await asyncio.gather(*(self._checked(r, check(c)) for r, c in zip(requests, context.clips)))
            for clip, asked in zip(context.clips, answers):
                settle(clip, asked)
        else:
            for clip in context.clips:
                recent = last(story, self.settings.story_clips)
                settle(clip, await self._checked(request(clip, recent), check(clip)))
        return accepted

    async def _personas(self, context: _VideoContext, summaries: dict[str, ClipSummary], out: dict[str, Any],
                        problems: _Problems) -> dict[str, str] | None:
        """Each dialogue character's persona from their own lines and the accepted summaries (checked); None
        while summaries or personas wait (batch answers not collected yet, transient errors)."""
        if problems.pending or problems.transient:  # personas are made from every summary: wait for them
            return None
        characters = self._persona_characters(context.clips)
        story = "\n".join(f"[{c.span}] {summaries[c.clip_id].text()}" for c in context.clips
                          if c.clip_id in summaries) or "(no summary)"
        rules = context.video_rules()

        def request(character: str) -> ChatRequest:
            own = [ln for c in context.clips for ln in c.attributed if ln["character"] == character]
            own = own[: self.settings.persona_max_lines]
            messages = self.persona_prompt.messages(character=character, title=context.title,
                                                    cast=", ".join(rules.names.cast) or "(none)",
                                                    lines=transcript_text(own), story=story)
            return ChatRequest(messages, CharacterPersona, self._summary_params())

        def check(character: str) -> Callable[[Any], Problem | None]:
            return lambda p: rules.check_persona(character, {"who_they_are": p.who_they_are,
                                                             "how_they_speak": p.how_they_speak},
                                                 {k.name: k.relation for k in p.whom_they_know})

        answers = await asyncio.gather(*(self._checked(request(c), check(c)) for c in characters))
        personas: dict[str, str] = {}
        waiting = False  # a persona whose batch answer is not collected yet
        for character, asked in zip(characters, answers):
            if asked.error is not None:
                waiting = waiting or asked.error.kind == "batch_pending"
                problems.add(out, context.video.video_id, "persona", asked.error, character)
                continue
            if asked.result is None:
                _reject(out, "persona", None, asked.problem, character=character, first=asked.first_problem,
                        item=asked.rejected_content)
                continue
            parsed = asked.result.parsed
            personas[character] = parsed.text()
            out["personas"][character] = {"text": parsed.text(), **parsed.model_dump(), "generation_type": "llm",
                                          "generator": asked.result.model or self.llm.model,
                                          "prompt_version": self.persona_prompt.version}
        return None if waiting else personas

    async def _dialogues(self, context: _VideoContext, summaries: dict[str, ClipSummary],
                         personas: dict[str, str] | None, out: dict[str, Any], problems: _Problems) -> None:
        """The dialogues of every clip with a summary, once the personas are there (None: they wait)."""
        if personas is None:
            return
        exchanges = self.settings.dialogue_exchanges
        jobs, calls = [], []
        for clip in context.clips:
            characters = clip.characters(self.settings.max_characters_per_clip)
            if clip.clip_id not in summaries:
                if not problems.pending_or_transient(clip.clip_id) and self.settings.dialogues_per_character:
                    out["failures"].append({"clip_id": clip.clip_id, "kind": "dialogue", "reason_code": "no_summary",
                                            "reason": "no summary for this clip, so no LLM dialogues "
                                                      f"(for {', '.join(characters)})"})
                continue
            rules = context.rules(clip)
            for character in characters:
                partner = clip.partner_of(character) if self.settings.dialogue_style == "in_scene" else None
                persona = personas.get(character) or persona_text(character, context.title)
                for number in range(1, self.settings.dialogues_per_character + 1):
                    messages = self._dialogue_messages(context, clip, character, partner, number,
                                                       summaries[clip.clip_id].text(), persona)
                    jobs.append((clip, character, partner))
                    calls.append(self._checked(ChatRequest(messages, RolePlayDialogue),
                                               _dialogue_check(rules, character, partner, exchanges)))
        for (clip, character, partner), asked in zip(jobs, await asyncio.gather(*calls)):
            if asked.error is not None:
                problems.add(out, clip.clip_id, "dialogue", asked.error, character)
                continue
            if asked.result is None:
                _reject(out, "dialogue", clip.clip_id, asked.problem, character=character, first=asked.first_problem,
                        item=asked.rejected_content)
                continue
            out["dialogues"].append({"clip_id": clip.clip_id, "character": character, "generation_type": "llm",
                                     "generator": asked.result.model or self.llm.model,
                                     "prompt_version": self._dialogue_prompt_for(partner).version,
                                     "dialogue_style": "in_scene" if partner else "interview",
                                     "turns": dialogue_turns(asked.result.parsed, character, partner),
                                     **({"reasked": str(asked.first_problem)} if asked.first_problem else {})})

    async def _judge(self, context: _VideoContext, out: dict[str, Any], problems: _Problems) -> None:
        """Scores of every LLM dialogue on the rubric (``judge_scores``, ``judge_score``: their mean); under the
        threshold: rejected. A judge answer that does not follow the rubric's format leaves the dialogue unscored
        (``judge_problem``)."""
        from v60k.roleplay.evaluate import parse_judgement

        by_id = {c.clip_id: c for c in context.clips}
        judged = [d for d in out["dialogues"] if d["generation_type"] == "llm"]
        requests = []
        for d in judged:
            clip = by_id[d["clip_id"]]
            persona = (out["personas"].get(d["character"]) or {}).get("text", "")
            profile = RolePlayProfile(d["character"], persona, (out["summaries"].get(d["clip_id"]) or {}).get("text", ""),
                                      title=context.video.title)
            first, rest = d["turns"][0], d["turns"][1:]
            reference = "\n".join(f"{ln['character']}: {ln['text']}" for ln in clip.attributed
                                  if ln["character"] == d["character"]) or "(no line)"
            answer = "\n".join(f"{t['speaker'] or 'User'}: {t['text']}" for t in rest)
            requests.append(ChatRequest(self.rubric.judge_messages(profile, [], Turn("user", first["text"],
                                                                                     first.get("speaker")),
                                                                   answer, reference),
                                        None, {"temperature": self.settings.judge.temperature}))

        kept = []
        for d, result in zip(judged, await self.client.chat_many(requests)):
            if isinstance(result, LLMError):
                if result.transient or result.fatal or result.kind == "batch_pending":
                    problems.add(out, d["clip_id"], "judge", result, d["character"])
                else:
                    d["judge_scores"], d["judge_problem"] = None, str(result)
                continue
            judgement = parse_judgement(result.content, self.rubric)
            if None in judgement.problems or not judgement.scores:
                d["judge_scores"] = None
                d["judge_problem"] = judgement.problems.get(None) or "no valid score"
                continue
            d["judge_scores"] = {name: pair.model for name, pair in judgement.scores.items()}
            d["judge_score"] = round(sum(d["judge_scores"].values()) / len(d["judge_scores"]), 3)
        for d in out["dialogues"]:
            if d.get("judge_score") is not None and d["judge_score"] < self.settings.judge.threshold:
                _reject(out, "dialogue", d["clip_id"], Problem("judge_below_threshold", f"mean judge score "
                        f"{d['judge_score']} < {self.settings.judge.threshold}"), character=d["character"], item=d)
            else:
                kept.append(d)
        out["dialogues"] = kept

    def _summary_messages(self, context: _VideoContext, clip: _Clip, story: str) -> list[dict[str, Any]]:
        frames = context.frames(clip, self.settings.max_frames)
        note = frames_note(frames)
        messages = self.summary_prompt.messages(title=context.title, cast=", ".join(context.cast_names) or "(unknown)",
                                                start_s=f"{clip.record['start_s']:.1f}",
                                                end_s=f"{clip.record['end_s']:.1f}", frames_note=note, story=story,
                                                transcript=transcript_text(clip.lines))
        return with_images(messages, frames, self.settings.image_detail)

    def _dialogue_prompt_for(self, partner: str | None) -> Prompt:
        """The dialogue prompt; an in-scene clip with no partner (one character) gets the interview one."""
        return self.dialogue_prompt if partner or self.settings.dialogue_style == "interview" else self.interview_prompt

    def _dialogue_messages(self, context: _VideoContext, clip: _Clip, character: str, partner: str | None,
                           number: int, summary: str, persona: str) -> list[dict[str, Any]]:
        prompt = self._dialogue_prompt_for(partner)
        frames = context.frames(clip, self.settings.max_frames, character)
        note = frames_note(frames)
        values = {"partner": partner} if partner else {}
        messages = prompt.messages(character=character, title=context.title, summary=summary, number=number,
                                   start_s=f"{clip.record['start_s']:.1f}", end_s=f"{clip.record['end_s']:.1f}",
                                   transcript=transcript_text(clip.lines), exchanges=self.settings.dialogue_exchanges,
                                   story=context.story_before(clip), persona=persona, frames_note=note, **values)
        return with_images(messages, frames, self.settings.image_detail)


DIALOGUE_PROMPTS = {"interview": "dialogue-v2", "in_scene": "dialogue-scene-v1"}


class _VideoContext:
    """What one video's requests and checks share: the clips, the names one may speak of, the language, frames."""

    def __init__(self, video: Video, clips: list[_Clip], cast: list[str], language: str | None,
                 quality: QualitySettings, frames_doc: documents.Frames | None, story_clips: int = 6):
        self.video = video
        self.title = video.title or video.video_id
        self.clips = clips
        self.cast = cast
        self.cast_names = sorted(set(cast))
        self.language = language
        self.quality = quality
        self.frames_doc = frames_doc
        self.story_clips = story_clips
        self.summaries: dict[str, ClipSummary] = {}  # the accepted ones, once asked

    def rules(self, clip: _Clip) -> ClipRules:
        return ClipRules(KnownNames(self.cast, transcript_text(clip.lines)), self.language, self.quality)

    def video_rules(self) -> ClipRules:
        lines = [ln for c in self.clips for ln in c.lines]
        return ClipRules(KnownNames(self.cast, transcript_text(lines)), self.language, self.quality)

    def frames(self, clip: _Clip, max_frames: int, character: str | None = None) -> list[tuple[float, Path]]:
        """The clip's frames for a request; for a character's dialogue, those where the character speaks first."""
        if self.frames_doc is None:
            return []
        spans = [(float(ln["start_s"]), float(ln["end_s"])) for ln in clip.attributed
                 if character and ln["character"] == character and ln.get("start_s") is not None
                 and ln.get("end_s") is not None]
        return clip_frames(self.video.paths, self.frames_doc, clip.clip_id, max_frames, spans)

    def story_before(self, clip: _Clip) -> str:
        """The last ``story_clips`` earlier clips of the video, a line each: what happens in it (or its first
        line, with no summary)."""
        index = next((i for i, other in enumerate(self.clips) if other.clip_id == clip.clip_id), len(self.clips))
        lines = []
        for other in last(self.clips[:index], self.story_clips):
            summary = self.summaries.get(other.clip_id)
            lines.append(f"[{other.span}] " + (summary.what_happens.strip() if summary is not None
                                                 else extractive_summary(other.attributed, max_quotes=1)))
        return "\n".join(lines) or "(this is the first clip)"


def last(items: list[Any], count: int) -> list[Any]:
    """The last ``count`` items (none for 0: ``items[-0:]`` would be all of them)."""
    return items[-count:] if count > 0 else []


def _dialogue_check(rules: ClipRules, character: str, partner: str | None,
                    exchanges: int) -> Callable[[Any], Problem | None]:
    return lambda parsed: rules.check_dialogue(dialogue_turns(parsed, character, partner), character, exchanges)


def dialogue_turns(parsed: RolePlayDialogue, character: str, partner: str | None) -> list[dict[str, Any]]:
    return [{"role": t.role, "speaker": character if t.role == "character" else partner, "text": t.text}
            for t in parsed.turns]


def _reject(out: dict[str, Any], kind: str, clip_id: str | None, problem: Problem | None, *,
            character: str | None = None, first: Problem | None = None, item: Any = None) -> None:
    """An item that broke a rule (after the one re-ask): kept under ``rejected`` with its reason."""
    assert problem is not None
    out["rejected"].append({"kind": kind, "clip_id": clip_id, "character": character, "reason_code": problem.code,
                            "reason": str(problem), **({"first_reason": str(first)} if first else {}),
                            "item": item})


def item_counts(out: dict[str, Any]) -> dict[str, Any]:
    """The stage's per-item outcomes: summaries, personas and dialogues made; rejected and failed by reason."""
    done = len(out["summaries"]) + len(out["personas"]) + len(out["dialogues"])
    return {"done": done, "rejected": dict(Counter(r["reason_code"] for r in out["rejected"])),
            "failed": dict(Counter(f.get("reason_code") or "error" for f in out["failures"]))}


def _llm_settings(section: dict[str, Any]) -> LLMSettings:
    """The ``llm`` config section, or a ConfigError naming what is wrong with it."""
    from pydantic import ValidationError

    from v60k.core.config import ConfigError

    try:
        return LLMSettings(**section)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"llm section: {problems}") from None


def _add_usage(path: Path, usage: dict[str, float]) -> None:
    """Accumulate the usage of an attempt that failed (transient, batch pending) for the run that succeeds."""
    write_json(path, summed_usage(read_json(path) if path.exists() else {}, usage))


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
            out["failures"].append({"clip_id": clip_id, "kind": kind, "reason_code": error.kind,
                                    "reason": f"{error}{who}"})
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
