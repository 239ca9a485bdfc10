"""``v60k eval``: the rubric, judge-answer validation, aggregation, and whole runs against the tests' own
OpenAI-compatible server with a scripted model under test and a scripted judge."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from openai_server import Fault, openai_server_fixture  # noqa: F401  (fixture)
from PIL import Image

from v60k.roleplay.evaluate import (
    Rubric,
    TurnOutcome,
    aggregate,
    dialogue_items,
    load_test_items,
    parse_judgement,
)
from v60k.roleplay.format import RolePlayProfile, Turn, evenly_spaced, frames_for_character

RUBRIC = Rubric.load()
METRICS = RUBRIC.metric_names


def judge_json(pairs: dict[str, tuple[int, int]] | tuple[int, int], **overrides: object) -> str:
    """A judge answer in the rubric's format: the same pair for every metric, or one pair per metric."""
    if isinstance(pairs, tuple):
        pairs = dict.fromkeys(METRICS, pairs)
    scores: dict[str, object] = {m: {"model": a, "reference": b, "rationale": f"{m} reason"} for m, (a, b) in pairs.items()}
    scores.update(overrides)
    return json.dumps({"scores": scores})


def test_rubric_file_has_the_eight_metrics_a_scale_and_the_output_format():
    assert METRICS == [
        "instruction_adherence", "fluency", "coherency", "video_text_relevance", "response_accuracy",
        "personality_consistency", "knowledge_consistency", "tone_consistency",
    ]
    assert RUBRIC.version == "eval-rubric-v1" and (RUBRIC.scale_min, RUBRIC.scale_max) == (1, 10)
    assert all(len(m.description) > 40 for m in RUBRIC.metrics)
    profile = RolePlayProfile("Ross", persona="A palaeontologist.", summary="Ross is tired.",
                              frames=[(2.0, b"b"), (1.0, b"a")], title="Central Perk")
    messages = RUBRIC.judge_messages(profile, [Turn("user", "Hi Ross.", "Monica"), Turn("character", "Hi.")],
                                     Turn("user", "Did you sleep?", "Monica"), "Not really.", "No, Monica.")
    system, user = messages[0]["content"], messages[1]["content"]
    assert "$" not in system + user
    for metric in RUBRIC.metrics:
        assert metric.name in system and metric.description in system
    assert '"scores"' in system and "from 1 to 10" in " ".join(system.split())
    assert "A palaeontologist." in user and "Ross is tired." in user and "1.00, 2.00" in user
    assert "Monica: Hi Ross.\nRoss: Hi." in user and "Monica: Did you sleep?" in user
    assert user.index("Not really.") < user.index("No, Monica.")


def test_a_valid_judge_answer_gives_every_pair_and_rationale():
    judgement = parse_judgement(judge_json((6, 8)), RUBRIC)
    assert judgement.problems == {}
    assert set(judgement.scores) == set(METRICS)
    assert judgement.scores["fluency"].ratio == 0.75 and judgement.scores["fluency"].rationale == "fluency reason"


def test_fenced_json_and_metric_titles_as_keys_are_accepted():
    body = json.dumps({"scores": {m.title: {"model": 5, "reference": 5} for m in RUBRIC.metrics}})
    judgement = parse_judgement(f"```json\n{body}\n```", RUBRIC)
    assert judgement.problems == {} and len(judgement.scores) == 8


@pytest.mark.parametrize(
    ("answer", "metric", "reason_part"),
    [
        (judge_json({m: (5, 5) for m in METRICS[1:]}), "instruction_adherence", "missing scores"),
        (judge_json((5, 5), fluency={"model": 11, "reference": 5}), "fluency", "model score 11 is outside 1–10"),
        (judge_json((5, 5), coherency={"model": 4, "reference": 0}), "coherency", "reference score 0 is outside"),
        (judge_json((5, 5), coherency={"model": 4}), "coherency", "reference score missing"),
        (judge_json((5, 5), tone_consistency={"model": 7.5, "reference": 6}), "tone_consistency", "not an integer"),
        (judge_json((5, 5), tone_consistency={"model": "high", "reference": 6}), "tone_consistency", "not a number"),
        (judge_json((5, 5), fluency=9), "fluency", "not an object"),
    ],
)
def test_an_invalid_metric_is_dropped_with_its_reason_and_the_others_kept(answer, metric, reason_part):
    judgement = parse_judgement(answer, RUBRIC)
    assert list(judgement.problems) == [metric]
    assert reason_part in judgement.problems[metric]
    assert set(judgement.scores) == set(METRICS) - {metric}


@pytest.mark.parametrize(
    ("answer", "reason_part"),
    [
        ("The model's answer is pretty good, I would give it 8 out of 10.", "prose instead of the JSON format"),
        ('{"scores": {"fluency": {"model": 8, "reference": 9}', "invalid JSON"),
        ('{"fluency": {"model": 8, "reference": 9}}', 'no "scores" object'),
        ("[1, 2, 3]", 'no "scores" object'),
        ("", "empty judge answer"),
    ],
)
def test_an_unusable_judge_answer_drops_the_whole_turn_with_its_reason(answer, reason_part):
    judgement = parse_judgement(answer, RUBRIC)
    assert judgement.scores == {}
    assert list(judgement.problems) == [None] and reason_part in judgement.problems[None]


def test_aggregate_averages_ratios_over_valid_judgements_and_counts_the_dropped():
    outcomes = [
        TurnOutcome("d0", 1, "q", "r", "a", parse_judgement(judge_json((4, 8)), RUBRIC)),
        TurnOutcome("d0", 3, "q", "r", "a", parse_judgement(judge_json((9, 6), fluency={"model": 99}), RUBRIC)),
        TurnOutcome("d1", 1, "q", "r", "a", parse_judgement("I refuse to use JSON.", RUBRIC)),
        TurnOutcome("d1", 3, "q", "r", None, failure="model request failed: APIError: boom"),
    ]
    result = aggregate(outcomes, RUBRIC)
    coherency, fluency = result["metrics"]["coherency"], result["metrics"]["fluency"]
    assert coherency == {"title": "Coherency", "ratio": 1.0, "model_mean": 6.5, "reference_mean": 7.0,
                         "n_valid": 2, "n_dropped": 2}  # (4/8 + 9/6) / 2
    assert fluency["ratio"] == 0.5 and fluency["n_valid"] == 1 and fluency["n_dropped"] == 3
    assert result["overall"] == pytest.approx((7 * 1.0 + 0.5) / 8)
    reasons = {(d["dialogue_id"], d["turn"], d["metric"]): d["reason"] for d in result["dropped"]}
    assert len(reasons) == 3
    assert "outside 1–10" in reasons[("d0", 3, "fluency")]
    assert "prose instead" in reasons[("d1", 1, None)]
    assert reasons[("d1", 3, None)] == "model request failed: APIError: boom"


def test_no_valid_judgement_gives_null_scores_not_zero():
    result = aggregate([TurnOutcome("d0", 1, "q", "r", "a", parse_judgement("nope", RUBRIC))], RUBRIC)
    assert all(m["ratio"] is None and m["n_valid"] == 0 and m["n_dropped"] == 1 for m in result["metrics"].values())
    assert result["overall"] is None


def test_every_character_turn_answering_a_user_turn_is_an_item_with_the_history_before_it():
    turns = [Turn("character", "I open."), Turn("user", "Q1", "Monica"), Turn("character", "A1"),
             Turn("user", "Q2", "Monica"), Turn("character", "A2")]
    items = dialogue_items("d0", turns, RolePlayProfile("Ross"))
    assert [(i.turn, i.question.text, i.reference, len(i.history)) for i in items] == [(2, "Q1", "A1", 1), (4, "Q2", "A2", 3)]


def test_subsampling_frames_keeps_temporal_order_and_the_ends():
    frames = [(float(t), bytes([t])) for t in range(10)]
    assert [t for t, _ in evenly_spaced(frames, 4)] == [0.0, 3.0, 6.0, 9.0]
    assert evenly_spaced(frames, None) == frames and evenly_spaced(frames, 20) == frames


def test_frames_for_a_character_take_the_frame_nearest_each_line_then_fill_evenly():
    busy = [(0.25 * k, k) for k in range(40)]  # 0-9.75 s: a high-motion stretch, densely sampled
    frames = [*busy, (14.0, "a"), (18.0, "b"), (26.0, "c")][::-1]  # any input order: temporal output
    assert frames_for_character(frames, 6) == evenly_spaced(sorted(frames), 6)  # no lines: the even choice
    chosen = frames_for_character(frames, 6, [(17.0, 17.5), (25.0, 26.5)])
    assert [t for t, _ in chosen] == sorted(t for t, _ in chosen) and len(chosen) == 6
    assert (18.0, "b") in chosen and (26.0, "c") in chosen  # nearest to each line (inside it, else closest)
    assert chosen[0] == (0.0, 0)  # the rest evenly over the clip, from its start
    lines = [(float(t), t + 0.5) for t in range(0, 10, 2)]  # five lines, a budget of three: spread over them
    assert [t for t, _ in frames_for_character(busy, 3, lines)] == [0.25, 4.25, 8.25]  # mid-line frames
    assert frames_for_character(frames, None, lines) == sorted(frames) and frames_for_character(frames, 0, lines) == []


# ------------------------------------------------------------------------------------ a small corpus


def _jpeg(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 18), (shade, 255 - shade, 80)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    """(speaker, text) pairs alternating user / character, the user first."""
    return [{"role": "user" if i % 2 == 0 else "character", "speaker": speaker, "text": text}
            for i, (speaker, text) in enumerate(pairs)]


def _write(root: Path, table: str, split: str, rows: list[dict[str, object]]) -> None:
    folder = root / "data" / table
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / f"{split}-00000-of-00001.parquet")


def build_shards(root: Path) -> Path:
    """The issue-5 shard layout with two test dialogues (three character turns) and one train dialogue."""
    clip = {"clip_id": "ep1-c000", "video_id": "ep1", "start_s": 0.0, "end_s": 20.0,
            "frame_times_s": [9.0, 1.5, 4.0],  # stored out of order on purpose: the model must get them sorted
            "frames": [{"bytes": _jpeg(200), "path": "9000.jpg"}, {"bytes": _jpeg(10), "path": "1500.jpg"},
                       {"bytes": _jpeg(100), "path": "4000.jpg"}],
            "summary": "Monica offers Ross pancakes while he complains about the museum.", "split": "test"}
    _write(root, "clips", "test", [clip])
    _write(root, "videos", "test", [{"video_id": "ep1", "title": "Central Perk", "series": "friends-like",
                                     "characters": ["Monica", "Ross"], "split": "test"}])
    _write(root, "utterances", "test", [
        {"video_id": "ep1", "start_s": 2.0, "end_s": 3.0, "text": "The museum called me.", "character": "Ross"},
        {"video_id": "ep1", "start_s": 30.0, "end_s": 32.0, "text": "I love dinosaurs.", "character": "Ross"},
        {"video_id": "ep1", "start_s": 33.0, "end_s": 34.0, "text": "Pancakes!", "character": "Monica"},
    ])
    dialogues = [
        {"dialogue_id": "ep1-c000-d01", "clip_id": "ep1-c000", "video_id": "ep1", "character": "Ross",
         "generation_type": "llm", "generator": "scripted", "split": "test",
         "turns": _turns(("Monica", "Q-A: did you sleep?"), ("Ross", "REF-A: not really."))},
        {"dialogue_id": "ep1-c000-d00", "clip_id": "ep1-c000", "video_id": "ep1", "character": "Ross",
         "generation_type": "raw_lines", "generator": "v60k", "split": "test",
         "turns": _turns(("Monica", "Q-B: pancakes?"), ("Ross", "REF-B: yes please."),
                         ("Monica", "Q-C: the museum?"), ("Ross", "REF-C: a lecture on Friday."))},
    ]
    _write(root, "dialogues", "test", dialogues)
    _write(root, "dialogues", "train", [{**dialogues[0], "dialogue_id": "ep9-c000-d00", "split": "train"}])
    return root


def test_test_items_come_from_the_test_split_with_sorted_frames_summary_and_a_leak_free_persona(tmp_path):
    items = load_test_items(build_shards(tmp_path / "corpus"), max_frames=None)
    assert [(i.dialogue_id, i.turn, i.question.text, i.reference) for i in items] == [
        ("ep1-c000-d00", 1, "Q-B: pancakes?", "REF-B: yes please."),
        ("ep1-c000-d00", 3, "Q-C: the museum?", "REF-C: a lecture on Friday."),
        ("ep1-c000-d01", 1, "Q-A: did you sleep?", "REF-A: not really."),
    ]
    profile = items[0].profile
    assert profile.frame_times == [1.5, 4.0, 9.0]
    assert profile.frames[0][1] == _jpeg(10)
    assert profile.summary.startswith("Monica offers Ross pancakes")
    assert "I love dinosaurs." in profile.persona and "The museum called me." not in profile.persona  # inside the clip
    assert "Pancakes!" not in profile.persona and "Central Perk" in profile.persona
    assert [i.dialogue_id for i in load_test_items(tmp_path / "corpus", limit=1)] == ["ep1-c000-d00"] * 2
    assert len(load_test_items(tmp_path / "corpus", max_frames=2)[0].profile.frames) == 2


def test_missing_test_dialogues_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no test dialogues"):
        load_test_items(tmp_path)


# ------------------------------------------------------------------- whole runs against the test server

MODEL, JUDGE = "rp-model", "judge-model"


class ScriptedEndpoint:
    """The model under test answers "ANSWER to <question>"; the judge answers what ``verdicts`` scripts for the
    question it is shown (Q-A, Q-B, Q-C)."""

    def __init__(self, verdicts: dict[str, str]):
        self.verdicts = verdicts

    def __call__(self, body: dict) -> str:
        if body["model"] == MODEL:
            last = body["messages"][-1]["content"]
            text = last if isinstance(last, str) else last[-1]["text"]
            return f"ANSWER to {text.split(': ', 1)[-1]}"
        assert body["model"] == JUDGE
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")  # a repair request too
        question = next(q for q in self.verdicts if f"The user's last message:\nMonica: {q}" in user)
        verdict = self.verdicts[question]
        return verdict(body) if callable(verdict) else verdict


def _config(path: Path, base_url: str) -> Path:
    path.write_text(f"llm:\n  base_url: {base_url}\n  model: {JUDGE}\n  max_retries: 0\n  retry_base_s: 0\n"
                    "  price_input_per_1m: 1.0\n  price_output_per_1m: 2.0\n", encoding="utf-8")
    return path


def _eval(tmp_path: Path, server, *extra: str) -> tuple[object, dict]:
    import click
    from click.testing import CliRunner

    from v60k.cli import eval_cmds

    group = click.Group()
    eval_cmds.register(group)
    shards = tmp_path / "corpus"
    if not shards.exists():
        build_shards(shards)
    out = tmp_path / "results.json"
    args = ["eval", "--shards", str(shards), "--model", MODEL, "--out", str(out), "--workdir", str(tmp_path / "work"),
            "--config", str(_config(tmp_path / "eval.yaml", server.base_url)), *extra]
    result = CliRunner().invoke(group, args, catch_exceptions=False)
    return result, json.loads(out.read_text()) if out.exists() else {}


Q_A, Q_B, Q_C = "Q-A: did you sleep?", "Q-B: pancakes?", "Q-C: the museum?"


def test_a_valid_run_gives_the_exact_ratios_and_a_rerun_sends_no_request(tmp_path, openai_server):
    openai_server.handler = ScriptedEndpoint({Q_A: judge_json((5, 10)), Q_B: judge_json((6, 8)),
                                              Q_C: judge_json({m: (9 - i, 6) for i, m in enumerate(METRICS)})})
    result, results = _eval(tmp_path, openai_server)
    assert result.exit_code == 0, result.output
    assert openai_server.chat_requests == 6  # 3 turns: one answer and one judgement each
    assert (results["model"], results["judge"], results["rubric_version"]) == (MODEL, JUDGE, "eval-rubric-v1")
    for i, name in enumerate(METRICS):
        metric = results["metrics"][name]
        expected = (0.5 + 0.75 + (9 - i) / 6) / 3
        assert metric["ratio"] == pytest.approx(expected, abs=1e-6)
        assert metric["model_mean"] == pytest.approx((5 + 6 + 9 - i) / 3, abs=1e-6)
        assert metric["reference_mean"] == pytest.approx(8.0, abs=1e-6)
        assert (metric["n_valid"], metric["n_dropped"]) == (3, 0)
    assert results["overall"] == pytest.approx(sum(m["ratio"] for m in results["metrics"].values()) / 8)
    assert results["dropped"] == [] and results["n_turns"] == 3 and results["n_dialogues"] == 2
    assert [t["answer"] for t in results["turns"]] == [f"ANSWER to {q}" for q in (Q_B, Q_C, Q_A)]
    assert results["usage"]["requests"] == 6 and results["usage"]["cached"] == 0
    reported = openai_server.reported
    assert results["usage"]["prompt_tokens"] == reported["prompt_tokens"]
    assert results["usage"]["completion_tokens"] == reported["completion_tokens"]
    assert results["usage"]["cost_usd"] == pytest.approx(
        (reported["prompt_tokens"] * 1.0 + reported["completion_tokens"] * 2.0) / 1e6, abs=1e-6)
    assert "Fluency" in result.output and "overall" in result.output

    # the model got the clip's frames in temporal order, the summary and the persona; the judge the rubric
    first = next(b for b in openai_server.chat_bodies if b["model"] == MODEL and Q_B in json.dumps(b))
    images = [p["image_url"]["url"] for p in first["messages"][1]["content"] if p["type"] == "image_url"]
    assert images == [f"data:image/jpeg;base64,{__import__('base64').b64encode(_jpeg(s)).decode()}"
                      for s in (10, 100, 200)]
    assert "Monica offers Ross pancakes" in first["messages"][0]["content"]
    assert "I love dinosaurs." in first["messages"][0]["content"]
    judge_body = next(b for b in openai_server.chat_bodies if b["model"] == JUDGE)
    assert "video_text_relevance" in judge_body["messages"][0]["content"]

    before = openai_server.chat_requests
    again, rerun = _eval(tmp_path, openai_server)
    assert again.exit_code == 0, again.output
    assert openai_server.chat_requests == before  # everything from the response cache
    assert rerun["usage"]["requests"] == 0 and rerun["usage"]["cached"] == 6
    assert rerun["metrics"] == results["metrics"] and rerun["turns"] == results["turns"]


def test_malformed_judge_answers_are_recorded_and_averages_count_only_valid_ones(tmp_path, openai_server):
    missing = json.loads(judge_json((4, 8)))
    del missing["scores"]["coherency"]
    openai_server.handler = ScriptedEndpoint({
        Q_B: json.dumps(missing),  # coherency missing
        Q_C: judge_json((8, 8), fluency={"model": 12, "reference": 8, "rationale": "x"}),  # out of range
        Q_A: "Both answers are fine. The model's answer deserves a 7 and the reference an 8.",  # prose
    })
    result, results = _eval(tmp_path, openai_server)
    assert result.exit_code == 0, result.output
    metrics = results["metrics"]
    assert metrics["coherency"] == {"title": "Coherency", "ratio": 1.0, "model_mean": 8.0, "reference_mean": 8.0,
                                    "n_valid": 1, "n_dropped": 2}
    assert metrics["fluency"]["ratio"] == 0.5 and (metrics["fluency"]["n_valid"], metrics["fluency"]["n_dropped"]) == (1, 2)
    assert metrics["tone_consistency"]["ratio"] == 0.75 and metrics["tone_consistency"]["n_valid"] == 2
    dropped = {(d["dialogue_id"], d["turn"], d["metric"]): d["reason"] for d in results["dropped"]}
    assert dropped[("ep1-c000-d00", 1, "coherency")] == "missing scores for this metric"
    assert dropped[("ep1-c000-d00", 3, "fluency")] == "model score 12 is outside 1–10"
    # prose, asked again once (the repair request), prose again: the whole turn is dropped, never guessed at
    assert dropped[("ep1-c000-d01", 1, None)].startswith("judge request failed: invalid_json")
    assert "after one repair request" in dropped[("ep1-c000-d01", 1, None)]
    assert len(dropped) == 3
    assert "3 dropped judgement(s)" in result.output and "invalid_json" in result.output


def test_invalid_json_and_a_failed_request_are_recorded_too(tmp_path, openai_server):

    openai_server.handler = ScriptedEndpoint({Q_B: '{"scores": {"fluency": {"model": 7, ', Q_C: judge_json((3, 6)),
                                              Q_A: judge_json((3, 6))})
    openai_server.faults.append(Fault("server_error", match=lambda body: body["model"] == MODEL
                                      and Q_A in json.dumps(body["messages"][-1])))
    result, results = _eval(tmp_path, openai_server, "--json")
    assert result.exit_code == 0, result.output
    dropped = {(d["dialogue_id"], d["turn"]): d["reason"] for d in results["dropped"]}
    assert dropped[("ep1-c000-d00", 1)].startswith("judge request failed: invalid_json")
    assert dropped[("ep1-c000-d01", 1)].startswith("model request failed: server_error")
    assert all(m["ratio"] == 0.5 and m["n_valid"] == 1 and m["n_dropped"] == 2 for m in results["metrics"].values())
    assert json.loads(result.output)["overall"] == 0.5


def test_eval_without_an_endpoint_exits_2_with_a_clear_message(tmp_path):
    import click
    from click.testing import CliRunner

    from v60k.cli import eval_cmds

    group = click.Group()
    eval_cmds.register(group)
    result = CliRunner().invoke(group, ["eval", "--shards", str(build_shards(tmp_path / "c")), "--model", MODEL,
                                        "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert "No LLM endpoint is configured" in result.output and "base_url" in result.output


def test_a_judge_without_json_schema_support_answers_through_the_compatibility_layer(tmp_path, openai_server):
    """A llama.cpp-like judge: json_schema refused (HTTP 500), prose first, the format after the repair request.
    Every judgement counts; a metric no judgement scored validly is "n/a", never 0."""
    openai_server.reject_forms = {"json_schema"}

    def prose_then_json(body: dict) -> str:
        repaired = body["messages"][-1]["role"] == "user" and "not valid" in body["messages"][-1]["content"]
        return judge_json((6, 8), fluency={"model": 0, "reference": 8, "rationale": "x"}) if repaired else \
            "I would give the model a 6 and the reference an 8."

    openai_server.handler = ScriptedEndpoint({Q_A: prose_then_json, Q_B: prose_then_json, Q_C: prose_then_json})
    result, results = _eval(tmp_path, openai_server)
    assert result.exit_code == 0, result.output
    judge_bodies = [b for b in openai_server.chat_bodies if b["model"] == JUDGE]
    forms = [b["response_format"]["type"] for b in judge_bodies]
    assert forms.count("json_schema") == 1 and set(forms) == {"json_schema", "json_object"}  # probed once
    schema = judge_bodies[-1]["response_format"]["schema"]  # then the form the server accepts, with the schema
    assert sorted(schema["properties"]["scores"]["required"]) == sorted(METRICS)
    metrics = results["metrics"]
    assert metrics["coherency"]["n_valid"] == 3 and metrics["coherency"]["ratio"] == 0.75
    assert metrics["fluency"]["n_valid"] == 0 and metrics["fluency"]["ratio"] is None
    assert results["split"] == "test"
    row = next(line for line in result.output.splitlines() if "Fluency" in line)
    assert "n/a" in row and "0.000" not in row
    assert "on the 'test' split" in result.output
