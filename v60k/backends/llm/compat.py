"""Structured output across OpenAI-compatible servers.

Servers accept different ``response_format`` forms for a JSON schema:
- ``json_schema``: ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`` (OpenAI, vLLM, Ollama);
- ``json_object_schema``: ``{"type": "json_object", "schema": ...}`` (llama-cpp-python's server, which answers
  the first form with an HTTP error);
- ``json_mode``: ``{"type": "json_object"}`` with the schema given in the prompt.
Whatever the form, the answer is parsed and validated with pydantic; an invalid one gets one repair request.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

FORMS = ("json_schema", "json_object_schema", "json_mode")
# statuses with which a server refuses a response_format form it does not know (llama-cpp-python: 500)
FORM_REJECTED_STATUSES = frozenset({400, 415, 422, 500, 501})
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class InvalidAnswer(ValueError):
    """An answer that is not valid JSON (``kind`` invalid_json) or not valid for the schema (schema_violation)."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def json_schema_of(schema: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema in the strict form (every property required, no additional properties)."""
    return copy.deepcopy(_strict_schema(schema))


@functools.lru_cache(maxsize=256)
def _strict_schema(schema: type[BaseModel]) -> dict[str, Any]:
    return _strict(schema.model_json_schema())


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node["additionalProperties"] = False
            node["required"] = list(node["properties"])
        node.pop("default", None)
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
    return node


def response_format(form: str, schema: type[BaseModel]) -> dict[str, Any]:
    """The ``response_format`` request field for ``form``."""
    body = json_schema_of(schema)
    if form == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": schema.__name__, "schema": body, "strict": True}}
    if form == "json_object_schema":
        return {"type": "json_object", "schema": body}
    if form == "json_mode":
        return {"type": "json_object"}
    raise ValueError(f"unknown schema form {form!r}; forms are {FORMS}")


def schema_instruction(schema: type[BaseModel]) -> str:
    return ("Answer with one JSON object only, no prose and no code fence, that follows this JSON schema:\n"
            + json.dumps(json_schema_of(schema), ensure_ascii=False))


def with_instruction(messages: list[dict[str, Any]], schema: type[BaseModel]) -> list[dict[str, Any]]:
    """The messages with the schema instruction appended to the system message (JSON mode)."""
    text = schema_instruction(schema)
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system" and isinstance(out[0].get("content"), str):
        out[0]["content"] = f"{out[0]['content']}\n\n{text}"
    else:
        out.insert(0, {"role": "system", "content": text})
    return out


def parse_answer(content: str | None, schema: type[BaseModel]) -> BaseModel:
    """The validated object, or ``InvalidAnswer`` saying why not (code fences around the JSON are tolerated)."""
    if content is None or not content.strip():
        raise InvalidAnswer("invalid_json", "empty answer")
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidAnswer("invalid_json", f"{exc.msg} at char {exc.pos}") from None
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:8])
        raise InvalidAnswer("schema_violation", problems) from None


def repair_messages(messages: list[dict[str, Any]], content: str | None, problem: InvalidAnswer,
                    schema: type[BaseModel]) -> list[dict[str, Any]]:
    """The conversation plus the invalid answer and a request to answer again, validly."""
    return [*messages, {"role": "assistant", "content": content or ""},
            {"role": "user", "content": f"That answer is not valid ({problem.kind}: {problem.detail}). "
                                        + schema_instruction(schema)}]
