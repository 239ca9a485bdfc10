"""The tests' own OpenAI-compatible HTTP server on 127.0.0.1 (stdlib only): chat completions, files, batches, models.

    with OpenAIServer(handler=lambda body: '{"answer": 42}') as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="test")
        server.faults.append(Fault("rate_limit", retry_after=1))   # the next chat request gets a 429

It answers ``POST /v1/chat/completions`` with ``handler(body)`` — a ``Reply``, a string (the content) or a dict
(dumped as JSON content); the default handler gives a minimal instance of the request's JSON schema. Faults,
taken in order from ``faults`` (the first whose ``match`` accepts the request), replace the answer:

    rate_limit (429 + Retry-After), server_error (500), slow (answers after ``delay_s``), invalid_json,
    schema_violation, length (cut JSON, finish_reason=length), refusal, empty_choices

``vision=False`` makes it a text-only server: a request with an image part gets HTTP 500 (as llama.cpp's server
without a vision projector answers). ``reject_forms`` makes it refuse response_format forms the way llama-cpp-python's server does (HTTP 500 for
``json_schema``). It counts every request (``chat_requests``, ``requests``), the tokens it reported
(``reported``), and the most chat requests in flight at once (``max_in_flight``). Files and batches are kept in
memory; a batch completes at creation, or when ``complete_batches()`` is called if ``hold_batches`` is set.
Usable as a context manager and as the ``openai_server`` pytest fixture (import ``openai_server_fixture``).
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

FAULT_KINDS = ("rate_limit", "server_error", "slow", "invalid_json", "schema_violation", "length", "refusal",
               "empty_choices")


@dataclass
class Reply:
    """A scripted answer. Token counts default to a deterministic estimate (characters / 4)."""

    content: str | None = None
    finish_reason: str = "stop"
    refusal: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    delay_s: float = 0.0


@dataclass
class Fault:
    """One injected fault, consumed by the first chat request (or batch line) that ``match`` accepts."""

    kind: str
    retry_after: float | None = None  # rate_limit: the Retry-After header (seconds)
    delay_s: float = 0.0  # slow: how long before answering
    match: Callable[[dict[str, Any]], bool] | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; kinds are {FAULT_KINDS}")


Handler = Callable[[dict[str, Any]], "Reply | str | dict[str, Any]"]


def request_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a chat request asks for, whatever response_format form carries it."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema")
    if fmt.get("type") == "json_object" and fmt.get("schema") is not None:
        return fmt["schema"]
    if fmt.get("type") == "json_object":  # JSON mode: the schema the client put in the system message
        for message in body.get("messages", []):
            text = message.get("content") if isinstance(message.get("content"), str) else ""
            marker = text.rfind("follows this JSON schema:\n")
            if marker >= 0:
                try:
                    return json.loads(text[marker + len("follows this JSON schema:\n"):])
                except json.JSONDecodeError:
                    return None
    return None


def has_images(body: dict[str, Any]) -> bool:
    """Whether a chat request carries an image part."""
    return any(isinstance(m.get("content"), list) and any(p.get("type") == "image_url" for p in m["content"])
               for m in body.get("messages", []))


def example_of(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """A minimal instance of a JSON schema (objects with every property, one-item arrays, "text" strings)."""
    root = root or schema
    if "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return example_of(node, root)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return example_of(schema[key][0], root)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        return {name: example_of(sub, root) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example_of(schema.get("items") or {}, root) for _ in range(max(1, schema.get("minItems", 1)))]
    return {"string": "text", "integer": 1, "number": 1.0, "boolean": True, "null": None}.get(kind, "text")


def default_handler(body: dict[str, Any]) -> Reply | str | dict[str, Any]:
    schema = request_schema(body)
    if schema is not None:
        return example_of(schema)
    last = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), {})
    text = last.get("content") if isinstance(last.get("content"), str) else "(parts)"
    return f"answer to: {str(text)[:60]}"


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


@dataclass
class _Stats:
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request
    chat_bodies: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


class OpenAIServer:
    """See the module docstring. ``base_url`` ends with ``/v1`` (what the openai client wants)."""

    def __init__(self, handler: Handler | None = None, *, latency_s: float = 0.0, model: str = "test-model",
                 reject_forms: tuple[str, ...] = (), hold_batches: bool = False, api_key: str | None = None,
                 vision: bool = True):
        self.handler = handler or default_handler
        self.latency_s = latency_s
        self.model = model
        self.reject_forms = set(reject_forms)
        self.hold_batches = hold_batches
        self.api_key = api_key  # when set, requests without "Bearer <api_key>" get 401
        self.vision = vision
        self.faults: list[Fault] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.authorizations: list[str] = []  # the Authorization headers received
        self._stats = _Stats()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> OpenAIServer:
        server = self

        class _Handler(_RequestHandler):
            owner = server

        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="openai-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # ---- what it saw -----------------------------------------------------------------------------------
    @property
    def chat_requests(self) -> int:
        """Chat completion requests received (over HTTP; batch lines not included)."""
        with self._lock:
            return sum(1 for method, path in self._stats.requests if path.endswith("/chat/completions"))

    @property
    def chat_bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._stats.chat_bodies)

    @property
    def requests(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._stats.requests)

    @property
    def reported(self) -> dict[str, int]:
        """Tokens reported in every answer it gave (HTTP and batch output), summed."""
        with self._lock:
            return {"prompt_tokens": self._stats.prompt_tokens, "completion_tokens": self._stats.completion_tokens}

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._stats.max_in_flight

    def reset_counts(self) -> None:
        with self._lock:
            self._stats = _Stats()

    # ---- answers ---------------------------------------------------------------------------------------
    def _take_fault(self, body: dict[str, Any]) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self.faults):
                if fault.match is None or fault.match(body):
                    return self.faults.pop(i)
        return None

    def answer(self, body: dict[str, Any], *, sleep: bool = True) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, JSON payload, extra headers) for one chat completion request."""
        fmt = body.get("response_format") or {}
        form = {"json_schema": "json_schema", "json_object": "json_object_schema" if "schema" in fmt else "json_mode"
                }.get(fmt.get("type"), fmt.get("type"))
        if form in self.reject_forms:
            return 500, _error(f"response_format {form!r} is not supported", "internal_server_error"), {}
        if not self.vision and has_images(body):
            return 500, _error("image input is not supported by this model", "internal_server_error"), {}
        fault = self._take_fault(body)
        if fault is not None and fault.kind == "rate_limit":
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            return 429, _error("Rate limit reached", "rate_limit_exceeded"), headers
        if fault is not None and fault.kind == "server_error":
            return 500, _error("The server had an error", "server_error"), {}
        if sleep and self.latency_s:
            time.sleep(self.latency_s)
        if fault is not None and fault.kind == "slow" and sleep:
            time.sleep(fault.delay_s)
        reply = self._reply(body, fault)
        if sleep and reply.delay_s:
            time.sleep(reply.delay_s)
        prompt = reply.prompt_tokens if reply.prompt_tokens is not None else estimate_tokens(
            json.dumps(body.get("messages", []), ensure_ascii=False))
        completion = reply.completion_tokens if reply.completion_tokens is not None else estimate_tokens(
            reply.content or reply.refusal or "")
        choices = [] if fault is not None and fault.kind == "empty_choices" else [{
            "index": 0, "logprobs": None, "finish_reason": reply.finish_reason,
            "message": {"role": "assistant", "content": reply.content, "refusal": reply.refusal}}]
        with self._lock:
            self._stats.prompt_tokens += prompt
            self._stats.completion_tokens += completion
        return 200, {"id": f"chatcmpl-{next(self._ids)}", "object": "chat.completion", "created": int(time.time()),
                     "model": body.get("model") or self.model, "choices": choices,
                     "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                               "total_tokens": prompt + completion}}, {}

    def _reply(self, body: dict[str, Any], fault: Fault | None) -> Reply:
        kind = fault.kind if fault is not None else None
        if kind == "invalid_json":
            return Reply('{"text": "an answer that stops in the middle')
        if kind == "schema_violation":
            return Reply('{"unexpected": "a field no schema asked for"}')
        if kind == "refusal":
            return Reply(None, refusal="I can't help with that request.")
        raw = self.handler(body)
        reply = raw if isinstance(raw, Reply) else Reply(raw if isinstance(raw, str) else json.dumps(raw))
        if kind == "length":
            text = reply.content or ""
            return Reply(text[: max(1, len(text) // 2)], finish_reason="length")
        return reply

    # ---- files and batches -----------------------------------------------------------------------------
    def add_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-{next(self._ids)}"
        record = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                  "filename": filename, "purpose": purpose, "status": "processed"}
        with self._lock:
            self.files[file_id] = {**record, "content": content}
        return record

    def create_batch(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        file_id = request.get("input_file_id")
        if file_id not in self.files:
            return 404, _error(f"no file {file_id!r}", "not_found")
        batch = {"id": f"batch_{next(self._ids)}", "object": "batch", "endpoint": request.get("endpoint"),
                 "completion_window": request.get("completion_window", "24h"), "input_file_id": file_id,
                 "status": "in_progress", "created_at": int(time.time()), "in_progress_at": int(time.time()),
                 "output_file_id": None, "error_file_id": None, "metadata": request.get("metadata"),
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}, "errors": None}
        with self._lock:
            self.batches[batch["id"]] = batch
        if not self.hold_batches:
            self._run_batch(batch)
        return 200, batch

    def complete_batches(self) -> int:
        """Run every batch that is still in progress (with ``hold_batches``); how many."""
        with self._lock:
            waiting = [b for b in self.batches.values() if b["status"] == "in_progress"]
        for batch in waiting:
            self._run_batch(batch)
        return len(waiting)

    def _run_batch(self, batch: dict[str, Any]) -> None:
        lines = self.files[batch["input_file_id"]]["content"].decode("utf-8").splitlines()
        output, errors = [], []
        for line in filter(str.strip, lines):
            item = json.loads(line)
            status, payload, _ = self.answer(item["body"], sleep=False)
            row = {"id": f"batch_req_{next(self._ids)}", "custom_id": item["custom_id"],
                   "response": {"status_code": status, "request_id": f"req_{next(self._ids)}", "body": payload},
                   "error": None}
            if status == 200:
                output.append(row)
            else:
                row["error"] = {"code": payload["error"]["code"], "message": payload["error"]["message"]}
                errors.append(row)
        dump = lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()  # noqa: E731
        batch["output_file_id"] = self.add_file(dump(output), "output.jsonl", "batch_output")["id"] if output else None
        batch["error_file_id"] = self.add_file(dump(errors), "errors.jsonl", "batch_output")["id"] if errors else None
        batch["request_counts"] = {"total": len(output) + len(errors), "completed": len(output),
                                   "failed": len(errors)}
        batch["status"], batch["completed_at"] = "completed", int(time.time())


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "code": code, "param": None}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many clients connecting at once (the default 5 drops connections)


class _RequestHandler(BaseHTTPRequestHandler):
    owner: OpenAIServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: without it, 40 ms delayed-ACK stalls

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            self.close_connection = True

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _route(self, method: str) -> None:
        owner = self.owner
        path = self.path.split("?")[0].rstrip("/")
        with owner._lock:
            owner._stats.requests.append((method, path))
        owner.authorizations.append(self.headers.get("Authorization", ""))
        body = self._body() if method == "POST" else b""
        if owner.api_key is not None and self.headers.get("Authorization") != f"Bearer {owner.api_key}":
            return self._send(401, _error("Incorrect API key provided", "invalid_api_key"))
        if method == "GET" and path == "/v1/models":
            return self._send(200, {"object": "list", "data": [
                {"id": owner.model, "object": "model", "created": 0, "owned_by": "tests"}]})
        if method == "POST" and path == "/v1/chat/completions":
            return self._chat(json.loads(body or b"{}"))
        if method == "POST" and path == "/v1/files":
            fields = _multipart(self.headers.get("Content-Type", ""), body)
            content, filename = fields.get("file", (b"", "upload"))
            purpose = fields.get("purpose", (b"batch", ""))[0].decode()
            return self._send(200, owner.add_file(content, filename or "upload", purpose))
        if method == "GET" and path.startswith("/v1/files/"):
            parts = path.split("/")
            record = owner.files.get(parts[3])
            if record is None:
                return self._send(404, _error(f"no file {parts[3]!r}", "not_found"))
            if len(parts) > 4 and parts[4] == "content":
                return self._send(200, None, raw=record["content"])
            return self._send(200, {k: v for k, v in record.items() if k != "content"})
        if method == "POST" and path == "/v1/batches":
            return self._send(*owner.create_batch(json.loads(body or b"{}")))
        if method == "GET" and path.startswith("/v1/batches/"):
            batch = owner.batches.get(path.split("/")[3])
            return self._send(200, batch) if batch else self._send(404, _error("no such batch", "not_found"))
        return self._send(404, _error(f"no route {method} {path}", "not_found"))

    def _chat(self, body: dict[str, Any]) -> None:
        owner = self.owner
        with owner._lock:
            owner._stats.chat_bodies.append(body)
            owner._stats.in_flight += 1
            owner._stats.max_in_flight = max(owner._stats.max_in_flight, owner._stats.in_flight)
        try:
            status, payload, headers = owner.answer(body)
        finally:
            with owner._lock:
                owner._stats.in_flight -= 1
        self._send(status, payload, headers)

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[bytes, str | None]]:
    """Form fields of a multipart/form-data body: name → (bytes, filename)."""
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, tuple[bytes, str | None]] = {}
    for part in message.iter_parts() if message.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = (part.get_payload(decode=True) or b"", part.get_filename())
    return fields


@pytest.fixture(name="openai_server")
def openai_server_fixture() -> Iterator[OpenAIServer]:
    """``openai_server``: a started server with the default handler; tests set ``handler``, ``faults``,
    ``latency_s`` on it. Import ``openai_server_fixture`` into a test module to use it."""
    with OpenAIServer() as server:
        yield server
