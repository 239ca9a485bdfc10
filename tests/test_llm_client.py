"""The LLM client against the tests' own OpenAI-compatible server (real HTTP, the real openai client): structured
output, every injected fault, retries honouring Retry-After, the response cache, bounded concurrency, schema-form
fallback, batch mode and the API key's confinement."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from openai_server import Fault, OpenAIServer, Reply, openai_server_fixture  # noqa: F401  (fixture)
from pydantic import BaseModel, field_validator

from v60k.backends.llm import LLMClient, LLMError, LLMSettings
from v60k.backends.llm.batch import BatchPending, BatchSession
from v60k.backends.llm.cost import Usage, cost_usd
from v60k.backends.llm.retry import RetryPolicy, parse_retry_after


class Verdict(BaseModel):
    answer: str
    score: int

    @field_validator("score")
    @classmethod
    def in_range(cls, value: int) -> int:
        if not 1 <= value <= 10:
            raise ValueError("score must be 1-10")
        return value


MESSAGES = [{"role": "system", "content": "Judge."}, {"role": "user", "content": "Is it good?"}]
GOOD = {"answer": "yes", "score": 7}


class Sleeps(list):
    """Records the client's backoff waits instead of sleeping (tests stay timing-free)."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_client(server: OpenAIServer, tmp_path: Path, sleeps: Sleeps | None = None, **overrides) -> LLMClient:
    values = {"base_url": server.base_url, "model": "test-model", "schema_mode": "json_schema", "timeout_s": 5,
              "max_retries": 3, "price_input_per_1m": 1.0, "price_output_per_1m": 2.0, **overrides}
    return LLMClient(LLMSettings(**values), cache_path=tmp_path / "llm-cache.sqlite",
                     sleep=Sleeps() if sleeps is None else sleeps, seed=0)


def ask(client: LLMClient, messages=MESSAGES, schema=Verdict, **params):
    return asyncio.run(client.chat(messages, schema, **params))


def assert_accounts_match(client: LLMClient, server: OpenAIServer) -> None:
    totals = client.meter.snapshot()
    assert totals.requests == server.chat_requests
    assert (totals.prompt_tokens, totals.completion_tokens) == tuple(server.reported.values())


def test_structured_answer_is_validated_and_its_tokens_are_the_servers(openai_server, tmp_path):
    openai_server.handler = lambda body: Reply(json.dumps(GOOD), prompt_tokens=120, completion_tokens=30)
    client = make_client(openai_server, tmp_path)
    result = ask(client)
    assert result.parsed == Verdict(**GOOD) and not result.cached and result.finish_reason == "stop"
    assert result.usage == Usage(120, 30) and result.model == "test-model" and result.requests == 1
    body = openai_server.chat_bodies[0]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["answer", "score"]
    assert client.meter.snapshot().cost_usd == pytest.approx(cost_usd(Usage(120, 30), 1.0, 2.0))
    assert_accounts_match(client, openai_server)


@pytest.mark.parametrize(("fault", "requests"), [
    (Fault("rate_limit", retry_after=3), 2),
    (Fault("server_error"), 2),
    (Fault("slow", delay_s=3.0), 2),
    (Fault("invalid_json"), 2),
    (Fault("schema_violation"), 2),
])
def test_a_recoverable_fault_ends_in_a_stored_answer(openai_server, tmp_path, fault, requests):
    openai_server.handler = lambda body: GOOD
    openai_server.faults.append(fault)
    sleeps = Sleeps()
    client = make_client(openai_server, tmp_path, sleeps, timeout_s=1.0)
    result = ask(client)
    assert result.parsed == Verdict(**GOOD) and result.requests == requests
    assert openai_server.chat_requests == requests and not openai_server.faults
    if fault.kind == "rate_limit":
        assert sleeps == [3.0]  # the server's Retry-After, not the backoff
    if fault.kind in ("invalid_json", "schema_violation"):  # the repair request shows the invalid answer
        repair = openai_server.chat_bodies[-1]["messages"]
        assert repair[-2]["role"] == "assistant" and fault.kind in repair[-1]["content"]
        assert sleeps == []
    assert_accounts_match(client, openai_server)
    assert ask(client).cached  # stored


@pytest.mark.parametrize(("faults", "kind", "transient"), [
    ([Fault("invalid_json"), Fault("invalid_json")], "invalid_json", False),
    ([Fault("schema_violation"), Fault("schema_violation")], "schema_violation", False),
    ([Fault("length")], "length", False),
    ([Fault("refusal")], "refusal", False),
    ([Fault("empty_choices")], "empty_choices", False),
    ([Fault("rate_limit", retry_after=1)] * 4, "rate_limited", True),
    ([Fault("server_error")] * 4, "server_error", True),
    ([Fault("rate_limit", retry_after=3600)], "rate_limited", True),  # longer than retry_max_s: not waited for
])
def test_an_unrecoverable_fault_is_an_error_with_its_reason(openai_server, tmp_path, faults, kind, transient):
    openai_server.handler = lambda body: GOOD
    openai_server.faults.extend(faults)
    sleeps = Sleeps()
    client = make_client(openai_server, tmp_path, sleeps)
    with pytest.raises(LLMError) as caught:
        ask(client)
    assert caught.value.kind == kind and caught.value.transient is transient and caught.value.reason
    if kind == "rate_limited" and len(faults) > 1:
        assert sleeps == [1.0, 1.0, 1.0] and "after 4 attempts" in caught.value.reason
    elif kind == "rate_limited":
        assert sleeps == [] and openai_server.chat_requests == 1
    assert_accounts_match(client, openai_server)
    assert len(client.cache) == 0  # nothing invalid is cached: the next run asks again
    openai_server.faults.clear()
    assert ask(client).parsed == Verdict(**GOOD)


def test_backoff_is_exponential_with_full_jitter():
    policy = RetryPolicy(max_retries=5, base_s=1.0, max_s=8.0)
    for attempt in range(6):
        waits = [policy.delay(attempt) for _ in range(200)]
        assert min(waits) >= 0 and max(waits) <= min(8.0, 2**attempt)
        assert max(waits) > 0.5 * min(8.0, 2**attempt)
    assert policy.delay(0, retry_after_s=12.0) == 12.0
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({}) is None


def test_a_text_answer_cut_at_max_tokens_is_kept_with_its_finish_reason(openai_server, tmp_path):
    openai_server.handler = lambda body: "a long answer in plain text"
    openai_server.faults.append(Fault("length"))
    result = ask(make_client(openai_server, tmp_path), schema=None)
    assert result.finish_reason == "length" and result.content == "a long answer "[:13]


def test_cache_re_run_repeats_zero_requests(openai_server, tmp_path):
    openai_server.handler = lambda body: GOOD
    client = make_client(openai_server, tmp_path)
    first = ask(client)
    assert openai_server.chat_requests == 1
    again = LLMClient(client.settings, cache_path=tmp_path / "llm-cache.sqlite")  # a new run
    second = ask(again)
    assert second.cached and second.parsed == first.parsed and second.requests == 0
    assert openai_server.chat_requests == 1 and again.meter.snapshot().cached == 1
    ask(again, temperature=0.1)  # other parameters, other model, other messages: new requests
    ask(again, model="other-model")
    ask(again, messages=[*MESSAGES[:1], {"role": "user", "content": "And now?"}])
    assert openai_server.chat_requests == 4
    assert LLMClient(client.settings.model_copy(update={"cache": False})).cache is None


def test_chat_many_keeps_at_most_concurrency_requests_in_flight(openai_server, tmp_path):
    from v60k.backends.llm.client import ChatRequest

    openai_server.handler = lambda body: GOOD
    openai_server.latency_s = 0.15
    openai_server.faults.append(Fault("refusal", match=lambda body: "question 5" in json.dumps(body)))
    client = make_client(openai_server, tmp_path, concurrency=3)
    requests = [ChatRequest([{"role": "user", "content": f"question {i}"}], Verdict) for i in range(12)]
    results = asyncio.run(client.chat_many(requests))
    assert 2 <= openai_server.max_in_flight <= 3
    assert [isinstance(r, LLMError) for r in results] == [i == 5 for i in range(12)]
    assert results[5].kind == "refusal" and "can't help" in results[5].reason
    assert_accounts_match(client, openai_server)


def test_auto_finds_the_form_a_llama_cpp_like_server_accepts(tmp_path):
    with OpenAIServer(lambda body: GOOD, reject_forms=("json_schema",)) as server:
        client = make_client(server, tmp_path, schema_mode="auto")
        assert ask(client).parsed == Verdict(**GOOD)
        assert client.schema_form == "json_object_schema"
        ask(client, messages=[{"role": "user", "content": "second"}])
        forms = [b["response_format"]["type"] for b in server.chat_bodies]
        assert forms == ["json_schema", "json_object", "json_object"]  # probed once, then remembered
        assert server.chat_bodies[1]["response_format"]["schema"]["properties"]["score"]["type"] == "integer"
        assert_accounts_match(client, server)
    with OpenAIServer(lambda body: GOOD, reject_forms=("json_schema", "json_object_schema")) as server:
        client = make_client(server, tmp_path / "b", schema_mode="auto")
        assert ask(client).parsed == Verdict(**GOOD) and client.schema_form == "json_mode"
        last = server.chat_bodies[-1]
        assert last["response_format"] == {"type": "json_object"}
        assert "JSON schema" in last["messages"][0]["content"] and '"score"' in last["messages"][0]["content"]


def test_what_is_learnt_of_an_endpoint_is_kept_in_the_cache_file_and_not_probed_again(tmp_path):
    with OpenAIServer(lambda body: GOOD, reject_forms=("json_schema",), vision=False) as server:
        client = make_client(server, tmp_path, schema_mode="auto", vision=True)
        assert ask(client).parsed == Verdict(**GOOD) and asyncio.run(client.supports_vision()) is False
        assert server.chat_requests == 3 and client.vision is False  # two forms tried, one image probe
        client.close()
        later = make_client(server, tmp_path, schema_mode="auto", vision=True)  # a new run
        assert later.schema_form == "json_object_schema" and later.vision is False
        assert asyncio.run(later.supports_vision()) is False
        ask(later, messages=[{"role": "user", "content": "a new question"}])
        assert server.chat_requests == 4 and server.chat_bodies[-1]["response_format"]["type"] == "json_object"
        other = make_client(server, tmp_path, schema_mode="auto", vision=True, model="another-model")
        assert other.schema_form is None and other.vision is None  # kept per endpoint and model
    with OpenAIServer(lambda body: "white") as server:
        client = make_client(server, tmp_path / "v", vision=True)
        assert asyncio.run(client.supports_vision()) is True and server.chat_requests == 1
        assert make_client(server, tmp_path / "v", vision=False).vision is True  # known, though not asked for
        assert asyncio.run(make_client(server, tmp_path / "v", vision=False).supports_vision()) is False


def test_the_api_key_is_sent_but_never_written_or_shown(tmp_path, monkeypatch):
    secret = "sk-test-4f1e9c0ddeadbeef"
    monkeypatch.setenv("V60K_TEST_KEY", secret)
    with OpenAIServer(lambda body: GOOD, api_key=secret) as server:
        client = make_client(server, tmp_path, api_key_env="V60K_TEST_KEY")
        assert ask(client).parsed == Verdict(**GOOD)
        assert server.authorizations == [f"Bearer {secret}"]
        shown = repr(client) + repr(client.settings) + json.dumps(client.settings.model_dump())
        assert secret not in shown
        assert all(secret.encode() not in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
        monkeypatch.setenv("V60K_TEST_KEY", "sk-wrong")
        with pytest.raises(LLMError) as caught:
            ask(make_client(server, tmp_path / "other", api_key_env="V60K_TEST_KEY"))
        assert caught.value.kind == "auth" and caught.value.fatal and not caught.value.transient


def test_batch_round_trip_matches_answers_by_custom_id_and_records_request_errors(tmp_path):
    answers = {"one": {"answer": "first", "score": 1}, "two": {"answer": "second", "score": 2},
               "three": {"answer": "third", "score": 3}}

    def handler(body):
        question = body["messages"][-1]["content"]
        return Reply(json.dumps(answers[question]), prompt_tokens=10 * len(question), completion_tokens=5)

    with OpenAIServer(handler, hold_batches=True) as server:
        server.faults.append(Fault("server_error", match=lambda body: body["messages"][-1]["content"] == "two"))
        client = make_client(server, tmp_path)

        sessions = []

        async def run_once() -> tuple[list, int]:
            session = BatchSession(client, tmp_path / "batches", "video-1")
            sessions.append(session)
            client.batch = session
            running = await session.collect()
            from v60k.backends.llm.client import ChatRequest

            results = await client.chat_many(
                [ChatRequest([{"role": "user", "content": q}], Verdict) for q in answers])
            await session.submit()
            return results, running

        results, _ = asyncio.run(run_once())
        assert all(isinstance(r, BatchPending) for r in results)
        assert server.requests[:2] == [("POST", "/v1/files"), ("POST", "/v1/batches")]
        lines = (tmp_path / "batches" / "video-1" / "requests-0.jsonl").read_text().splitlines()
        assert len(lines) == 3 and {json.loads(x)["url"] for x in lines} == {"/v1/chat/completions"}
        results, running = asyncio.run(run_once())  # a later run: still in progress, nothing resubmitted
        assert running == 1 and all(isinstance(r, BatchPending) for r in results)
        assert [p for m, p in server.requests if m == "POST"].count("/v1/batches") == 1
        server.complete_batches()
        results, running = asyncio.run(run_once())
        assert running == 0
        assert results[0].parsed.answer == "first" and results[2].parsed.answer == "third"
        assert isinstance(results[1], LLMError) and results[1].kind == "batch_error"
        assert "HTTP 500" in results[1].reason and "server had an error" in results[1].reason
        assert server.chat_requests == 0  # everything went through the batch
        assert client.meter.snapshot().requests == 0  # kept until the results are written
        sessions[-1].report_usage()
        totals = client.meter.snapshot()
        assert (totals.prompt_tokens, totals.completion_tokens) == tuple(server.reported.values()) == (80, 10)
        assert totals.requests == 3
        assert totals.cost_usd == pytest.approx(0.5 * cost_usd(Usage(80, 10), 1.0, 2.0))
        client.batch = None
        assert ask(client, messages=[{"role": "user", "content": "one"}]).cached  # collected answers are cached


def test_a_cached_answer_that_a_changed_validator_rejects_is_asked_for_again(openai_server, tmp_path):
    openai_server.handler = lambda body: {"answer": "yes", "score": 12}

    class Loose(BaseModel):  # the same JSON schema as ``Verdict`` (name included), without its validator
        answer: str
        score: int

    Loose.__name__ = "Verdict"
    client = make_client(openai_server, tmp_path)
    assert ask(client, schema=Loose).parsed.score == 12
    with pytest.raises(LLMError) as caught:  # the cache hit fails validation: asked again, and repaired once
        ask(client, schema=Verdict)
    assert caught.value.kind == "schema_violation" and "score must be 1-10" in caught.value.reason
    assert openai_server.chat_requests == 3


def test_json_mode_carries_the_schema_in_the_prompt_and_is_validated(openai_server, tmp_path):
    client = make_client(openai_server, tmp_path, schema_mode="json_mode")  # the default handler: a schema example
    result = ask(client)
    assert result.parsed == Verdict(answer="text", score=1)
    body = openai_server.chat_bodies[0]
    assert body["response_format"] == {"type": "json_object"} and body["messages"][1] == MESSAGES[1]
    assert body["messages"][0]["content"].startswith("Judge.\n\nAnswer with one JSON object only")
