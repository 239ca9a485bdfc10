"""generate: offline (extractive + raw_lines), and against the tests' OpenAI-compatible server with the real
openai client: scripted summaries and dialogues, faults per clip, transient failures and their retry, the cache,
prompt versions in the fingerprint, frames for vision models, and batch mode end to end."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from openai_server import Fault, OpenAIServer, Reply, has_images
from PIL import Image

from v60k.core.stage import StageContext, StageError, Video
from v60k.core.workdir import WorkDir, read_json, write_json
from v60k.roleplay import format as roleplay_format
from v60k.stages import generate as generate_module
from v60k.stages.generate import Generate, GenerateSettings, raw_line_dialogues

LINES = [
    ("L0000", 1.0, 3.0, "Monica", "Hi Ross, you look tired."),
    ("L0001", 3.5, 5.0, "Ross", "I didn't sleep at all."),
    ("L0002", 5.5, 6.5, "Monica", "Why not?"),
    ("L0003", 7.0, 9.0, "Ross", "The museum called at three in the morning."),
    ("L0004", 9.5, 10.5, None, "Coffee, anyone?"),
    ("L0005", 41.0, 43.0, "Ross", "Monica, have you seen my keys?"),
    ("L0006", 43.5, 45.0, "Monica", "They're on the table, Ross."),
    ("L0007", 45.2, 46.0, "Monica", "Next to the sandwich."),
    ("L0008", 46.5, 48.0, "Ross", "My sandwich! Thank you."),
]
CLIPS = [("c000", 0.0, 40.0, ["L0000", "L0001", "L0002", "L0003", "L0004"]),
         ("c001", 40.0, 90.0, ["L0005", "L0006", "L0007", "L0008"]),
         ("c002", 90.0, 130.0, [])]  # no lines: produces nothing
SUMMARY_REQUESTS, PERSONA_REQUESTS, DIALOGUE_REQUESTS = 2, 2, 4  # two clips with lines; Ross and Monica in each
ALL_REQUESTS = SUMMARY_REQUESTS + PERSONA_REQUESTS + DIALOGUE_REQUESTS
METRICS = ["instruction_adherence", "fluency", "coherency", "video_text_relevance", "response_accuracy",
           "personality_consistency", "knowledge_consistency", "tone_consistency"]


def make_video(root: Path, video_id: str = "ep1") -> Video:
    workdir = WorkDir(root).create()
    video = Video(video_id, f"file:///{video_id}.mp4", workdir.video_dir(video_id), characters=["Ross", "Monica"],
                  title="Central Perk", language="en")
    video.dir.mkdir(parents=True, exist_ok=True)
    write_json(video.paths.lines_json, {"cast": ["Ross", "Monica"], "lines": [
        {"line_id": i, "start_s": a, "end_s": b, "text": t, "speaker": f"S_{c}", "character": c} for i, a, b, c, t in LINES]})
    write_json(video.paths.clips_json, {"clips": [
        {"clip_id": f"{video_id}-{c}", "index": n, "start_s": a, "end_s": b, "scene_indices": [n], "line_ids": ids}
        for n, (c, a, b, ids) in enumerate(CLIPS)]})
    return video


def make_stage(video: Video, llm: dict | None = None, **settings) -> Generate:
    stage = Generate(GenerateSettings(**settings), StageContext(WorkDir(video.dir.parent.parent), {"llm": llm or {}}))
    stage.setup()
    return stage


def llm_section(server: OpenAIServer, **overrides) -> dict:
    return {"base_url": server.base_url, "model": "scripted-model", "schema_mode": "json_schema", "max_retries": 2,
            "retry_base_s": 0.0, "price_input_per_1m": 0.5, "price_output_per_1m": 1.5, **overrides}


def system_of(body: dict) -> str:
    content = body["messages"][0]["content"]
    return content if isinstance(content, str) else ""


def is_summary(body: dict) -> bool:
    return "summary context" in system_of(body) and "role-play" not in system_of(body)


def is_persona(body: dict) -> bool:
    return system_of(body).startswith("You write the persona")


def is_judge(body: dict) -> bool:
    return "impartial judge" in system_of(body)


def is_dialogue(body: dict) -> bool:
    return "role-play training conversations" in system_of(body)


def clip_of(body: dict) -> str:
    return re.search(r"Clip: from (\S+) s", json.dumps(body["messages"][1])).group(1)  # [1]: repairs too


def character_of(body: dict) -> str:
    text = json.dumps(body["messages"][1]["content"])
    found = re.search(r"conversation number \d+ with (\w+)", text) or re.search(r"number \d+: \w+ and (\w+)", text)
    return found.group(1)


NOUNS = ["museum", "keys", "sandwich", "coffee", "table", "door", "phone", "couch", "window", "guitar", "letter",
         "umbrella", "bicycle", "kitchen", "ticket", "jacket", "camera", "garden", "lamp", "notebook", "bridge",
         "river", "train", "bakery", "piano", "candle", "mirror", "basket", "ladder", "pillow"]


def sentence(seed: str, n: int) -> str:
    """A plain English sentence whose nouns depend on ``seed``: distinct dialogues are not near-duplicates."""
    digest = hashlib.sha256(f"{seed}/{n}".encode()).digest()
    a, b, c = (NOUNS[x % len(NOUNS)] for x in digest[:3])
    return f"Honestly, I keep thinking about the {a} and the {b} we left near the {c}."


def exchanges_of(body: dict) -> int:
    return int(re.search(r"Write exactly (\d+) exchanges", system_of(body)).group(1))


def scripted(body: dict) -> Reply:
    """Summaries name the speakers of the transcript; personas know the others; dialogues talk to the
    requested character with the number of exchanges asked; the judge gives every metric 8."""
    if is_judge(body):
        return Reply(json.dumps({"scores": {m: {"model": 8, "reference": 7, "rationale": "fine"} for m in METRICS}}))
    if is_persona(body):
        who = re.search(r"Character: (\w+)", body["messages"][1]["content"]).group(1)
        other = "Monica" if who == "Ross" else "Ross"
        return Reply(json.dumps({"who_they_are": f"{who} is one of the friends at the café, tired but kind.",
                                 "how_they_speak": "Short, warm sentences with a dry joke now and then.",
                                 "whom_they_know": [{"name": other, "relation": "a close friend"}]}))
    if is_summary(body):
        text = json.dumps(body["messages"][-1]["content"])
        names = [n for n in ("Monica", "Ross") if f"] {n}:" in text]
        first = re.search(r"\] \w+: ([^\\]+)", text).group(1)
        return Reply(json.dumps({"what_happens": f"{' and '.join(names)} talk; it starts with “{first}”.",
                                 "characters": [{"name": n, "does": "talks", "says": "a few words", "feels": "tired"}
                                                for n in names]}))
    if not is_dialogue(body):  # the vision probe
        return Reply("white")
    who, seed = character_of(body), json.dumps(body["messages"][1])
    turns = []
    for n in range(exchanges_of(body)):
        turns += [{"role": "user", "text": f"What did you see, and how did it feel? ({NOUNS[n]})"},
                  {"role": "character", "text": sentence(seed, n)}]
    return Reply(json.dumps({"turns": turns}))


def dialogue_fault(kind: str, character: str, clip_start: str = "0.0", **kw) -> Fault:
    return Fault(kind, match=lambda b: is_dialogue(b) and character_of(b) == character and clip_of(b) == clip_start,
                 **kw)


def summary_fault(kind: str, clip_start: str, **kw) -> Fault:
    return Fault(kind, match=lambda b: is_summary(b) and clip_of(b) == clip_start, **kw)


def accounted_clips(data: dict) -> set[str]:
    return set(data["summaries"]) | {f["clip_id"] for f in data["failures"]}


# ---------------------------------------------------------------------------------------------------- offline
def test_raw_lines_answer_the_preceding_lines_of_others():
    lines = [{"character": c, "text": t} for _, _, _, c, t in LINES[:5]]
    assert raw_line_dialogues(lines, "Ross", 6) == [[
        {"role": "user", "speaker": "Monica", "text": "Hi Ross, you look tired."},
        {"role": "character", "speaker": "Ross", "text": "I didn't sleep at all."},
        {"role": "user", "speaker": "Monica", "text": "Why not?"},
        {"role": "character", "speaker": "Ross", "text": "The museum called at three in the morning."}]]
    cut = raw_line_dialogues(lines, "Ross", 2)  # cut at max_turns: two exchanges
    assert [[t["text"] for t in d] for d in cut] == [["Hi Ross, you look tired.", "I didn't sleep at all."],
                                                     ["Why not?", "The museum called at three in the morning."]]
    assert [[t["speaker"] for t in d] for d in raw_line_dialogues(lines, "Monica", 6)] == [["Ross", "Monica"]]
    assert raw_line_dialogues(lines, "Joey", 6) == []


def test_without_an_endpoint_summaries_are_extractive_and_dialogues_raw_lines(tmp_path):
    video = make_video(tmp_path)
    result = make_stage(video).process(video)
    data = read_json(video.paths.generation_json)
    assert set(data["summaries"]) == {"ep1-c000", "ep1-c001"} and data["failures"] == []
    first = data["summaries"]["ep1-c000"]
    assert first["generation_type"] == "extractive" and first["generator"] == "v60k" and first["prompt_version"] is None
    assert "Monica (2 lines), Ross (2 lines)" in first["text"] and "“Why not?”" in first["text"]
    assert {d["generation_type"] for d in data["dialogues"]} == {"raw_lines"}
    assert [d["dialogue_id"] for d in data["dialogues"]] == ["ep1-c000-d00", "ep1-c000-d01", "ep1-c001-d00",
                                                              "ep1-c001-d01"]
    monica = next(d for d in data["dialogues"] if d["clip_id"] == "ep1-c001" and d["character"] == "Monica")
    assert monica["turns"][-1]["text"] == "They're on the table, Ross. Next to the sandwich."  # one turn
    assert result.usage["requests"] == 0 and result.metrics["clips_without_lines"] == 1
    assert result.metrics["mode"] == "offline"
    # two extractive summaries and personas, four raw_lines dialogues; nothing rejected
    assert result.metrics["items"] == {"done": 2 + 2 + 4, "rejected": {}, "failed": {}}
    assert data["personas"]["Ross"]["generation_type"] == "extractive" and "The museum called" in (
        data["personas"]["Ross"]["text"])


# ---------------------------------------------------------------------------------------------------- LLM
def test_llm_summaries_and_dialogues_with_the_servers_token_totals(tmp_path):
    with OpenAIServer(scripted) as server:
        video = make_video(tmp_path)
        result = make_stage(video, llm_section(server)).process(video)
        data = read_json(video.paths.generation_json)
        assert server.chat_requests == ALL_REQUESTS and data["failures"] == [] and data["rejected"] == []
        summary = data["summaries"]["ep1-c000"]
        assert summary["generation_type"] == "llm" and summary["generator"] == "scripted-model"
        assert summary["prompt_version"] == "summary-v2" and "Monica and Ross talk" in summary["text"]
        assert data["personas"]["Ross"]["generation_type"] == "llm" and data["personas"]["Ross"]["prompt_version"] == (
            "persona-v1") and "Monica (a close friend)" in data["personas"]["Ross"]["text"]
        assert result.metrics["items"] == {"done": 2 + 2 + 8, "rejected": {}, "failed": {}}
        llm = [d for d in data["dialogues"] if d["generation_type"] == "llm"]
        assert sorted((d["clip_id"], d["character"]) for d in llm) == [
            ("ep1-c000", "Monica"), ("ep1-c000", "Ross"), ("ep1-c001", "Monica"), ("ep1-c001", "Ross")]
        assert all(d["prompt_version"] == "dialogue-v2" and d["turns"][-1]["speaker"] == d["character"]
                   and d["turns"][0]["role"] == "user" and len(d["turns"]) == 6 for d in llm)
        assert len({d["dialogue_id"] for d in data["dialogues"]}) == len(data["dialogues"]) == 8
        reported = server.reported
        assert result.usage["prompt_tokens"] == reported["prompt_tokens"] == data["usage"]["prompt_tokens"]
        assert result.usage["completion_tokens"] == reported["completion_tokens"]
        assert result.usage["requests"] == ALL_REQUESTS and result.usage["cached"] == 0
        assert result.usage["cost_usd"] == pytest.approx(
            (reported["prompt_tokens"] * 0.5 + reported["completion_tokens"] * 1.5) / 1e6, abs=1e-6)
        dialogue_request = next(b for b in server.chat_bodies if is_dialogue(b) and clip_of(b) == "40.0")
        assert "Ross talk" in dialogue_request["messages"][-1]["content"]  # grounded in the clip's summary
        assert "tired but kind" in system_of(dialogue_request)  # and in the character's persona
        second_summary = next(b for b in server.chat_bodies if is_summary(b) and clip_of(b) == "40.0")
        assert "[0.0–40.0 s] Monica and Ross talk" in second_summary["messages"][-1]["content"]  # the story so far

        again = make_stage(video, llm_section(server)).process(video)  # a re-run: zero requests
        assert server.chat_requests == ALL_REQUESTS and again.usage["requests"] == 0
        assert again.usage["cached"] == ALL_REQUESTS
        assert read_json(video.paths.generation_json)["dialogues"] == data["dialogues"]


@pytest.mark.parametrize("story_clips,told", [(6, True), (0, False)])
def test_story_clips_bounds_the_story_in_dialogue_requests(tmp_path, story_clips, told):
    with OpenAIServer(scripted) as server:
        video = make_video(tmp_path)
        make_stage(video, llm_section(server), story_clips=story_clips).process(video)
        dialogue = next(b for b in server.chat_bodies if is_dialogue(b) and clip_of(b) == "40.0")
        assert ("[0.0–40.0 s]" in json.dumps(dialogue["messages"], ensure_ascii=False)) is told


def test_bad_answers_are_recorded_failures_and_no_clip_is_lost(tmp_path):
    with OpenAIServer(scripted) as server:
        server.faults += [summary_fault("schema_violation", "0.0"), summary_fault("invalid_json", "0.0"),
                          dialogue_fault("refusal", "Ross", "40.0"), dialogue_fault("length", "Monica", "40.0"),
                          dialogue_fault("empty_choices", "Ross", "40.0")]
        video = make_video(tmp_path)
        result = make_stage(video, llm_section(server), dialogues_per_character=2).process(video)
        data = read_json(video.paths.generation_json)
        reasons = {(f["clip_id"], f["kind"]): f["reason"] for f in data["failures"]}
        assert reasons[("ep1-c000", "summary")].startswith("invalid_json:") and "after one repair" in reasons[
            ("ep1-c000", "summary")]
        assert "no summary for this clip" in reasons[("ep1-c000", "dialogue")]
        c001 = sorted(f["reason"] for f in data["failures"] if f["clip_id"] == "ep1-c001")
        assert [r.split(":")[0] for r in c001] == ["empty_choices", "length", "refusal"]
        assert "(Ross)" in c001[0] and "(Monica)" in c001[1] and "(Ross)" in c001[2]
        assert server.faults == []
        assert accounted_clips(data) == {"ep1-c000", "ep1-c001"}  # every clip with lines: a result or a reason
        llm = [(d["clip_id"], d["character"]) for d in data["dialogues"] if d["generation_type"] == "llm"]
        assert llm == [("ep1-c001", "Monica")]  # 2 per character asked; the others are failures above
        assert [d["clip_id"] for d in data["dialogues"] if d["generation_type"] == "raw_lines"].count("ep1-c000") == 2
        assert result.metrics["failures"] == 5
        assert result.usage["prompt_tokens"] == server.reported["prompt_tokens"]
        assert result.usage["completion_tokens"] == server.reported["completion_tokens"]
        # c000: the summary and its repair; c001: the summary, Monica twice, Ross twice; two personas
        assert result.usage["requests"] == server.chat_requests == 2 + 5 + PERSONA_REQUESTS
        assert result.metrics["items"]["failed"] == {"invalid_json": 1, "no_summary": 1, "refusal": 1, "length": 1,
                                                     "empty_choices": 1}


@pytest.mark.parametrize("fault", [
    Fault("rate_limit", retry_after=0), Fault("server_error"), Fault("slow", delay_s=3.0), Fault("invalid_json"),
    Fault("schema_violation")])
def test_a_recoverable_fault_leaves_every_summary_and_dialogue_stored(tmp_path, fault):
    with OpenAIServer(scripted) as server:
        fault.match = lambda b: is_dialogue(b) and character_of(b) == "Monica" and clip_of(b) == "40.0"
        server.faults.append(fault)
        video = make_video(tmp_path)
        result = make_stage(video, llm_section(server, timeout_s=1.0)).process(video)
        data = read_json(video.paths.generation_json)
        assert data["failures"] == [] and server.faults == []
        assert len(data["summaries"]) == 2 and sum(d["generation_type"] == "llm" for d in data["dialogues"]) == 4
        assert result.usage["requests"] == server.chat_requests == ALL_REQUESTS + 1  # one more for the fault
        assert result.usage["completion_tokens"] == server.reported["completion_tokens"]


def test_transient_failures_fail_the_video_and_a_retry_asks_only_for_them(tmp_path):
    with OpenAIServer(scripted) as server:
        server.faults += [dialogue_fault("rate_limit", "Ross", retry_after=0)] * 3  # one try + two retries
        video = make_video(tmp_path)
        stage = make_stage(video, llm_section(server))
        with pytest.raises(StageError) as caught:
            stage.process(video)
        assert caught.value.error_class == "llm_transient" and caught.value.transient
        assert "ep1-c000 dialogue (Ross): rate_limited" in str(caught.value)
        assert not video.paths.generation_json.exists()
        first = server.chat_requests
        assert first == ALL_REQUESTS + 2
        retry = make_stage(video, llm_section(server)).process(video)
        assert server.chat_requests == first + 1 and retry.usage["cached"] == ALL_REQUESTS - 1
        assert read_json(video.paths.generation_json)["failures"] == []
        # the failed attempt's requests and tokens are reported by the run that succeeded
        assert retry.usage["requests"] == server.chat_requests == ALL_REQUESTS + 3
        assert (retry.usage["prompt_tokens"], retry.usage["completion_tokens"]) == tuple(server.reported.values())
        assert not (video.dir / generate_module.CARRIED_USAGE).exists()


def test_a_refused_key_fails_the_video_as_an_endpoint_error(tmp_path, monkeypatch):
    monkeypatch.setenv("V60K_GEN_KEY", "sk-wrong")
    with OpenAIServer(scripted, api_key="sk-right") as server:
        video = make_video(tmp_path)
        with pytest.raises(StageError) as caught:
            make_stage(video, llm_section(server, api_key_env="V60K_GEN_KEY")).process(video)
        assert caught.value.error_class == "llm_endpoint" and "auth" in str(caught.value)
        assert "sk-wrong" not in str(caught.value)
        with pytest.raises(StageError) as caught:  # the Batch API upload is refused the same way
            make_stage(video, llm_section(server, api_key_env="V60K_GEN_KEY"), batch=True).process(video)
        assert caught.value.error_class == "llm_endpoint" and "Batch API: auth" in str(caught.value)
        assert server.requests[-1] == ("POST", "/v1/files")


def test_a_prompt_change_changes_the_fingerprint_and_repeats_only_what_it_affects(tmp_path, monkeypatch):
    prompts = tmp_path / "prompts"
    shutil.copytree(roleplay_format.PROMPTS_DIR, prompts)
    monkeypatch.setattr(roleplay_format, "PROMPTS_DIR", prompts)
    with OpenAIServer(scripted) as server:
        video = make_video(tmp_path / "work")
        stage = make_stage(video, llm_section(server))
        stage.process(video)
        before = stage.fingerprint()
        assert make_stage(video, llm_section(server, api_key_env="OTHER", price_input_per_1m=9)).fingerprint() == before
        assert make_stage(video, llm_section(server, model="other")).fingerprint() != before
        path = prompts / "dialogue-v2.md"
        path.write_text(path.read_text().replace("Vary the questions.", "Vary the questions; be brief."))
        changed = make_stage(video, llm_section(server))
        assert changed.fingerprint() != before
        server.reset_counts()
        result = changed.process(video)
        assert server.chat_requests == DIALOGUE_REQUESTS and result.usage["cached"] == SUMMARY_REQUESTS + PERSONA_REQUESTS


def jpeg(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, "JPEG")
    return buffer.getvalue()


def test_vision_attaches_the_clips_frames_in_temporal_order(tmp_path):
    with OpenAIServer(scripted) as server:
        video = make_video(tmp_path)
        frames = {"ep1-c000": [], "ep1-c001": []}
        for clip_id, times in (("ep1-c000", [12.0, 2.0, 30.0, 4.5]), ("ep1-c001", [50.0])):
            for n, t in enumerate(times):
                path = f"frames/{clip_id}/{int(t * 1000):06d}.jpg"
                (video.dir / path).parent.mkdir(parents=True, exist_ok=True)
                (video.dir / path).write_bytes(jpeg((n * 80, 0, 0)))
                frames[clip_id].append({"t_s": t, "path": path, "scene_index": 0})
        write_json(video.paths.frames_json, {"clips": frames, "settings": {}})
        make_stage(video, llm_section(server, vision=True), max_frames=2).process(video)
        summary = next(b for b in server.chat_bodies if is_summary(b) and clip_of(b) == "0.0")
        parts = summary["messages"][-1]["content"]
        labels = [p["text"] for p in parts if p["type"] == "text"][1:]
        images = [p["image_url"] for p in parts if p["type"] == "image_url"]
        assert labels == ["Frame at 2.00 s:", "Frame at 30.00 s:"]  # two of four, evenly chosen, in order
        assert all(i["url"].startswith("data:image/jpeg;base64,") and i["detail"] == "low" for i in images)
        assert "2 frames of the clip follow" in parts[0]["text"]
        # a character's dialogue: the frame nearest each of its lines first (Ross 3.5-5 s and 7-9 s: 4.5 s;
        # Monica 1-3 s and 5.5-6.5 s: 2 s and 4.5 s), then the rest evenly
        for character, expected in (("Ross", ["Frame at 4.50 s:", "Frame at 12.00 s:"]),
                                    ("Monica", ["Frame at 2.00 s:", "Frame at 4.50 s:"])):
            dialogue = next(b for b in server.chat_bodies
                            if is_dialogue(b) and clip_of(b) == "0.0" and character_of(b) == character)
            assert [p["text"] for p in dialogue["messages"][-1]["content"] if p["type"] == "text"][1:] == expected
        assert all(isinstance(b["messages"][-1]["content"], str) for b in server.chat_bodies if is_persona(b))
        assert sum(has_images(b) for b in server.chat_bodies) == 1 + 2 + 4  # the probe, summaries, dialogues
        data = read_json(video.paths.generation_json)
        assert data["warnings"] == [] and data["failures"] == [] and data["rejected"] == []


def test_a_text_only_server_is_found_once_and_gets_text_with_a_warning(tmp_path):
    """A server without vision answers image parts with HTTP 500: probed once, then everything is text; a
    re-run of the finished work dir sends nothing, the probes included."""
    with OpenAIServer(scripted, vision=False, reject_forms=("json_schema",)) as server:
        video = make_video(tmp_path)
        (video.dir / "frames").mkdir()
        (video.dir / "frames" / "a.jpg").write_bytes(jpeg((0, 0, 0)))
        write_json(video.paths.frames_json, {"clips": {"ep1-c000": [{"t_s": 1.0, "path": "frames/a.jpg",
                                                                     "scene_index": 0}]}, "settings": {}})
        llm = llm_section(server, vision=True, schema_mode="auto")
        result = make_stage(video, llm).process(video)
        data = read_json(video.paths.generation_json)
        assert [has_images(b) for b in server.chat_bodies].count(True) == 1  # the probe only
        assert "does not take images" in data["warnings"][0] and result.metrics["warnings"] == data["warnings"]
        assert data["failures"] == [] and len(data["summaries"]) == 2
        # the probe, one refused json_schema form, then the requests
        assert server.chat_requests == result.usage["requests"] == 1 + 1 + ALL_REQUESTS
        before = server.chat_requests
        again = make_stage(video, llm).process(video)
        assert server.chat_requests == before and again.usage["requests"] == 0
        assert read_json(video.paths.generation_json)["warnings"] == data["warnings"]


def test_batch_mode_submits_polls_across_runs_and_collects_by_custom_id(tmp_path):
    with OpenAIServer(scripted, hold_batches=True) as server:
        server.faults.append(dialogue_fault("server_error", "Monica", "40.0"))
        video = make_video(tmp_path)
        llm = llm_section(server, price_input_per_1m=1.0, price_output_per_1m=1.0)

        def run_once() -> dict:
            return make_stage(video, llm, batch=True).process(video).usage

        # summaries; a run while that batch still runs (nothing new is submitted); personas; dialogues
        for run, still_running in enumerate((False, True, False, False)):
            with pytest.raises(StageError) as caught:
                run_once()
            assert caught.value.error_class == "batch_pending" and caught.value.transient
            assert "the next `v60k generate --batch` collects them" in str(caught.value)
            assert ("submitted earlier" in str(caught.value)) == still_running
            if run in (1, 2):
                server.complete_batches()
        batch_dir = WorkDir(tmp_path).batches_dir / "ep1"
        rounds = [[json.loads(x) for x in (batch_dir / f"requests-{n}.jsonl").read_text().splitlines()]
                  for n in range(3)]
        assert [len(r) for r in rounds] == [SUMMARY_REQUESTS, PERSONA_REQUESTS, DIALOGUE_REQUESTS]
        everything = [x for r in rounds for x in r]
        assert all(x["custom_id"].startswith("ep1-") and x["url"] == "/v1/chat/completions" for x in everything)
        assert len({x["custom_id"] for x in everything}) == ALL_REQUESTS
        server.complete_batches()
        usage = run_once()
        data = read_json(video.paths.generation_json)
        assert server.chat_requests == 0 and len(server.batches) == 3
        assert data["summaries"]["ep1-c000"]["generation_type"] == "llm"
        assert sum(d["generation_type"] == "llm" for d in data["dialogues"]) == 3
        assert len(data["failures"]) == 1 and data["failures"][0]["clip_id"] == "ep1-c001"
        assert "batch_error: HTTP 500" in data["failures"][0]["reason"] and "(Monica)" in data["failures"][0]["reason"]
        # the run that writes the results reports both batches' tokens (the summaries were collected earlier)
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == tuple(server.reported.values())
        assert usage["requests"] == ALL_REQUESTS and usage["cost_usd"] > 0
        state = read_json(batch_dir / "state.json")
        assert all(b["collected"] and b["status"] == "completed" for b in state["batches"])
        total = sum(json.loads(x)["response"]["body"].get("usage", {}).get("prompt_tokens", 0)
                    for n in range(3) for x in (batch_dir / f"output-{n}.jsonl").read_text().splitlines())
        assert total == server.reported["prompt_tokens"]
        assert make_stage(video, llm, batch=True).process(video).usage["requests"] == 0  # collected: cached


# ---------------------------------------------------------------------------------------------------- pipeline
def pipeline_workdir(root: Path) -> WorkDir:
    """A work dir whose speech stages are done for one video (source, scenes.json and lines.json in place)."""
    from v60k.core.catalog import Catalog, ItemOutcome
    from v60k.testing.sample_episodes import build_scene_video

    video = make_video(root)
    video.paths.clips_json.unlink()
    build_scene_video(video.dir / "source.mp4", [40.0, 50.0, 40.0], width=64, height=36, fps=5, audio=False)
    write_json(video.paths.scenes_json, {"stream": {"duration_s": 130.0}, "scenes": [
        {"index": i, "start_s": a, "end_s": b, "start_frame": 0, "end_frame": 0}
        for i, (a, b) in enumerate([(0.0, 40.0), (40.0, 90.0), (90.0, 130.0)])]})
    with Catalog(root) as catalog:
        catalog.add_videos([{"video_id": "ep1", "source_url": "file:///ep1.mp4", "characters": ["Ross", "Monica"],
                             "title": "Central Perk"}])
        catalog.ensure_items(["download", "scenes", "transcribe", "diarize", "attribute"])
        for stage in ("download", "scenes", "transcribe", "diarize", "attribute"):
            catalog.record(ItemOutcome("ep1", stage, "done", 0.0, 1.0), None)
    return WorkDir(root)


def test_a_pipeline_run_sums_usage_in_status_and_batch_videos_wait_until_collected(tmp_path):
    """Each run polls the waiting batches by itself (no `v60k retry` needed) until they are collected."""
    from v60k.core import pipeline
    from v60k.core.config import PipelineConfig
    from v60k.core.progress import Progress

    clips = {"min_s": 30, "target_s": 40, "max_s": 60}
    with OpenAIServer(scripted, hold_batches=True) as server:
        workdir = pipeline_workdir(tmp_path / "sync")
        config = PipelineConfig(stages=["clips", "sample", "generate"], llm=llm_section(server),
                                stage_settings={"clips": clips})
        summary = pipeline.run(workdir, config=config, progress=Progress())
        assert summary.counts["generate"]["done"] == 1 and summary.failed == 0
        usage = pipeline.status(workdir)["usage"]["generate"]
        assert usage["requests"] == server.chat_requests == ALL_REQUESTS
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == tuple(server.reported.values())
        assert [c["line_ids"] != [] for c in read_json(workdir.paths("ep1").clips_json)["clips"]] == [True, True, False]

        batch_dir = WorkDir(tmp_path / "batch")
        pipeline_workdir(batch_dir.root)
        batch_config = config.model_copy(update={"stage_settings": {"clips": clips, "generate": {"batch": True}}})
        states = []
        # summaries submitted; still running; personas submitted; dialogues submitted
        for complete in (False, True, True, True):
            pipeline.run(batch_dir, config=batch_config, progress=Progress())
            item = pipeline.status(batch_dir)
            states.append((item["stages"]["generate"]["failed"], [f["error_class"] for f in item["failures"]]))
            if complete:
                server.complete_batches()
        final = pipeline.run(batch_dir, config=batch_config, progress=Progress())
        assert states == [(1, ["batch_pending"])] * 4 and len(server.batches) == 3
        assert final.counts["generate"]["done"] == 1 and server.chat_requests == ALL_REQUESTS  # no new HTTP requests
        batch_usage = pipeline.status(batch_dir)["usage"]["generate"]  # every batch's tokens reach status
        # (the batch's summaries see an extractive story so far: their prompts differ from the synchronous run's)
        assert batch_usage["requests"] == ALL_REQUESTS
        assert batch_usage["prompt_tokens"] == server.reported["prompt_tokens"] - usage["prompt_tokens"]
        assert len(read_json(batch_dir.paths("ep1").generation_json)["dialogues"]) == 8


def play_offline_runner(server: OpenAIServer, batch_dir: Path, number: int) -> None:
    """Do what vLLM's ``run_batch`` does: answer requests-N.jsonl into output-N.jsonl (OpenAI's line format)."""
    rows = []
    for raw in (batch_dir / f"requests-{number}.jsonl").read_text().splitlines():
        line = json.loads(raw)
        status, body, _ = server.answer(line["body"], sleep=False)
        rows.append({"id": f"vllm-{len(rows)}", "custom_id": line["custom_id"], "error": None,
                     "response": {"status_code": status, "request_id": f"r{len(rows)}", "body": body}})
    (batch_dir / f"output-{number}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_offline_batches_are_written_for_vllm_and_read_back_from_its_output(tmp_path):
    with OpenAIServer(scripted) as server:
        video = make_video(tmp_path)
        llm = llm_section(server)
        batch_dir = WorkDir(tmp_path).batches_dir / "ep1"
        for number in (0, 1, 2):  # summaries, personas, dialogues
            with pytest.raises(StageError) as caught:
                make_stage(video, llm, batch=True, batch_api="offline").process(video)
            assert caught.value.error_class == "batch_pending"
            with pytest.raises(StageError):  # no output yet: still waiting, nothing new written
                make_stage(video, llm, batch=True, batch_api="offline").process(video)
            assert not (batch_dir / f"requests-{number + 1}.jsonl").exists()
            play_offline_runner(server, batch_dir, number)
        result = make_stage(video, llm, batch=True, batch_api="offline").process(video)
        data = read_json(video.paths.generation_json)
        assert data["failures"] == [] and sum(d["generation_type"] == "llm" for d in data["dialogues"]) == 4
        assert server.requests == []  # no HTTP at all
        # the run that writes the results reports every batch; the summaries and personas came from the cache
        assert result.usage["requests"] == ALL_REQUESTS
        assert result.usage["cached"] == SUMMARY_REQUESTS + PERSONA_REQUESTS
        assert (result.usage["prompt_tokens"], result.usage["completion_tokens"]) == tuple(server.reported.values())


def test_an_unknown_llm_setting_is_a_config_error(tmp_path):
    from v60k.core.config import ConfigError

    with pytest.raises(ConfigError, match="llm section: api_key: Extra inputs are not permitted") as caught:
        make_stage(make_video(tmp_path), {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-in-a-file"})
    assert "sk-in-a-file" not in str(caught.value)  # keys belong in the environment, and are never echoed
