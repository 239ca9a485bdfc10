"""``LLMClient``: async chat completions through the openai client, with structured output, a response cache,
retries and bounded concurrency."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from v60k.backends.llm import ChatResult, LLMError, LLMSettings
from v60k.backends.llm.cache import ResponseCache, request_key
from v60k.backends.llm.compat import (
    FORM_REJECTED_STATUSES,
    FORMS,
    InvalidAnswer,
    json_schema_of,
    parse_answer,
    repair_messages,
    response_format,
    with_instruction,
)
from v60k.backends.llm.cost import Usage, UsageMeter
from v60k.backends.llm.retry import RetryPolicy, Sleep, classify, with_retries


@dataclass
class ChatRequest:
    """One request of ``chat_many``."""

    messages: list[dict[str, Any]]
    schema: type[BaseModel] | None = None
    params: dict[str, Any] = field(default_factory=dict)


# a 1x1 white PNG: the vision probe's image
_PROBE_IMAGE = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4//8/AAX+Av4N"
                "70a4AAAAAElFTkSuQmCC")


class _FormRejected(Exception):
    """The server refused a response_format form while the client was probing for one."""

    def __init__(self, attempts: int):
        super().__init__("response_format form rejected")
        self.attempts = attempts


class LLMClient:
    """Chat completions against ``settings.base_url``.

    ``chat`` returns a ``ChatResult`` or raises ``LLMError`` (with the reason); ``chat_many`` runs many requests
    with at most ``settings.concurrency`` in flight and returns results and errors in request order. Every HTTP
    request and the tokens the server reported go into ``meter``; cache hits count as ``cached``.
    """

    def __init__(self, settings: LLMSettings, cache_path: str | Path | None = None, *, sleep: Sleep | None = None,
                 seed: int | None = None):
        self.settings = settings
        self.cache = ResponseCache(cache_path) if cache_path is not None and settings.cache else None
        self.meter = UsageMeter(settings.price_input_per_1m, settings.price_output_per_1m)
        self.policy = RetryPolicy(settings.max_retries, settings.retry_base_s, settings.retry_max_s,
                                  random.Random(seed))
        self.batch: Any = None  # a ``batch.BatchSession`` while the generate stage runs in batch mode
        self._sleep = sleep if sleep is not None else asyncio.sleep
        self._api_key = settings.api_key()
        self._schema_form: str | None = None if settings.schema_mode == "auto" else settings.schema_mode
        if self._schema_form is None and self.cache is not None:  # learnt by an earlier run
            self._schema_form = self.cache.capability(self.endpoint, "schema_form")
        self._vision: bool | None = None if self.cache is None else self.cache.capability(self.endpoint, "vision")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._openai: Any = None
        self._slots: asyncio.Semaphore | None = None
        self._form_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:  # never the key
        return f"LLMClient(base_url={self.settings.base_url!r}, model={self.settings.model!r})"

    @property
    def endpoint(self) -> str:
        """What the capabilities learnt of a server are kept under: its base URL and the model."""
        return f"{self.settings.base_url.rstrip('/')} {self.settings.model}"

    @property
    def vision(self) -> bool | None:
        """Whether the endpoint takes image parts: None until ``supports_vision`` has asked (or an earlier run)."""
        return self._vision

    @property
    def schema_form(self) -> str | None:
        """The structured-output form in use (None until ``auto`` has found the one the server accepts)."""
        return self._schema_form

    @property
    def openai(self) -> Any:
        """The ``AsyncOpenAI`` client of the running event loop (one per loop: ``asyncio.run`` per video)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            from openai import AsyncOpenAI

            self._openai = AsyncOpenAI(api_key=self._api_key.get_secret_value(), base_url=self.settings.base_url,
                                       timeout=self.settings.timeout_s, max_retries=0)
            self._slots = asyncio.Semaphore(self.settings.concurrency)
            self._form_lock = asyncio.Lock()
            self._loop = loop
        return self._openai

    async def aclose(self) -> None:
        if self._openai is not None and self._loop is asyncio.get_running_loop():
            await self._openai.close()
        self._openai = self._loop = None

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    async def supports_vision(self) -> bool:
        """Whether the endpoint accepts image parts (False when ``settings.vision`` is off). Asked once per
        endpoint with a one-token request carrying a 1x1 image; the answer is kept in the cache file, so later
        runs send nothing. A server that refuses the image (HTTP 400/415/422/500/501, as llama.cpp's without a
        vision projector does) has no vision; 429s and timeouts are retried as usual."""
        if not self.settings.vision:
            return False
        if self._vision is not None:
            return self._vision
        assert self.openai is not None and self._form_lock is not None
        async with self._form_lock:
            if self._vision is None:
                messages = [{"role": "user", "content": [
                    {"type": "text", "text": "Reply with one word: what colour is this image?"},
                    {"type": "image_url", "image_url": {"url": _PROBE_IMAGE, "detail": "low"}}]}]
                try:
                    await self._send(self.openai, self.settings.model, messages, {"max_tokens": 1}, None, None,
                                     probing=True)
                    self._vision = True
                except _FormRejected:
                    self._vision = False
                if self.cache is not None:
                    self.cache.set_capability(self.endpoint, "vision", self._vision)
        return self._vision

    # ---- requests ---------------------------------------------------------------------------------------
    def prepare(self, messages: list[dict[str, Any]], schema: type[BaseModel] | None = None,
                **params: Any) -> tuple[str, str, dict[str, Any]]:
        """(cache key, model, completion parameters) of a request, defaults filled in."""
        model = params.pop("model", None) or self.settings.model
        merged = {"temperature": self.settings.temperature, "max_tokens": self.settings.max_tokens, **params}
        key = request_key(model, messages, merged, json_schema_of(schema) if schema is not None else None)
        return key, model, merged

    async def chat(self, messages: list[dict[str, Any]], schema: type[BaseModel] | None = None,
                   **params: Any) -> ChatResult:
        """One answer (validated against ``schema`` when given); ``params`` override model, temperature, ..."""
        key, model, merged = self.prepare(messages, schema, **params)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            try:  # a validator may have changed without the JSON schema: then the answer is asked for again
                parsed = parse_answer(hit["content"], schema) if schema is not None else None
            except InvalidAnswer:
                hit = None
            if hit is not None:
                self.meter.add(Usage(), cached=1)
                return ChatResult(hit["content"], parsed, Usage(**hit.get("usage", {})), True,
                                  hit.get("finish_reason"), hit.get("model"), 0)
        if self.batch is not None:
            result = self.batch.resolve(key, model, messages, merged, schema)
        else:
            result = await self._ask(model, messages, merged, schema)
        if self.cache is not None:
            self.cache.put(key, model, {"content": result.content, "finish_reason": result.finish_reason,
                                        "model": result.model, "usage": vars(result.usage)})
        return result

    async def chat_many(self, requests: Sequence[ChatRequest]) -> list[ChatResult | LLMError]:
        """All requests concurrently (at most ``settings.concurrency`` in flight); an LLMError in place of an
        answer that failed. Other exceptions (a batch deferral, a bug) propagate."""

        async def one(request: ChatRequest) -> ChatResult | LLMError:
            try:
                return await self.chat(request.messages, request.schema, **request.params)
            except LLMError as exc:
                return exc

        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def _ask(self, model: str, messages: list[dict[str, Any]], params: dict[str, Any],
                   schema: type[BaseModel] | None) -> ChatResult:
        response, requests = await self._complete(model, messages, params, schema)
        content, finish_reason, usage = self.check(response, schema is not None)
        if schema is None:
            return ChatResult(content, None, usage, False, finish_reason, getattr(response, "model", None), requests)
        try:
            parsed = parse_answer(content, schema)
        except InvalidAnswer as problem:  # one repair request
            repaired, more = await self._complete(model, repair_messages(messages, content, problem, schema),
                                                  params, schema)
            requests += more
            content, finish_reason, repair_usage = self.check(repaired, True, usage)
            usage = usage + repair_usage
            try:
                parsed = parse_answer(content, schema)
            except InvalidAnswer as again:
                raise LLMError(again.kind, f"{again.detail} (after one repair request)", usage=usage) from None
            response = repaired
        return ChatResult(content, parsed, usage, False, finish_reason, getattr(response, "model", None), requests)

    def check(self, response: Any, structured: bool, earlier: Usage | None = None) -> tuple[str | None, str | None, Usage]:
        """(content, finish_reason, usage) of a completion, or ``LLMError`` for an answer that is not one."""
        usage = Usage.of(getattr(response, "usage", None))
        total = usage + (earlier or Usage())
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise LLMError("empty_choices", "the server answered with no choices", usage=total)
        choice = choices[0]
        message = choice.message
        refusal = getattr(message, "refusal", None)
        if refusal or choice.finish_reason == "content_filter":
            raise LLMError("refusal", str(refusal or "content filtered"), usage=total)
        if choice.finish_reason == "length" and structured:
            raise LLMError("length", f"the answer was cut at max_tokens={self.settings.max_tokens}", usage=total)
        return message.content, choice.finish_reason, usage

    async def _complete(self, model: str, messages: list[dict[str, Any]], params: dict[str, Any],
                        schema: type[BaseModel] | None) -> tuple[Any, int]:
        """The raw completion (retried), and the number of HTTP requests it took; the form probe for ``auto``."""
        client = self.openai
        if schema is not None and self._schema_form is None:
            assert self._form_lock is not None
            async with self._form_lock:
                if self._schema_form is None:
                    return await self._probe(client, model, messages, params, schema)
        return await self._send(client, model, messages, params, schema, self._schema_form)

    async def _probe(self, client: Any, model: str, messages: list[dict[str, Any]], params: dict[str, Any],
                     schema: type[BaseModel]) -> tuple[Any, int]:
        """Try the schema forms in order until the server accepts one, and remember it. A status with which
        servers refuse an unknown form (400, 422, 500, ...) moves on to the next form; 429s and timeouts are
        retried as usual."""
        sent = 0
        for form in FORMS[:-1]:
            try:
                response, n = await self._send(client, model, messages, params, schema, form, probing=True)
            except _FormRejected as rejected:
                sent += rejected.attempts
                continue
            self._remember_form(form)
            return response, sent + n
        response, n = await self._send(client, model, messages, params, schema, FORMS[-1])
        self._remember_form(FORMS[-1])
        return response, sent + n

    def _remember_form(self, form: str) -> None:
        self._schema_form = form
        if self.cache is not None:
            self.cache.set_capability(self.endpoint, "schema_form", form)

    async def _send(self, client: Any, model: str, messages: list[dict[str, Any]], params: dict[str, Any],
                    schema: type[BaseModel] | None, form: str | None, probing: bool = False) -> tuple[Any, int]:
        body: dict[str, Any] = {"model": model, "messages": messages, **params}
        if schema is not None and form is not None:
            body["response_format"] = response_format(form, schema)
            if form == "json_mode":
                body["messages"] = with_instruction(messages, schema)
        attempts = 0

        def count() -> None:
            nonlocal attempts
            attempts += 1
            self.meter.add(Usage(), requests=1)

        async def call() -> Any:
            assert self._slots is not None
            async with self._slots:
                response = await client.chat.completions.create(**body)
            self.meter.add(Usage.of(getattr(response, "usage", None)))
            return response

        def rejected(exc: Exception) -> bool:
            return probing and getattr(exc, "status_code", None) in FORM_REJECTED_STATUSES

        try:
            return await with_retries(call, self.policy, self._sleep, on_attempt=count, give_up=rejected), attempts
        except Exception as exc:
            if rejected(exc):
                raise _FormRejected(attempts) from exc
            raise self._error(exc, attempts) from None

    @staticmethod
    def _error(exc: Exception, attempts: int = 1) -> LLMError:
        kind, retryable, _ = classify(exc)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        tail = f" (after {attempts} attempts)" if attempts > 1 else ""
        return LLMError(kind, f"{message}{tail}", transient=retryable or kind == "connection",
                        fatal=kind in ("auth", "not_found"))
