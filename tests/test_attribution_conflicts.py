"""attribute on crafted diarizations (JSON level, deterministic): a cluster holding two people stays null, a
speaker never gets the name it calls, confidence follows how much of the cluster the evidence covers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from v60k.attribution.scoring import oracle_lines, score_lines
from v60k.backends.diarization.metrics import read_rttm
from v60k.core.stage import StageContext, Video
from v60k.core.workdir import WorkDir, read_json, write_json
from v60k.stages.attribute import Attribute, AttributeSettings

CAST = ["Ross", "Monica", "Rachel"]


def crafted_lines(turns: list[tuple[str, str]], line_s: float = 3.0, gap_s: float = 0.6) -> list[dict[str, Any]]:
    """(speaker, text) turns as diarized lines, one after another."""
    lines, t = [], 0.0
    for i, (speaker, text) in enumerate(turns):
        lines.append({"line_id": f"L{i:04d}", "start_s": round(t, 3), "end_s": round(t + line_s, 3), "text": text,
                      "speaker": speaker, "words": []})
        t += line_s + gap_s
    return lines


def attribute(tmp_path: Path, lines: list[dict[str, Any]], cast: list[str] = CAST, **settings: Any) -> dict[str, Any]:
    """The attribute stage on a diarization.json holding ``lines`` (no voice bank)."""
    workdir = WorkDir(tmp_path / "work").create()
    video = Video(video_id="call", source_url="file:///call.wav", dir=workdir.video_dir("call"), characters=cast)
    video.dir.mkdir(parents=True, exist_ok=True)
    speakers = sorted({ln["speaker"] for ln in lines if ln["speaker"]})
    write_json(video.paths.diarization_json, {
        "backend": "crafted", "num_speakers": len(speakers), "lines": lines,
        "turns": [{"start_s": ln["start_s"], "end_s": ln["end_s"], "speaker": ln["speaker"]} for ln in lines],
        "speakers": {s: {"total_s": 1.0, "embedding": None} for s in speakers}})
    result = Attribute(AttributeSettings(voice_bank=False, **settings), StageContext(workdir)).process(video)
    document = read_json(video.paths.lines_json)
    items = result.metrics["items"]
    assert items["done"] == sum(1 for ln in document["lines"] if ln["character"])
    assert items["done"] + sum(items["rejected"].values()) == len(lines)
    return {**document, "metrics": result.metrics}


PHONE_CALL = [  # two people; the diarizer found one speaker
    ("Ross", "Hello?"),
    ("Monica", "Hey, it's Monica. Are you busy?"),
    ("Ross", "Not at all. I'm Ross, by the way, the one you met at the museum."),
    ("Monica", "I know who you are. Do you want to have dinner on Friday?"),
    ("Ross", "That sounds great. Where should we meet?"),
    ("Monica", "At the small place next to the bakery, at eight."),
]


def test_one_cluster_two_self_introductions_is_left_null(tmp_path: Path) -> None:
    lines = crafted_lines([("SPEAKER_00", text) for _, text in PHONE_CALL])
    document = attribute(tmp_path, lines)
    speaker = document["speakers"]["SPEAKER_00"]
    assert speaker["character"] is None and speaker["status"] == "conflict"
    assert any(c["kind"] == "two_names" and c["names"] == ["Monica", "Ross"] for c in speaker["conflicts"])
    assert all(ln["character"] is None for ln in document["lines"])
    assert document["metrics"]["items"]["rejected"] == {"conflict": len(lines)}
    # the same call diarized right: each person gets their own name, and only their lines
    truth = [(who, text) for who, text in PHONE_CALL]
    lines = crafted_lines(truth)
    document = attribute(tmp_path, lines)
    for line, (who, _) in zip(document["lines"], truth, strict=True):
        assert line["character"] in (who, None)
    assert {s["character"] for s in document["speakers"].values()} == {"Ross", "Monica"}


def test_merged_cluster_beside_a_clean_one(tmp_path: Path) -> None:
    """Two people merged into SPEAKER_00 stay null; the third person's own cluster is still named."""
    lines = crafted_lines([
        ("SPEAKER_00", "Hi, I'm Ross. I work at the museum."),
        ("SPEAKER_01", "Nice to meet you. I'm Rachel, I work at the coffee house."),
        ("SPEAKER_00", "And I'm Monica, his sister. I cook at the restaurant downtown."),
        ("SPEAKER_01", "Then we should all have dinner together on Friday."),
    ])
    document = attribute(tmp_path, lines)
    assert document["speakers"]["SPEAKER_00"]["status"] == "conflict"
    assert [ln["character"] for ln in document["lines"]] == [None, "Rachel", None, "Rachel"]


def test_a_speaker_never_gets_the_name_it_calls(tmp_path: Path) -> None:
    """SPEAKER_00 says "Hi Monica" and is also called Monica by the other speaker: two people in one cluster (or
    a misread address); either way SPEAKER_00 is not named Monica."""
    lines = crafted_lines([
        ("SPEAKER_00", "Hi Monica, how was the restaurant today?"),
        ("SPEAKER_01", "Busy. The new chef burned the soup twice."),
        ("SPEAKER_00", "That sounds like a long day in the kitchen."),
        ("SPEAKER_01", "Yes Monica, it was. Anyway, how are you feeling?"),
    ])
    document = attribute(tmp_path, lines)
    speaker = document["speakers"]["SPEAKER_00"]
    assert speaker["character"] is None and speaker["status"] == "conflict"
    assert any(c["kind"] == "self_address" and c["name"] == "Monica" for c in speaker["conflicts"])
    assert all(ln["character"] != "Monica" for ln in document["lines"] if ln["speaker"] == "SPEAKER_00")


def test_one_speaker_calling_a_name_with_nobody_to_answer_is_not_named(tmp_path: Path) -> None:
    """The only cluster says "Hi Monica, it's Ross": Monica's replies can only be inside that same cluster."""
    lines = crafted_lines([
        ("SPEAKER_00", "Hi Monica, it's Ross."),
        ("SPEAKER_00", "Oh hey. What's up?"),
        ("SPEAKER_00", "I was wondering if you had plans for tonight."),
    ])
    speaker = attribute(tmp_path, lines)["speakers"]["SPEAKER_00"]
    assert speaker["character"] is None
    assert {c["kind"] for c in speaker["conflicts"]} >= {"unanswered_address"}


def test_a_cluster_answering_its_own_question_is_not_named(tmp_path: Path) -> None:
    lines = crafted_lines([
        ("SPEAKER_00", "This is Ross speaking. How are you today?"),
        ("SPEAKER_00", "Fine, thanks. And you?"),
        ("SPEAKER_01", "The delivery is late again."),
    ])
    speaker = attribute(tmp_path, lines)["speakers"]["SPEAKER_00"]
    assert speaker["character"] is None
    assert any(c["kind"] == "self_answer" for c in speaker["conflicts"])


def test_confidence_follows_coverage(tmp_path: Path) -> None:
    """One self-introduction among twenty lines (two minutes) does not name the whole cluster; the same evidence
    over a short cluster does."""
    monologue = ["Hello everyone, I'm Ross."] + [f"Here is the fossil number {i} of the collection." for i in range(19)]
    lines = crafted_lines([("SPEAKER_00", text) for text in monologue], line_s=5.0, gap_s=1.0)
    speaker = attribute(tmp_path, lines)["speakers"]["SPEAKER_00"]
    assert speaker["coverage"] < 0.5
    assert speaker["character"] is None and speaker["status"] == "low_confidence" and "coverage" in speaker["reason"]
    short = attribute(tmp_path, lines[:4])["speakers"]["SPEAKER_00"]
    assert short["character"] == "Ross" and short["coverage"] == 1.0 and short["confidence"] >= 0.6


def test_a_sentence_cut_at_a_speaker_change_leaves_the_short_piece_null(tmp_path: Path) -> None:
    lines = crafted_lines([
        ("SPEAKER_00", "Hi, Ross. You look tired this morning."),
        ("SPEAKER_01", "Not really, Monica. I slept well."),
        ("SPEAKER_00", "Then sit down and have some coffee with"),
        ("SPEAKER_01", "me."),
    ], gap_s=0.1)
    lines[3]["end_s"] = lines[3]["start_s"] + 0.4
    document = attribute(tmp_path, lines)
    assert [ln["character"] for ln in document["lines"]] == ["Monica", "Ross", "Monica", None]
    assert "L0003" in document["line_notes"]
    assert document["metrics"]["items"]["rejected"] == {"sentence_cut": 1}


def test_score_and_rttm(tmp_path: Path) -> None:
    rttm = tmp_path / "x.rttm"
    rttm.write_text("SPEAKER f1 1 0.0 3.0 <NA> <NA> A <NA> <NA>\nSPEAKER f1 1 3.0 3.0 <NA> <NA> B <NA> <NA>\n"
                    "SPEAKER f2 1 0.0 1.0 <NA> <NA> A <NA> <NA>\n", "utf-8")
    reference = read_rttm(rttm)
    assert reference["f1"] == [(0.0, 3.0, "A"), (3.0, 6.0, "B")] and len(reference["f2"]) == 1
    lines = oracle_lines([{"start_s": 0.2, "end_s": 2.5, "text": " Hi."}, {"start_s": 2.8, "end_s": 5.9, "text": "Yo"}],
                         reference["f1"])
    assert [ln["speaker"] for ln in lines] == ["A", "B"] and lines[0]["text"] == "Hi."
    named = [{**lines[0], "character": "Ross"}, {**lines[1], "character": "Ross"}]
    score = score_lines(named, reference["f1"], {"A": "Ross"})
    assert (score.named_right, score.wrong, score.total) == (1, 1, 2)
    score = score_lines([{**ln, "character": None} for ln in lines], reference["f1"], {"A": "Ross"})
    assert (score.missed, score.null_right, score.accuracy, score.null_fraction) == (1, 1, 0.5, 1.0)


def test_the_addressee_takes_a_turn_of_their_own(tmp_path: Path) -> None:
    """A greeting's next line is the addressee only when it starts a turn: here the diarizer cut the greeter's
    own sentence ("... ask not" | "what ..."), so the name goes to the previous speaker, not to the cut piece."""
    lines = crafted_lines([
        ("SPEAKER_00", "Hello there. I was just about to call you about the trip."),
        ("SPEAKER_01", "Hi Mary, it's John. And so my fellow Americans ask not"),
        ("SPEAKER_02", "what your country can do for you"),
        ("SPEAKER_01", "Ask what you can do for your country."),
    ], gap_s=0.1)
    lines[2]["end_s"] = lines[2]["start_s"] + 1.0
    document = attribute(tmp_path, lines, cast=["Mary", "John"])
    assert [ln["character"] for ln in document["lines"]] == ["Mary", "John", None, "John"]
    assert document["speakers"]["SPEAKER_02"]["clues"] == []
