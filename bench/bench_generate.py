"""LLM client throughput and the response cache, against the tests' OpenAI-compatible server.

- requests/s at concurrency 16 with a fixed 200 ms server latency, as a fraction of the ideal 16 / 0.2 s = 80 req/s
  (goal >= 0.9): the client's overhead and its concurrency bound;
- a re-run of a finished work dir (the generate stage on the same clips, a new client): requests sent (goal 0).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path

from bench.common import Row, scratch

TESTS = Path(__file__).resolve().parent.parent / "tests"
LATENCY_S = 0.2
CONCURRENCY = 16
REQUESTS = 320


def _server_module():
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    import openai_server

    return openai_server


def _answer(body: dict) -> str:
    """A valid answer for the generate stage's two schemas (summary or dialogue), else for any schema."""
    server = _server_module()
    schema = server.request_schema(body) or {}
    if "what_happens" in (schema.get("properties") or {}):
        return json.dumps({"what_happens": "They talk.", "characters": [
            {"name": "Ross", "does": "talks", "says": "hello", "feels": "calm"}]})
    if "turns" in (schema.get("properties") or {}):
        return json.dumps({"turns": [{"role": "user", "text": "What happened?"},
                                     {"role": "character", "text": "We talked."}]})
    return json.dumps(server.example_of(schema)) if schema else "ok"


def _throughput(base_url: str, root: Path) -> tuple[float, int, float]:
    from pydantic import BaseModel

    from v60k.backends.llm import LLMSettings
    from v60k.backends.llm.client import ChatRequest, LLMClient

    class Answer(BaseModel):
        text: str

    settings = LLMSettings(base_url=base_url, model="bench", concurrency=CONCURRENCY, schema_mode="json_schema",
                           cache=False)
    client = LLMClient(settings, cache_path=root / "unused.sqlite")
    requests = [ChatRequest([{"role": "user", "content": f"question {i}"}], Answer) for i in range(REQUESTS)]

    cpu_s = 0.0

    async def go() -> float:
        nonlocal cpu_s
        await client.chat(requests[0].messages, Answer)  # imports and connection set-up outside the timing
        start, cpu_start = time.perf_counter(), time.process_time()
        results = await client.chat_many(requests[1:])
        elapsed = time.perf_counter() - start
        cpu_s = time.process_time() - cpu_start
        failed = [r for r in results if not hasattr(r, "parsed")]
        assert not failed, failed[:3]
        await client.aclose()
        return elapsed

    elapsed = asyncio.run(go())
    return (REQUESTS - 1) / elapsed, client.meter.snapshot().requests, 1000 * cpu_s / (REQUESTS - 1)


def _rerun(server, root: Path) -> tuple[int, int, float]:
    """Generate over a work dir, then again with a new stage (a new run): requests of each, re-run seconds."""
    from v60k.core.stage import StageContext, Video
    from v60k.core.workdir import WorkDir, write_json
    from v60k.stages.generate import Generate, GenerateSettings

    workdir = WorkDir(root / "work").create()
    videos = []
    for v in range(4):
        video = Video(f"bench{v}", f"file:///bench{v}.mp4", workdir.video_dir(f"bench{v}"), characters=["Ross", "Monica"])
        video.dir.mkdir(parents=True, exist_ok=True)
        lines, clips = [], []
        for c in range(6):
            ids = []
            for n in range(6):
                line_id = f"L{c:02d}{n:02d}"
                t = c * 60 + n * 5.0
                lines.append({"line_id": line_id, "start_s": t, "end_s": t + 4, "text": f"line {n} of clip {c}",
                              "character": ("Ross", "Monica")[n % 2]})
                ids.append(line_id)
            clips.append({"clip_id": f"bench{v}-c{c:03d}", "index": c, "start_s": c * 60.0, "end_s": c * 60.0 + 60,
                          "scene_indices": [c], "line_ids": ids})
        write_json(video.paths.lines_json, {"cast": ["Ross", "Monica"], "lines": lines})
        write_json(video.paths.clips_json, {"clips": clips})
        videos.append(video)
    llm = {"base_url": server.base_url, "model": "bench", "concurrency": CONCURRENCY, "schema_mode": "json_schema"}

    def run_all() -> int:
        before = server.chat_requests
        stage = Generate(GenerateSettings(), StageContext(workdir, {"llm": llm}))
        stage.setup()
        for video in videos:
            stage.process(video)
        stage.teardown()
        return server.chat_requests - before

    first = run_all()
    start = time.perf_counter()
    second = run_all()
    return first, second, time.perf_counter() - start


def _serve(latency_s: float, conn) -> None:
    """The server in a process of its own (as a remote server would be): its CPU is not the client's."""
    with _server_module().OpenAIServer(_answer, latency_s=latency_s) as server:
        conn.send(server.base_url)
        conn.recv()  # until the bench is done
        conn.send({"chat_requests": server.chat_requests, "max_in_flight": server.max_in_flight})


def run() -> list[Row]:
    import multiprocessing

    server_module = _server_module()
    root = scratch("generate")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rows = []
    ours, theirs = multiprocessing.get_context("fork").Pipe()
    process = multiprocessing.get_context("fork").Process(target=_serve, args=(LATENCY_S, theirs), daemon=True)
    process.start()
    try:
        load_before = os.getloadavg()[0]
        rps, sent, cpu_ms = _throughput(ours.recv(), root)
        ours.send("done")
        seen = ours.recv()
    finally:
        process.join(timeout=10)
    assert seen["chat_requests"] == sent and seen["max_in_flight"] <= CONCURRENCY, (seen, sent)
    ideal = CONCURRENCY / LATENCY_S
    rows.append(Row("generate", f"requests/s at concurrency {CONCURRENCY}, {int(LATENCY_S * 1000)} ms latency",
                    round(rps, 1), "req/s"))
    rows.append(Row("generate", "fraction of the ideal", round(rps / ideal, 3), "",
                    f"ideal {ideal:.0f} req/s", ">= 0.9"))
    rows.append(Row("generate", "most requests in flight", seen["max_in_flight"], "", "", f"<= {CONCURRENCY}"))
    # the client's CPU per request and the machine's load: the ratio is CPU-bound only on a busy machine
    rows.append(Row("generate", "client CPU per request", round(cpu_ms, 2), "ms"))
    rows.append(Row("generate", "1-min load average / cores", round(load_before / (os.cpu_count() or 1), 2), ""))
    with server_module.OpenAIServer(_answer, latency_s=LATENCY_S) as server:
        first, second, rerun_s = _rerun(server, root)
        rows.append(Row("generate", "requests, first run (4 videos x 6 clips)", first, "req"))
        rows.append(Row("generate", "requests, re-run of the finished work dir", second, "req", "", "0"))
        rows.append(Row("generate", "re-run time", round(rerun_s, 3), "s"))
    return rows


if __name__ == "__main__":
    for row in run():
        print(f"{row.metric:<55} {row.fmt():>10} {row.unit:<6} {row.baseline:<16} {row.goal}")
