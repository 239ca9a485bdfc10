"""The generate stage's quality gate: the rules on clear-cut texts, and against the tests' OpenAI-compatible server
scripted with the bad outputs seen from a small model (a turn that is ``{``, a bare name, invented characters,
2 exchanges where 3 were asked, "As an AI", another language, a repeated dialogue): each is asked again once
with its reason, then rejected with it, counted per reason, and never reaches the shards."""

from __future__ import annotations

import json
import re
from collections import Counter

import pyarrow.parquet as pq
import pytest
from openai_server import Fault, OpenAIServer, Reply
from test_generate import (
    METRICS,
    character_of,
    clip_of,
    is_dialogue,
    is_judge,
    is_persona,
    is_summary,
    llm_section,
    make_stage,
    make_video,
    scripted,
    sentence,
)

from v60k.core.workdir import WorkDir, read_json
from v60k.generation.dedup import NearDuplicates
from v60k.generation.quality import ClipRules, KnownNames, QualitySettings

RULES = ClipRules(KnownNames(["Ross", "Monica"], "[1.0] Monica: Chandler called, Ross."), "en", QualitySettings())


def turns(*texts: str) -> list[dict]:
    return [{"role": ("user", "character")[i % 2], "speaker": None, "text": t} for i, t in enumerate(texts)]


# ---------------------------------------------------------------------------------------------------- the rules
@pytest.mark.parametrize(("texts", "code"), [
    (("What happened then?", "{"), "json_fragment"),
    (("What happened then?", '{"turns": [{"role": "user", "text": "hi"}'), "json_fragment"),
    (("What happened then?", "   "), "empty_turn"),
    (("What happened then?", "Monica"), "bare_name"),
    (("What happened then?", "Fine."), "turn_length"),
    (("What happened then?", "As an AI, I do not have feelings about it."), "ai_phrase"),
    (("What happened then?", "I am only a language model, sorry."), "ai_phrase"),
    (("What happened then?", "Ross, calm down, I told myself again and again."), "self_address"),
    (("What happened then?", "I was exhausted and very tired, Ross."), "self_address"),
    (("¿Qué pasó anoche en el café con tus amigos?", "No lo sé, estaba muy cansado y me fui temprano a casa."),
     "language"),
    (("What happened then?", "I was so tired I barely heard what she said.", "And then?"), "exchange_count"),
])
def test_a_dialogue_that_breaks_a_rule_is_named_by_it(texts, code):
    if len(texts) == 3:  # ends with the user: one exchange where two were asked
        problem = RULES.check_dialogue(turns(*texts, "I went home and slept for ten hours straight."), "Ross", 3)
    else:
        problem = RULES.check_dialogue(turns(*texts), "Ross", 1)
    assert problem is not None and problem.code == code, problem


def test_good_text_passes_every_rule():
    good = turns("What happened at the café this morning?", "Honestly? I was so tired I barely heard Monica.",
                 "How do you feel about it now?", "Well, Ross is fine now, my friend Chandler would say. I'm okay.")
    assert RULES.check_dialogue(good, "Ross", 2) is None
    assert RULES.check_dialogue(turns("And Ross?", "I'm Ross, and it was a long night for me."), "Ross", 1) is None
    assert RULES.check_summary("Monica tells Ross that Chandler called.", [
        {"name": n, "does": "talks", "says": "hello there", "feels": "calm"} for n in ("Monica", "Ross", "Chandler",
                                                                                      "a waiter")]) is None


def test_a_persona_that_is_a_name_or_a_loop_is_refused():
    real = {"who_they_are": "A palaeontologist, tired after a night call.", "how_they_speak": "Careful, long words."}
    assert RULES.check_persona("Ross", real, {"Monica": "his sister"}) is None
    assert RULES.check_persona("Ross", {**real, "who_they_are": "Monica"}, {}).code == "bare_name"
    loop = "You look at the table. " * 4
    assert RULES.check_persona("Ross", real, {"Monica": loop}).code == "repetition"
    assert RULES.check_persona("Ross", real, {"Rachel": "a friend"}).code == "invented_character"


def test_a_summary_naming_someone_from_neither_cast_nor_transcript_is_an_invention():
    assert RULES.names_problem(["Ross's sister", "Monica Geller", "the waiter", "ross"], "the summary") is None
    notes = [{"name": n, "does": "talks", "says": "hello there", "feels": "calm"} for n in ("monia", "michael")]
    problem = RULES.check_summary("Monica and Ross talk.", notes)
    assert problem.code == "invented_character" and "'monia', 'michael'" in problem.detail


def test_near_duplicates_are_found_and_distinct_texts_kept():
    seen = NearDuplicates(0.7)
    assert seen.first_match("a", sentence("x", 1) + " " + sentence("x", 2)) is None
    assert seen.first_match("b", sentence("x", 1) + " " + sentence("x", 2) + " Really.") == "a"
    assert seen.first_match("c", sentence("y", 1) + " " + sentence("y", 2)) is None


# ---------------------------------------------------------------------------------------------------- the stage
def number_of(body: dict) -> int:
    return int(re.search(r"conversation number (\d+)", json.dumps(body["messages"][1])).group(1))


def is_reask(body: dict) -> bool:
    last = body["messages"][-1]
    return last["role"] == "user" and str(last["content"]).startswith("That answer breaks a rule")


def dialogue(*texts: str) -> Reply:
    return Reply(json.dumps({"turns": turns(*texts)}))


def three(seed: str, *, character: list[str] | None = None) -> Reply:
    """Three good exchanges, or with the character's turns given."""
    said = character or [sentence(seed, n) for n in range(3)]
    return dialogue(*(x for n, c in enumerate(said) for x in (f"And what happened next, part {n}?", c)))


def bad_outputs(body: dict) -> Reply:
    """Clip 0.0: Ross's dialogues 1-4 are `{`, 2 exchanges for 3, "As an AI" (good when asked again), Spanish;
    Monica's are a bare name, self-address, good, and a repeat of her third. Clip 40.0's summary invents two
    characters; Monica's persona invents a friend."""
    if is_summary(body) and clip_of(body) == "40.0":
        return Reply(json.dumps({"what_happens": "Ross looks for his keys.", "characters": [
            {"name": n, "does": "talks", "says": "a few words", "feels": "tired"} for n in ("monia", "michael")]}))
    if is_persona(body) and "Character: Monica" in body["messages"][1]["content"]:
        return Reply(json.dumps({"who_they_are": "Monica is a chef and a friend of Ross.",
                                 "how_they_speak": "Quick and bossy.",
                                 "whom_they_know": [{"name": "Phoebe", "relation": "a friend"}]}))
    if not is_dialogue(body) or clip_of(body) != "0.0":
        return scripted(body)
    who, number, seed = character_of(body), number_of(body), f"{character_of(body)}{number_of(body)}"
    if who == "Ross":
        if number == 1:
            return three(seed, character=["{", "{", "{"])
        if number == 2:
            return dialogue("What happened?", sentence(seed, 0), "And then?", sentence(seed, 1))
        if number == 3 and not is_reask(body):
            return three(seed, character=[sentence(seed, 0), "As an AI, I cannot have feelings.", sentence(seed, 2)])
        if number == 4:
            return three(seed, character=["No lo sé, estaba muy cansado y me fui temprano a casa."] * 3)
    if who == "Monica":
        if number == 1:
            return three(seed, character=[sentence(seed, 0), "Ross", sentence(seed, 2)])
        if number == 2:
            return three(seed, character=[sentence(seed, 0), "Monica, stop it, I said to myself.", sentence(seed, 2)])
        if number == 4:
            return three("Monica3")
    return three(seed)


def write_corpus(workdir: WorkDir) -> list[str]:
    """The shards of a work dir whose one video has its clips and generation done: their paths."""
    from v60k.core.catalog import Catalog, ItemOutcome
    from v60k.dataset import OutputSettings, write_shards

    with Catalog(workdir.root) as catalog:
        catalog.add_videos([{"video_id": "ep1", "source_url": "file:///ep1.mp4", "characters": ["Ross", "Monica"],
                             "title": "Central Perk", "language": "en"}])
        catalog.ensure_items(["download", "clips", "generate"])
        for stage in ("download", "clips", "generate"):
            catalog.record(ItemOutcome("ep1", stage, "done", 0.0, 1.0), None)
    summary = write_shards(workdir, workdir.root / "shards", OutputSettings(split_method="rank"))
    return [str(workdir.root / "shards" / f) for f in summary.files]


def rows_of(files: list[str], table: str) -> list[dict]:
    return [row for f in files if f"/{table}/" in f for row in pq.read_table(f).to_pylist()]


def test_bad_outputs_are_asked_again_once_then_rejected_with_their_reason_and_never_shard(tmp_path):
    with OpenAIServer(bad_outputs) as server:
        video = make_video(tmp_path)
        result = make_stage(video, llm_section(server), dialogues_per_character=4).process(video)
        data = read_json(video.paths.generation_json)

        by_reason = Counter(r["reason_code"] for r in data["rejected"])
        assert by_reason == {"json_fragment": 1, "exchange_count": 1, "language": 1, "bare_name": 1,
                             "self_address": 1, "invented_character": 2, "near_duplicate": 1}
        assert result.metrics["items"]["rejected"] == dict(by_reason)
        assert result.metrics["items"]["failed"] == {"no_summary": 1}  # c001: its summary was rejected
        summary = next(r for r in data["rejected"] if r["kind"] == "summary")
        assert summary["clip_id"] == "ep1-c001" and "'monia', 'michael'" in summary["reason"]
        persona = next(r for r in data["rejected"] if r["kind"] == "persona")
        assert persona["character"] == "Monica" and "'Phoebe'" in persona["reason"]
        assert data["personas"]["Monica"]["generation_type"] == "extractive"  # her own lines, not an invention
        assert data["personas"]["Ross"]["generation_type"] == "llm"
        duplicate = next(r for r in data["rejected"] if r["reason_code"] == "near_duplicate")
        assert duplicate["character"] == "Monica" and re.fullmatch(r"near_duplicate: of ep1-c000-d\d\d", duplicate["reason"])

        # every rule-breaker was asked again exactly once, with its reason; near-duplicates are not re-asked
        reasks = [b for b in server.chat_bodies if is_reask(b)]
        assert len(reasks) == 7 + 1  # the 7 rejected by a rule, and Ross's third (good the second time)
        assert all(any(r["reason_code"] in b["messages"][-1]["content"] for r in data["rejected"])
                   or "ai_phrase" in b["messages"][-1]["content"] for b in reasks)
        assert all(r["first_reason"] for r in data["rejected"] if r["reason_code"] != "near_duplicate")
        recovered = [d for d in data["dialogues"] if d.get("reasked")]
        assert len(recovered) == 1 and recovered[0]["reasked"].startswith("ai_phrase: turn 4 (Ross)")

        # what stays breaks no rule
        llm = [d for d in data["dialogues"] if d["generation_type"] == "llm"]
        assert sorted(d["character"] for d in llm) == ["Monica", "Ross"]
        rules = ClipRules(KnownNames(["Ross", "Monica"], ""), "en", QualitySettings())
        assert all(rules.check_dialogue(d["turns"], d["character"], 3) is None for d in llm)
        assert set(data["summaries"]) == {"ep1-c000"}

        files = write_corpus(WorkDir(tmp_path))
        rows = rows_of(files, "dialogues")
        texts = {t["text"] for row in rows for t in row["turns"]}
        assert rows and not texts & {"{", "Ross", "As an AI, I cannot have feelings."}
        assert not any("muy cansado" in t or "Monica, stop it" in t for t in texts)
        assert {r["dialogue_id"] for r in rows} == {d["dialogue_id"] for d in data["dialogues"]}
        clips = {r["clip_id"]: r for r in rows_of(files, "clips")}
        assert clips["ep1-c001"]["summary"] is None  # the invented summary is not the corpus's


def test_a_dialogue_still_invalid_after_the_repair_request_is_counted_as_failed(tmp_path):
    with OpenAIServer(scripted) as server:
        match = lambda b: is_dialogue(b) and character_of(b) == "Ross" and clip_of(b) == "0.0"  # noqa: E731
        server.faults += [Fault("schema_violation", match=match), Fault("schema_violation", match=match)]
        video = make_video(tmp_path)
        result = make_stage(video, llm_section(server)).process(video)
        assert result.metrics["items"]["failed"] == {"schema_violation": 1}
        assert result.metrics["items"]["done"] == 2 + 2 + 8 - 1


def judged(body: dict) -> Reply:
    """The judge scores Monica's dialogues 3, Ross's 8."""
    if is_judge(body):
        score = 3 if "Character: Monica" in body["messages"][1]["content"] else 8
        return Reply(json.dumps({"scores": {m: {"model": score, "reference": 7, "rationale": "ok"} for m in METRICS}}))
    return scripted(body)


def test_the_judge_scores_every_llm_dialogue_and_rejects_those_under_the_threshold(tmp_path):
    with OpenAIServer(judged) as server:
        video = make_video(tmp_path)
        settings = {"judge": {"enabled": True, "threshold": 6}}
        result = make_stage(video, llm_section(server), **settings).process(video)
        data = read_json(video.paths.generation_json)
        llm = [d for d in data["dialogues"] if d["generation_type"] == "llm"]
        assert [d["character"] for d in llm] == ["Ross", "Ross"]
        assert all(d["judge_scores"] == dict.fromkeys(METRICS, 8) and d["judge_score"] == 8 for d in llm)
        rejected = [r for r in data["rejected"] if r["reason_code"] == "judge_below_threshold"]
        assert len(rejected) == 2 and all(r["item"]["judge_score"] == 3 for r in rejected)
        assert result.metrics["items"]["rejected"] == {"judge_below_threshold": 2}
        judge_requests = [b for b in server.chat_bodies if is_judge(b)]
        assert len(judge_requests) == 4 and all(b["temperature"] == 0 for b in judge_requests)
        assert all("instruction_adherence" in b["messages"][0]["content"] for b in judge_requests)
        before = server.chat_requests
        again = make_stage(video, llm_section(server), **settings).process(video)  # the judge's answers are cached
        assert server.chat_requests == before and again.usage["requests"] == 0


def test_in_scene_dialogues_continue_the_scene_with_another_character_of_the_clip(tmp_path):
    with OpenAIServer(scripted) as server:
        video = make_video(tmp_path)
        make_stage(video, llm_section(server), dialogue_style="in_scene").process(video)
        data = read_json(video.paths.generation_json)
        llm = [d for d in data["dialogues"] if d["generation_type"] == "llm"]
        assert len(llm) == 4 and data["rejected"] == []
        for d in llm:
            partner = "Monica" if d["character"] == "Ross" else "Ross"
            assert d["dialogue_style"] == "in_scene" and d["prompt_version"] == "dialogue-scene-v1"
            assert {t["speaker"] for t in d["turns"] if t["role"] == "user"} == {partner}
        request = next(b for b in server.chat_bodies if is_dialogue(b))
        assert "continue the scene" in request["messages"][0]["content"]
        assert "say plainly that they do not know" in request["messages"][0]["content"]
