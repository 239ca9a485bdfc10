"""The LLM backend: the openai client against OpenAI or any OpenAI-compatible server (vLLM, Ollama, llama.cpp).

    settings = LLMSettings(base_url="http://127.0.0.1:8000/v1", model="gpt-4o-mini")
    client = LLMClient(settings, cache_path=workdir.llm_cache_path)
    result = await client.chat(messages, schema=ClipSummary, temperature=0.2)
    result.parsed  # a validated ClipSummary

- ``compat``: the structured-output form the server accepts (json_schema, json_object + schema, JSON mode),
  pydantic validation and one repair retry.
- ``cache``: a SQLite response cache keyed on (model, messages, parameters, schema).
- ``retry``: exponential backoff with jitter on 429 / 5xx / timeouts, honouring Retry-After.
- ``batch``: the OpenAI Batch API (JSONL with custom_id, upload, create, poll across runs).
- ``cost``: token usage and its estimated cost.

The API key is read from the environment variable named by ``api_key_env`` when the client is built; it is held
as a ``SecretStr`` and never logged, hashed or written. ``openai`` is imported inside the client only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from v60k.backends.llm.cost import Usage, UsageMeter

SchemaMode = Literal["auto", "json_schema", "json_object_schema", "json_mode"]


class LLMSettings(BaseModel):
    """The top-level ``llm`` config section. An empty ``base_url`` means: no endpoint (offline fallbacks)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = ""
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the environment variable holding the key
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    retry_base_s: float = Field(default=1.0, ge=0)  # first backoff; doubles per attempt, with full jitter
    retry_max_s: float = Field(default=60.0, ge=0)  # cap of one wait; a longer Retry-After ends the retries
    concurrency: int = Field(default=8, ge=1)  # requests in flight per worker
    temperature: float = 0.7
    max_tokens: int = Field(default=1024, ge=1)
    price_input_per_1m: float = Field(default=0.0, ge=0)  # USD per 1M prompt tokens
    price_output_per_1m: float = Field(default=0.0, ge=0)  # USD per 1M completion tokens
    batch_discount: float = Field(default=0.5, ge=0, le=1)  # Batch API price factor
    schema_mode: SchemaMode = "auto"
    vision: bool = False  # attach sampled frames as images
    cache: bool = True

    @property
    def enabled(self) -> bool:
        """Whether an endpoint is configured."""
        return bool(self.base_url.strip())

    def api_key(self) -> SecretStr:
        """The key from the environment (a placeholder for local servers that need none)."""
        return SecretStr(os.environ.get(self.api_key_env, "") or "unused")

    def identity(self) -> dict[str, Any]:
        """What changes the generated text (the generate stage's fingerprint): not prices, limits or keys."""
        return {"endpoint": self.enabled, "model": self.model, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "vision": self.vision}


class LLMError(Exception):
    """A request that did not give a usable answer.

    ``kind`` names the reason (rate_limited, server_error, timeout, connection, invalid_json, schema_violation,
    length, refusal, empty_choices, bad_request, auth, batch_error, ...). ``transient`` errors may succeed on a
    later run; ``fatal`` ones (authentication, unknown model) concern every request of the endpoint.
    """

    def __init__(self, kind: str, message: str, *, transient: bool = False, fatal: bool = False,
                 usage: Usage | None = None):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.reason = message
        self.transient = transient
        self.fatal = fatal
        self.usage = usage or Usage()


@dataclass
class ChatResult:
    """One answer: its text, the validated object (when a schema was given) and what it cost."""

    content: str | None
    parsed: BaseModel | None = None
    usage: Usage = field(default_factory=Usage)
    cached: bool = False
    finish_reason: str | None = None
    model: str | None = None
    requests: int = 0  # HTTP requests it took (retries and the repair included); 0 from the cache


def __getattr__(name: str) -> Any:  # the client module is imported on first use
    if name == "LLMClient":
        from v60k.backends.llm.client import LLMClient

        return LLMClient
    raise AttributeError(name)


__all__ = ["ChatResult", "LLMClient", "LLMError", "LLMSettings", "SchemaMode", "Usage", "UsageMeter"]
