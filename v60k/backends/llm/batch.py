"""Batch mode: requests that are not in the cache go into a JSONL file (one line per request, with a custom_id),
which is run by the OpenAI Batch API — or by vLLM's offline batch runner — and collected on a later run.

One ``BatchSession`` per scope (a video) keeps its state in ``<batches_dir>/<scope>/state.json``:

    requests-<n>.jsonl   what was submitted ({"custom_id", "method", "url", "body"} per line)
    output-<n>.jsonl     the answers ({"custom_id", "response": {"status_code", "body"}, "error"} per line)
    errors-<n>.jsonl     the per-request errors the Batch API reports separately
    state.json           the batches (id, status, custom_id → request key), collected answers and errors

While a batch runs, ``LLMClient.chat`` raises ``BatchPending`` for its requests; once collected, an answer is
validated like any other (no repair request in batch mode) and stored in the response cache, and a per-request
error becomes an ``LLMError`` of kind ``batch_error`` with the server's reason. The batch lines' usage is kept
in the state until ``report_usage()`` (the run that writes the results) adds it to the client's meter.

``api="offline"`` only writes ``requests-<n>.jsonl`` and waits for ``output-<n>.jsonl`` next to it, e.g. from

    python -m vllm.entrypoints.openai.run_batch -i requests-0.jsonl -o output-0.jsonl --model <model>
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from v60k.backends.llm import ChatResult, LLMError
from v60k.backends.llm.compat import InvalidAnswer, parse_answer, response_format, with_instruction
from v60k.backends.llm.cost import Usage
from v60k.core.workdir import read_json, write_bytes, write_json

ENDPOINT = "/v1/chat/completions"
FINAL_STATUSES = ("completed", "failed", "expired", "cancelled")


class BatchPending(LLMError):
    """The request's answer will come from a batch that is submitted or about to be."""

    def __init__(self, custom_id: str):
        super().__init__("batch_pending", f"{custom_id} waits for a batch", transient=True)
        self.custom_id = custom_id


class BatchSession:
    """The batches of one scope. ``client.batch = session`` routes the client's cache misses here."""

    def __init__(self, client: Any, directory: str | Path, scope: str, *,
                 api: Literal["openai", "offline"] = "openai", completion_window: str = "24h"):
        self.client = client
        self.dir = Path(directory) / scope
        self.scope = scope
        self.api = api
        self.completion_window = completion_window
        self.form = client.settings.schema_mode if client.settings.schema_mode != "auto" else "json_schema"
        self.state: dict[str, Any] = (read_json(self.state_path) if self.state_path.exists()
                                      else {"scope": scope, "batches": [], "results": {}, "errors": {}})
        self.queued: dict[str, dict[str, Any]] = {}  # custom_id → JSONL line, for the next submit()

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    def save(self) -> None:
        write_json(self.state_path, self.state)

    @property
    def waiting(self) -> dict[str, str]:
        """custom_id → request key of the requests in batches not yet collected."""
        return {cid: key for b in self.state["batches"] if not b.get("collected") for cid, key in b["requests"].items()}

    # ---- the client's side -----------------------------------------------------------------------------
    def resolve(self, key: str, model: str, messages: list[dict[str, Any]], params: dict[str, Any],
                schema: type[BaseModel] | None) -> ChatResult:
        """The collected answer for ``key``, its recorded error, or ``BatchPending`` (queued for submit())."""
        custom_id = f"{self.scope}-{key[:24]}"
        if key in self.state["errors"]:
            raise LLMError("batch_error", self.state["errors"][key])
        if key in self.state["results"]:
            return self._result(self.state["results"][key], schema)
        if custom_id not in self.waiting:
            body: dict[str, Any] = {"model": model, "messages": messages, **params}
            if schema is not None:
                body["response_format"] = response_format(self.form, schema)
                if self.form == "json_mode":
                    body["messages"] = with_instruction(messages, schema)
            self.queued[custom_id] = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body,
                                      "_key": key}
        raise BatchPending(custom_id)

    def _result(self, body: dict[str, Any], schema: type[BaseModel] | None) -> ChatResult:
        from openai.types.chat import ChatCompletion

        response = ChatCompletion.model_validate(body)
        content, finish_reason, usage = self.client.check(response, schema is not None)
        parsed = None
        if schema is not None:
            try:
                parsed = parse_answer(content, schema)
            except InvalidAnswer as problem:
                raise LLMError(problem.kind, f"{problem.detail} (batch answer)", usage=usage) from None
        return ChatResult(content, parsed, usage, False, finish_reason, response.model, 0)

    # ---- submit and collect ----------------------------------------------------------------------------
    async def submit(self) -> str | None:
        """Write the queued requests as one JSONL file and submit it; the batch id (None when nothing queued)."""
        if not self.queued:
            return None
        number = len(self.state["batches"])
        lines = [{k: v for k, v in line.items() if k != "_key"} for line in self.queued.values()]
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
        request_file = write_bytes(self.dir / f"requests-{number}.jsonl", data)
        record: dict[str, Any] = {"number": number, "requests": {c: q["_key"] for c, q in self.queued.items()},
                                  "request_file": request_file.name, "submitted_at": time.time(), "api": self.api,
                                  "status": "submitted", "collected": False}
        if self.api == "openai":
            client = self.client.openai
            uploaded = await client.files.create(file=(request_file.name, io.BytesIO(data)), purpose="batch")
            batch = await client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT,
                                                completion_window=self.completion_window,
                                                metadata={"v60k_scope": self.scope[:500]})
            record.update(input_file_id=uploaded.id, batch_id=batch.id, status=batch.status)
        self.state["batches"].append(record)
        self.queued = {}
        self.save()
        return record.get("batch_id") or request_file.name

    async def collect(self, wait_s: float = 0.0, poll_s: float = 10.0) -> int:
        """Poll the batches not yet collected (for up to ``wait_s``) and take in the finished ones' answers
        and errors; how many batches are still running."""
        deadline = time.monotonic() + wait_s
        while True:
            running = 0
            for record in self.state["batches"]:
                if not record.get("collected") and not await self._collect_one(record):
                    running += 1
            self.save()
            if not running or time.monotonic() >= deadline:
                return running
            await asyncio.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    async def _collect_one(self, record: dict[str, Any]) -> bool:
        output_path = self.dir / f"output-{record['number']}.jsonl"
        errors_path = self.dir / f"errors-{record['number']}.jsonl"
        if record["api"] == "openai":
            client = self.client.openai
            batch = await client.batches.retrieve(record["batch_id"])
            record["status"] = batch.status
            if batch.status not in FINAL_STATUSES:
                return False
            for file_id, path in ((batch.output_file_id, output_path), (batch.error_file_id, errors_path)):
                if file_id:
                    content = await client.files.content(file_id)
                    write_bytes(path, content.content)
            problem = f"batch {batch.status}"
            if batch.errors and batch.errors.data:
                problem += ": " + "; ".join(e.message or e.code or "" for e in batch.errors.data)
        else:
            if not output_path.exists():
                return False
            record["status"], problem = "completed", "no answer in the batch output"
        seen: set[str] = set()
        for path in (output_path, errors_path):
            if path.exists():
                seen |= self._take_lines(path, record["requests"])
        for custom_id, key in record["requests"].items():
            if custom_id not in seen:
                self.state["errors"][key] = f"{problem}; no answer for {custom_id}"
        record["collected"], record["collected_at"] = True, time.time()
        return True

    def _take_lines(self, path: Path, requests: dict[str, str]) -> set[str]:
        seen = set()
        factor = self.client.settings.batch_discount if self.api == "openai" else 1.0
        for raw in path.read_text(encoding="utf-8").splitlines():
            if not raw.strip():
                continue
            line = json.loads(raw)
            custom_id = line.get("custom_id")
            if custom_id not in requests:
                continue
            seen.add(custom_id)
            key = requests[custom_id]
            response = line.get("response") or {}
            body = response.get("body") or {}
            if line.get("error") or response.get("status_code") != 200:
                error = line.get("error") or body.get("error") or {}
                self.state["errors"][key] = (f"HTTP {response.get('status_code')}: "
                                             f"{error.get('message') or error.get('code') or 'request failed'}")
                self._unreported(Usage(), factor)
                continue
            self.state["results"][key] = body
            self._unreported(Usage.of(body.get("usage")), factor)
        return seen

    def _unreported(self, usage: Usage, factor: float) -> None:
        """Keep a collected line's usage until the run that writes the results reports it."""
        pending = self.state.setdefault("unreported", {})
        bucket = pending.setdefault(str(factor), {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0})
        bucket["requests"] += 1
        bucket["prompt_tokens"] += usage.prompt_tokens
        bucket["completion_tokens"] += usage.completion_tokens

    def report_usage(self) -> None:
        """Add the usage of every batch line collected since the last report to the client's meter (once: the
        run that finally writes the results reports what all its batches used, even those collected by
        earlier runs that ended waiting)."""
        for factor, bucket in (self.state.pop("unreported", None) or {}).items():
            self.client.meter.add(Usage(bucket["prompt_tokens"], bucket["completion_tokens"]),
                                  requests=bucket["requests"], price_factor=float(factor))
        self.save()
