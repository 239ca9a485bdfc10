"""The eight-metric role-play evaluation (``v60k eval``).

For every character turn of the test split's dialogues, the model under test answers the preceding user turn
(frames + summary + persona, with the reference dialogue so far as history, exactly as ``v60k chat`` would ask
it); an LLM judge then scores the model's answer and the reference answer on the rubric's metrics
(``v60k/prompts/eval-rubric-v1.yaml``), a (model, reference) pair of integers with a short rationale each.
A metric's score is the mean, over its valid judgements, of model/reference.

The judge is asked for structured output (``judge_schema``) through the LLM client's compatibility layer, as
the generate stage is (json_schema, json_object + schema, or JSON mode, and one repair request), so that servers
without JSON-schema support (llama.cpp) still answer in the format. A judge answer that does not follow it is
never guessed at: the metric (or the whole turn) is dropped,
the reason is recorded in ``dropped``, and every average says how many judgements it counts and how many were
dropped. Requests go through the LLM client, whose response cache makes a re-run repeat zero requests.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel

from v60k.backends.llm.cost import Usage, UsageMeter, summed_usage
from v60k.dataset import reader
from v60k.roleplay.format import (
    PERSONA_LINES,
    PROMPTS_DIR,
    ROLEPLAY_PROMPT_VERSION,
    RolePlayProfile,
    Turn,
    build_messages,
    frames_for_character,
    persona_text,
)
from v60k.roleplay.profiles import CharacterLines, LineSpans, dialogue_profile

DEFAULT_RUBRIC = "eval-rubric-v1"


class ChatClient(Protocol):
    """What evaluation needs of the LLM client: ``await chat(messages, ...)`` returning a result with
    ``content``, ``usage`` and ``cached``."""

    async def chat(self, messages: list[dict[str, Any]], schema: type[BaseModel] | None = None,
                   **params: Any) -> Any: ...


# ----------------------------------------------------------------------------------------------- rubric


@dataclass(frozen=True)
class Metric:
    name: str
    title: str
    description: str


@dataclass(frozen=True)
class Rubric:
    """The versioned rubric file: metrics, scale, the judge's prompt and its required output format."""

    version: str
    scale_min: int
    scale_max: int
    metrics: tuple[Metric, ...]
    judge_system: str
    judge_user: str
    output_format: str

    @classmethod
    def load(cls, name_or_path: str | Path = DEFAULT_RUBRIC) -> Rubric:
        """A rubric by version name (``eval-rubric-v1``, looked up in ``pipelines/prompts/``) or file path."""
        path = Path(name_or_path)
        if not path.suffix:
            path = PROMPTS_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise FileNotFoundError(f"rubric file not found: {path}")
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        try:
            metrics = tuple(Metric(str(m["name"]), str(m["title"]), " ".join(str(m["description"]).split()))
                            for m in raw["metrics"])
            rubric = cls(
                version=str(raw["version"]),
                scale_min=int(raw["scale"]["min"]),
                scale_max=int(raw["scale"]["max"]),
                metrics=metrics,
                judge_system=str(raw["judge_system"]),
                judge_user=str(raw["judge_user"]),
                output_format=str(raw["output_format"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a valid rubric ({type(exc).__name__}: {exc})") from exc
        if len({m.name for m in metrics}) != len(metrics) or not metrics:
            raise ValueError(f"{path}: metric names must be present and unique")
        return rubric

    @property
    def metric_names(self) -> list[str]:
        return [m.name for m in self.metrics]

    def _fill(self, template: str, **values: Any) -> str:
        common = {
            "scale_min": self.scale_min,
            "scale_max": self.scale_max,
            "metric_count": len(self.metrics),
            "metric_names": ", ".join(self.metric_names),
            "metric_list": "\n".join(f"- {m.name} ({m.title}): {m.description}" for m in self.metrics),
        }
        return string.Template(template).substitute({**common, **{k: str(v) for k, v in values.items()}})

    def judge_messages(
        self,
        profile: RolePlayProfile,
        history: Sequence[Turn],
        question: Turn,
        model_answer: str,
        reference_answer: str,
    ) -> list[dict[str, Any]]:
        """The judge's request: the rubric and output format as system message, the case as user message."""
        output_format = self._fill(self.output_format)
        system = self._fill(self.judge_system, output_format=output_format)
        lines = [f"{_speaker(t, profile.character)}: {t.text}" for t in history]
        user = self._fill(
            self.judge_user,
            character=profile.character,
            persona=profile.persona.strip() or persona_text(profile.character, profile.title),
            summary=profile.summary.strip() or "(none)",
            frame_times=", ".join(f"{t:.2f}" for t in profile.frame_times) or "(no frames)",
            history="\n".join(lines) or "(the conversation starts here)",
            question=f"{_speaker(question, profile.character)}: {question.text}",
            model_answer=model_answer.strip(),
            reference_answer=reference_answer.strip(),
        )
        return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user.strip()}]


def _speaker(turn: Turn, character: str) -> str:
    if turn.role == "character":
        return character
    return (turn.speaker or "").strip() or "User"


# -------------------------------------------------------------------------------------- judge answers


@dataclass(frozen=True)
class ScorePair:
    model: int
    reference: int
    rationale: str = ""

    @property
    def ratio(self) -> float:
        return self.model / self.reference


@dataclass
class Judgement:
    """A parsed judge answer: the valid score pairs, and why each other metric (or the whole answer,
    key ``None``) could not be used."""

    scores: dict[str, ScorePair] = field(default_factory=dict)
    problems: dict[str | None, str] = field(default_factory=dict)


@functools.cache
def judge_schema(rubric: Rubric) -> type[BaseModel]:
    """The structured output the judge is asked for (through the LLM client's compatibility layer: json_schema,
    json_object + schema, or JSON mode with the schema in the prompt, and one repair request): every metric of
    the rubric by name, each an object of integer ``model`` and ``reference`` scores on the scale and a
    ``rationale``. The JSON schema is strict; validation only asks for a ``scores`` object, so that one
    invalid metric is dropped by ``parse_judgement`` rather than the whole answer."""
    pair = {"type": "object", "additionalProperties": False, "required": ["model", "reference", "rationale"],
            "properties": {"model": {"type": "integer", "minimum": rubric.scale_min, "maximum": rubric.scale_max},
                           "reference": {"type": "integer", "minimum": rubric.scale_min,
                                         "maximum": rubric.scale_max},
                           "rationale": {"type": "string"}}}
    schema = {"type": "object", "additionalProperties": False, "required": ["scores"], "title": "JudgeAnswer",
              "properties": {"scores": {"type": "object", "additionalProperties": False,
                                        "required": rubric.metric_names,
                                        "properties": {name: pair for name in rubric.metric_names}}}}

    class JudgeAnswer(BaseModel):
        scores: dict[str, Any]

        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return copy.deepcopy(schema)

    return JudgeAnswer


_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)


def _metric_key(name: str) -> str:
    return re.sub(r"[\s\-–—/]+", "_", str(name).strip().lower())


def _score(value: Any, rubric: Rubric) -> tuple[int | None, str | None]:
    """An integer score on the rubric's scale, or why the value is not one."""
    if value is None:
        return None, "missing"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"not a number ({json.dumps(value)[:40]})"
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        return None, f"not an integer ({value})"
    score = int(value)
    if not rubric.scale_min <= score <= rubric.scale_max:
        return None, f"{score} is outside {rubric.scale_min}–{rubric.scale_max}"
    return score, None


def parse_judgement(text: str | None, rubric: Rubric) -> Judgement:
    """Validate a judge answer against the rubric's format; never guess a missing or invalid score."""
    judgement = Judgement()
    raw = (text or "").strip()
    if not raw:
        judgement.problems[None] = "empty judge answer"
        return judgement
    fenced = _FENCE.match(raw)
    body = fenced.group(1).strip() if fenced else raw
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        if not body.lstrip().startswith(("{", "[")):
            judgement.problems[None] = f"prose instead of the JSON format: {_clip(raw)}"
        else:
            judgement.problems[None] = f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        return judgement
    scores = data.get("scores") if isinstance(data, dict) else None
    if not isinstance(scores, dict):
        judgement.problems[None] = "no \"scores\" object in the judge answer"
        return judgement
    by_key = {_metric_key(k): v for k, v in scores.items()}
    for metric in rubric.metrics:
        entry = by_key.get(metric.name, by_key.get(_metric_key(metric.title)))
        if entry is None:
            judgement.problems[metric.name] = "missing scores for this metric"
            continue
        if not isinstance(entry, dict):
            judgement.problems[metric.name] = f"scores are not an object ({_clip(json.dumps(entry))})"
            continue
        model, model_problem = _score(entry.get("model"), rubric)
        reference, reference_problem = _score(entry.get("reference"), rubric)
        if model_problem or reference_problem:
            parts = [f"model score {model_problem}" if model_problem else "",
                     f"reference score {reference_problem}" if reference_problem else ""]
            judgement.problems[metric.name] = "; ".join(p for p in parts if p)
            continue
        assert model is not None and reference is not None
        judgement.scores[metric.name] = ScorePair(model, reference, str(entry.get("rationale") or "").strip())
    return judgement


def _clip(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------ aggregation


@dataclass
class TurnOutcome:
    """One evaluated character turn: the model's answer, the judgement, or why there is none."""

    dialogue_id: str
    turn: int
    question: str
    reference: str
    answer: str | None = None
    judgement: Judgement | None = None
    failure: str | None = None  # a request that failed: the whole turn is dropped

    def problems(self) -> dict[str | None, str]:
        if self.failure:
            return {None: self.failure}
        return self.judgement.problems if self.judgement else {None: "not judged"}

    def to_dict(self) -> dict[str, Any]:
        scores = self.judgement.scores if self.judgement else {}
        return {
            "dialogue_id": self.dialogue_id,
            "turn": self.turn,
            "question": self.question,
            "reference": self.reference,
            "answer": self.answer,
            "scores": {m: {"model": s.model, "reference": s.reference, "rationale": s.rationale}
                       for m, s in scores.items()},
            "problems": [{"metric": m, "reason": r} for m, r in self.problems().items()],
        }


def aggregate(outcomes: Sequence[TurnOutcome], rubric: Rubric) -> dict[str, Any]:
    """Per metric: mean model/reference ratio, means of both scores, valid and dropped counts; the overall
    score (mean of the metric ratios); and every dropped judgement with its reason."""
    metrics: dict[str, Any] = {}
    for metric in rubric.metrics:
        pairs = [o.judgement.scores[metric.name] for o in outcomes
                 if not o.failure and o.judgement and metric.name in o.judgement.scores]
        n = len(pairs)
        metrics[metric.name] = {
            "title": metric.title,
            "ratio": _round(sum(p.ratio for p in pairs) / n) if n else None,
            "model_mean": _round(sum(p.model for p in pairs) / n) if n else None,
            "reference_mean": _round(sum(p.reference for p in pairs) / n) if n else None,
            "n_valid": n,
            "n_dropped": len(outcomes) - n,
        }
    ratios = [m["ratio"] for m in metrics.values() if m["ratio"] is not None]
    dropped = []
    for outcome in outcomes:
        for metric_name, reason in outcome.problems().items():
            dropped.append({"dialogue_id": outcome.dialogue_id, "turn": outcome.turn,
                            "metric": metric_name, "reason": reason})
    return {
        "metrics": metrics,
        "overall": _round(sum(ratios) / len(ratios)) if ratios else None,
        "n_turns": len(outcomes),
        "dropped": dropped,
    }


def _round(value: float) -> float:
    return round(value, 6)


# ------------------------------------------------------------------------------------------ test split


@dataclass
class EvalItem:
    """One character turn to answer: the profile, the dialogue so far, the user's turn and the reference."""

    dialogue_id: str
    turn: int  # index of the character's turn in the dialogue's ``turns``
    profile: RolePlayProfile
    history: list[Turn]
    question: Turn
    reference: str


def dialogue_items(dialogue_id: str, turns: Sequence[Turn], profile: RolePlayProfile) -> list[EvalItem]:
    """Every character turn that answers a user turn becomes an item (history = the reference turns before)."""
    items = []
    for index, turn in enumerate(turns):
        if turn.role == "character" and index > 0 and turns[index - 1].role == "user" and turn.text.strip():
            items.append(EvalItem(dialogue_id, index, profile, list(turns[: index - 1]), turns[index - 1], turn.text))
    return items


class NoDialogues(FileNotFoundError):
    """The requested split has no dialogues (the message names the splits that have some)."""


def load_test_items(
    shards: str | Path,
    split: str = "test",
    limit: int | None = None,
    max_frames: int | None = None,
    persona_lines: int = PERSONA_LINES,
) -> list[EvalItem]:
    """The split's dialogues (sorted by id, the first ``limit``) as items, rendered as the SFT export renders
    them (``corpus_profiles.dialogue_profile``): the clip's frames (``frames_for_character`` to ``max_frames``) and
    summary, and a persona quoting the character's lines outside the clip."""
    shards = Path(shards)
    rows = sorted(reader.read_rows(shards, "dialogues", split), key=lambda r: r["dialogue_id"])
    if not rows:
        having = [s for s, n in reader.row_counts(shards, "dialogues").items() if n]
        raise NoDialogues(
            f"no {split} dialogues in {shards}/data/dialogues/ ({split}-*.parquet); splits with dialogues: "
            f"{', '.join(having) or 'none'}" + (f" (pass --split {having[-1]})" if having else ""))
    rows = rows[: limit if limit else None]
    clip_ids = sorted({r["clip_id"] for r in rows})
    video_ids = sorted({r["video_id"] for r in rows})
    clips = {c["clip_id"]: c for c in reader.read_rows(shards, "clips", split, filters=[("clip_id", "in", clip_ids)])}
    videos = {v["video_id"]: v for v in reader.read_rows(shards, "videos", split, ["video_id", "title", "series"],
                                                          filters=[("video_id", "in", video_ids)])}
    lines = CharacterLines.from_shards(shards)
    spans = LineSpans.from_shards(shards)
    items: list[EvalItem] = []
    for row in rows:
        clip = clips.get(row["clip_id"])
        frames = [(float(t), f["bytes"]) for t, f in zip((clip or {}).get("frame_times_s") or [],
                                                          (clip or {}).get("frames") or [], strict=False)
                  if f and f.get("bytes")]
        character = str(row.get("character") or "").strip()
        frames = frames_for_character(frames, max_frames, spans.in_clip(row["video_id"], character, clip))
        profile = dialogue_profile(row, clip, videos.get(row["video_id"]), lines, split, frames, persona_lines)
        items += dialogue_items(row["dialogue_id"], [Turn.from_record(t) for t in row["turns"]], profile)
    return items


# ---------------------------------------------------------------------------------------------- runner


@dataclass
class EvalSettings:
    """How the model under test is asked and how the judge is asked (both part of the cache key)."""

    model: str
    judge: str
    vision: bool = True
    image_detail: str | None = None
    concurrency: int = 8
    model_params: dict[str, Any] = field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 256})
    judge_params: dict[str, Any] = field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 1200})
    model_prices: tuple[float, float] = (0.0, 0.0)  # USD per 1M prompt / completion tokens
    judge_prices: tuple[float, float] = (0.0, 0.0)


def _meter_add(meter: UsageMeter, result: Any) -> None:
    """Count one answer: tokens and cost only for requests actually sent (a cache hit costs nothing)."""
    if getattr(result, "cached", False):
        meter.add(Usage(), cached=1)
    else:
        meter.add(result.usage, requests=max(1, int(getattr(result, "requests", 1) or 1)))


def _failure(who: str, exc: Exception) -> str:
    detail = str(exc) if hasattr(exc, "kind") else f"{type(exc).__name__}: {exc}"
    return f"{who} request failed: {_clip(detail, 200)}"


async def _evaluate_item(
    item: EvalItem,
    rubric: Rubric,
    model_client: ChatClient,
    judge_client: ChatClient,
    settings: EvalSettings,
    usage: dict[str, UsageMeter],
    gate: asyncio.Semaphore,
) -> TurnOutcome:
    outcome = TurnOutcome(item.dialogue_id, item.turn, item.question.text, item.reference)
    async with gate:
        messages = build_messages(item.profile, item.history, item.question,
                                  vision=settings.vision, detail=settings.image_detail)
        try:
            answer = await model_client.chat(messages, model=settings.model, **settings.model_params)
        except Exception as exc:  # the client has retried already: record and go on
            outcome.failure = _failure("model", exc)
            return outcome
        _meter_add(usage["model"], answer)
        outcome.answer = (answer.content or "").strip()
        judge_messages = rubric.judge_messages(item.profile, item.history, item.question, outcome.answer,
                                               item.reference)
        try:
            verdict = await judge_client.chat(judge_messages, judge_schema(rubric), model=settings.judge,
                                              **settings.judge_params)
        except Exception as exc:
            outcome.failure = _failure("judge", exc)
            return outcome
        _meter_add(usage["judge"], verdict)
        outcome.judgement = parse_judgement(verdict.content, rubric)
    return outcome


async def evaluate_items(
    items: Sequence[EvalItem],
    rubric: Rubric,
    model_client: ChatClient,
    judge_client: ChatClient,
    settings: EvalSettings,
    split: str | None = None,
) -> dict[str, Any]:
    """Answer and judge every item (bounded concurrency) and aggregate: the results JSON as a dict."""
    usage = {"model": UsageMeter(*settings.model_prices), "judge": UsageMeter(*settings.judge_prices)}
    gate = asyncio.Semaphore(max(1, settings.concurrency))
    outcomes = await asyncio.gather(*(
        _evaluate_item(item, rubric, model_client, judge_client, settings, usage, gate) for item in items
    ))
    summary = aggregate(outcomes, rubric)
    model_spent, judge_spent = usage["model"].snapshot().to_dict(), usage["judge"].snapshot().to_dict()
    return {
        "model": settings.model,
        "judge": settings.judge,
        "rubric_version": rubric.version,
        "prompt_version": ROLEPLAY_PROMPT_VERSION,
        "split": split,
        "metrics": summary["metrics"],
        "overall": summary["overall"],
        "n_dialogues": len({item.dialogue_id for item in items}),
        "n_turns": summary["n_turns"],
        "dropped": summary["dropped"],
        "usage": {**summed_usage(model_spent, judge_spent), "model": model_spent, "judge": judge_spent},
        "turns": [o.to_dict() for o in outcomes],
    }
