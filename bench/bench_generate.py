"""LLM client throughput and the response cache, against the tests' OpenAI-compatible server.

- requests/s at concurrency 16 with a fixed 200 ms server latency, as a fraction of the ideal 16 / 0.2 s = 80 req/s
  (goal >= 0.9): the client's overhead and its concurrency bound;
- a re-run of a finished work dir (the generate stage on the same clips, a new client): requests sent (goal 0);
- the quality gate's share of the stage's wall time (its rules and the near-duplicate index, judge off; goal
  <= 5 %);
- the LLM judge's throughput through the stage (same client, concurrency and cache) as a fraction of the ideal
  (goal >= 0.9).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import re
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


NOUNS = ["museum", "keys", "sandwich", "coffee", "table", "door", "phone", "couch", "window", "guitar", "letter",
         "umbrella", "bicycle", "kitchen", "ticket", "jacket", "camera", "garden", "lamp", "notebook", "bridge",
         "river", "train", "bakery", "piano", "candle", "mirror", "basket", "ladder", "pillow"]


def _sentence(seed: str) -> str:
    """A plain sentence whose words depend on ``seed`` (distinct requests: no near-duplicate answers)."""
    a, b, c, d, e, f = (NOUNS[x % len(NOUNS)] for x in hashlib.sha256(seed.encode()).digest()[:6])
    return f"I think the {a} and the {b} by the {c} had more to do with the {d}, the {e} and the {f}."


@functools.cache
def _metric_names() -> list[str]:
    """The rubric's metrics, read once (the server answers from several threads; re-reading the YAML per
    request would make the server, not the client, the bottleneck)."""
    from v60k.roleplay.evaluate import Rubric

    return Rubric.load().metric_names


def _answer(body: dict) -> str:
    """A valid answer for the generate stage's requests (summary, persona, dialogue, judge), else for any schema."""
    server = _server_module()
    schema = server.request_schema(body) or {}
    properties = schema.get("properties") or {}
    seed = json.dumps(body["messages"], sort_keys=True)
    if "what_happens" in properties:
        return json.dumps({"what_happens": f"Ross and Monica talk. {_sentence(seed)}", "characters": [
            {"name": "Ross", "does": "talks", "says": "hello", "feels": "calm"}]})
    if "who_they_are" in properties:
        return json.dumps({"who_they_are": "A friend at the café.", "how_they_speak": "Short, warm sentences.",
                           "whom_they_know": [{"name": "Monica", "relation": "a friend"}]})
    if "turns" in properties:
        exchanges = int(re.search(r"Write exactly (\d+) exchanges", body["messages"][0]["content"]).group(1))
        turns = []
        for n in range(exchanges):
            turns += [{"role": "user", "text": f"And then? {_sentence(f'{seed}/user/{n}')}"},
                      {"role": "character", "text": _sentence(f"{seed}/{n}")}]
        return json.dumps({"turns": turns})
    if not schema and "impartial judge" in str(body["messages"][0]["content"]):
        return json.dumps({"scores": {m: {"model": 8, "reference": 8, "rationale": "fine"} for m in _metric_names()}})
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


def _workdir(root: Path, videos: int, clips: int) -> tuple[object, list]:
    """A work dir of ``videos`` videos of ``clips`` clips, six lines each (Ross and Monica in turn)."""
    from v60k.core.stage import Video
    from v60k.core.workdir import WorkDir, write_json

    workdir = WorkDir(root).create()
    made = []
    for v in range(videos):
        video = Video(f"bench{v}", f"file:///bench{v}.mp4", workdir.video_dir(f"bench{v}"), characters=["Ross", "Monica"],
                      language="en")
        video.dir.mkdir(parents=True, exist_ok=True)
        lines, records = [], []
        for c in range(clips):
            ids = []
            for n in range(6):
                line_id = f"L{c:02d}{n:02d}"
                t = c * 60 + n * 5.0
                lines.append({"line_id": line_id, "start_s": t, "end_s": t + 4,
                              "text": _sentence(f"{v}/{c}/{n}"),
                              "character": ("Ross", "Monica")[n % 2]})
                ids.append(line_id)
            records.append({"clip_id": f"bench{v}-c{c:03d}", "index": c, "start_s": c * 60.0, "end_s": c * 60.0 + 60,
                            "scene_indices": [c], "line_ids": ids})
        write_json(video.paths.lines_json, {"cast": ["Ross", "Monica"], "lines": lines})
        write_json(video.paths.clips_json, {"clips": records})
        made.append(video)
    return workdir, made


def _run_stage(base_url: str, workdir, videos: list, **settings) -> tuple[int, list]:
    """The generate stage over the videos with a new stage and client; (requests sent, results)."""
    from v60k.core.stage import StageContext
    from v60k.stages.generate import Generate, GenerateSettings

    llm = {"base_url": base_url, "model": "bench", "concurrency": CONCURRENCY, "schema_mode": "json_schema"}
    stage = Generate(GenerateSettings(**settings), StageContext(workdir, {"llm": llm}))
    stage.setup()
    results = [stage.process(video) for video in videos]
    stage.teardown()
    return int(sum(r.usage["requests"] for r in results)), results


class _Stopwatch:
    """Seconds spent inside the wrapped methods (patched on their classes while the bench runs)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._undo: list = []

    def wrap(self, owner: type, name: str) -> None:
        original = getattr(owner, name)
        watch = self

        if asyncio.iscoroutinefunction(original):
            async def timed_async(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    watch.seconds += time.perf_counter() - start
            setattr(owner, name, timed_async)
        else:
            def timed_sync(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    watch.seconds += time.perf_counter() - start
            setattr(owner, name, timed_sync)
        self._undo.append((owner, name, original))

    def restore(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)


def _rerun(base_url: str, root: Path) -> tuple[int, int, float, float, float, bool]:
    """Generate over a work dir (the quality gate timed), then again with a new stage (a new run): requests of
    each, re-run seconds, first-run wall seconds, gate seconds, whether any item was rejected or failed."""
    from v60k.generation.dedup import NearDuplicates
    from v60k.generation.quality import ClipRules

    workdir, videos = _workdir(root / "work", 4, 6)
    gate = _Stopwatch()
    for name in ("check_summary", "check_persona", "check_dialogue"):
        gate.wrap(ClipRules, name)
    gate.wrap(NearDuplicates, "first_match")
    try:
        start = time.perf_counter()
        first, results = _run_stage(base_url, workdir, videos)
        wall_s = time.perf_counter() - start
    finally:
        gate.restore()
    clean = all(not r.metrics["items"]["rejected"] and not r.metrics["items"]["failed"] for r in results)
    start = time.perf_counter()
    second, _ = _run_stage(base_url, workdir, videos)
    return first, second, time.perf_counter() - start, wall_s, gate.seconds, clean


def _judge_throughput(base_url: str, root: Path, repeat: int = 2) -> tuple[int, float]:
    """One video of 10 clips, 16 dialogues per character (320, like the client figure): the judge phase's requests
    and its best seconds over ``repeat`` fresh work dirs (the machine is shared: one run may be slowed)."""
    from v60k.stages.generate import Generate

    best, judged = float("inf"), 0
    for attempt in range(repeat):
        workdir, videos = _workdir(root / f"judge{attempt}", 1, 10)
        watch = _Stopwatch()
        watch.wrap(Generate, "_judge")
        try:
            sent, results = _run_stage(base_url, workdir, videos, dialogues_per_character=16,
                                       judge={"enabled": True, "threshold": 5})
        finally:
            watch.restore()
        judged = sum(r.metrics["dialogues_llm"] for r in results)
        assert sent >= 2 * judged, "the judge did not ask for every dialogue"
        best = min(best, watch.seconds)
    return judged, best


def _serve(latency_s: float, conn) -> None:
    """The server in a process of its own (as a remote server would be): its CPU is not the client's."""
    with _server_module().OpenAIServer(_answer, latency_s=latency_s) as server:
        conn.send(server.base_url)
        conn.recv()  # until the bench is done
        conn.send({"chat_requests": server.chat_requests, "max_in_flight": server.max_in_flight})


def run() -> list[Row]:
    import multiprocessing

    root = scratch("generate")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rows = []
    ours, theirs = multiprocessing.get_context("fork").Pipe()
    process = multiprocessing.get_context("fork").Process(target=_serve, args=(LATENCY_S, theirs), daemon=True)
    process.start()
    try:
        load_before = os.getloadavg()[0]
        base_url = ours.recv()
        rps, sent, cpu_ms = _throughput(base_url, root)
        first, second, rerun_s, wall_s, gate_s, clean = _rerun(base_url, root)
        judged, judge_s = _judge_throughput(base_url, root)  # after the stage's first runs: imports, model loads
        ours.send("done")
        seen = ours.recv()
    finally:
        process.join(timeout=10)
    assert seen["chat_requests"] >= sent and seen["max_in_flight"] <= CONCURRENCY, (seen, sent)
    ideal = CONCURRENCY / LATENCY_S
    rows.append(Row("generate", f"requests/s at concurrency {CONCURRENCY}, {int(LATENCY_S * 1000)} ms latency",
                    round(rps, 1), "req/s"))
    rows.append(Row("generate", "fraction of the ideal", round(rps / ideal, 3), "",
                    f"ideal {ideal:.0f} req/s", ">= 0.9"))
    rows.append(Row("generate", "most requests in flight", seen["max_in_flight"], "", "", f"<= {CONCURRENCY}"))
    # the client's CPU per request and the machine's load: the ratio is CPU-bound only on a busy machine
    rows.append(Row("generate", "client CPU per request", round(cpu_ms, 2), "ms"))
    rows.append(Row("generate", "1-min load average / cores", round(load_before / (os.cpu_count() or 1), 2), ""))
    rows.append(Row("generate", "requests, first run (4 videos x 6 clips)", first, "req"))
    rows.append(Row("generate", "items rejected or failed, first run", 0 if clean else 1, "", "", "0"))
    rows.append(Row("generate", "requests, re-run of the finished work dir", second, "req", "", "0"))
    rows.append(Row("generate", "re-run time", round(rerun_s, 3), "s"))
    rows.append(Row("generate", "quality gate share of the stage's wall time", round(100 * gate_s / wall_s, 2), "%",
                    f"stage {wall_s:.1f} s", "<= 5"))
    rows.append(Row("generate", f"judge requests/s ({judged} dialogues)", round(judged / judge_s, 1), "req/s"))
    rows.append(Row("generate", "judge fraction of the ideal", round(judged / judge_s / ideal, 3), "",
                    f"ideal {ideal:.0f} req/s", ">= 0.9"))
    return rows


if __name__ == "__main__":
    for row in run():
        print(f"{row.metric:<55} {row.fmt():>10} {row.unit:<6} {row.baseline:<16} {row.goal}")
