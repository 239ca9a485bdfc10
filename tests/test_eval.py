"""``v60k eval``: the rubric, judge-answer validation, aggregation, and whole runs against the tests' own
OpenAI-compatible server with a scripted model under test and a scripted judge."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from v60k.framework.evaluate import (
    Rubric,
    TurnOutcome,
    aggregate,
    dialogue_items,
    load_test_items,
    parse_judgement,
    subsample_frames,
)
from v60k.framework.profile import RolePlayProfile, Turn

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
    assert [t for t, _ in subsample_frames(frames, 4)] == [0.0, 3.0, 6.0, 9.0]
    assert subsample_frames(frames, None) == frames and subsample_frames(frames, 20) == frames


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
