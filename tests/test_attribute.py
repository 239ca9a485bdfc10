"""attribute: dialogue evidence, one-to-one assignment, the voice bank; on real diarized espeak-ng episodes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from openai_server import OpenAIServer, openai_server_fixture  # noqa: F401  (the openai_server fixture)
from test_diarize import diarized_episode, truth_speaker_at

from v60k.core.stage import SkipVideo, StageContext, StageError, Video
from v60k.core.workdir import WorkDir, read_json, write_json
from v60k.stages.attribute import (
    Attribute,
    AttributeSettings,
    arbitrate_with_llm,
    dialogue_evidence,
    find_vocatives,
)


def _copy_video(video: Video, root: Path, video_id: str, **changes: Any) -> Video:
    """The diarized video copied under a new id (its own lines.json), with manifest fields changed."""
    target = root / "videos" / video_id
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(video.paths.diarization_json, target / "diarization.json")
    return Video(**{**video.to_dict(), "video_id": video_id, "dir": target, **changes})


def _attribute(workdir: WorkDir, video: Video, **settings: Any) -> dict[str, Any]:
    Attribute(AttributeSettings(**settings), StageContext(workdir)).process(video)
    return read_json(video.paths.lines_json)


def line_accuracy(document: dict[str, Any], truth: dict[str, Any]) -> float:
    right = sum(1 for ln in document["lines"] if ln["character"] == truth_speaker_at(truth, ln["start_s"], ln["end_s"]))
    return right / len(document["lines"])


@pytest.mark.parametrize("kind", ["two", "three"])
def test_named_characters_are_attributed(kind: str, tmp_path: Path) -> None:
    _, video, truth = diarized_episode(kind)
    workdir = WorkDir(tmp_path / "work").create()
    copy = _copy_video(video, workdir.root, f"{kind}-a", series=None)
    document = _attribute(workdir, copy)
    assert document["cast_source"] == "manifest" and document["cast"] == truth["cast"]
    assert line_accuracy(document, truth) >= 0.9
    characters = [s["character"] for s in document["speakers"].values() if s["character"]]
    assert len(characters) == len(set(characters)) == len(truth["cast"])  # one-to-one
    assert all(0.0 <= ln["confidence"] <= 1.0 for ln in document["lines"])


def test_speech_over_music_names_only_what_the_evidence_holds(tmp_path: Path) -> None:
    """The diarizer is borderline over a music bed (its accuracy is a benchmark figure, not asserted here). What
    holds whatever it finds: names are one-to-one; a named speaker has a line of its own supporting that name,
    no conflicting evidence, and strength x coverage over the threshold; and where every cluster is one person,
    no line gets a wrong name."""
    _, video, truth = diarized_episode("music")
    workdir = WorkDir(tmp_path / "work").create()
    document = _attribute(workdir, _copy_video(video, workdir.root, "music-a", series=None))
    named = {s: v for s, v in document["speakers"].items() if v["character"]}
    assert len({v["character"] for v in named.values()}) == len(named)
    for speaker in named.values():
        assert speaker["status"] == "named" and "conflicts" not in speaker
        assert speaker["confidence"] >= AttributeSettings().min_confidence
        assert any(c["name"] == speaker["character"] and c["kind"] in ("self_intro", "addressed")
                   for c in speaker["clues"])
    for line in document["lines"]:
        assert line["character"] in (None, document["speakers"].get(line["speaker"], {}).get("character"))
    people = {}
    for line in document["lines"]:
        people.setdefault(line["speaker"], set()).add(truth_speaker_at(truth, line["start_s"], line["end_s"]))
    if all(len(who) == 1 for who in people.values()):
        assert all(ln["character"] in (None, truth_speaker_at(truth, ln["start_s"], ln["end_s"]))
                   for ln in document["lines"])


def test_a_speaker_never_named_gets_null(tmp_path: Path) -> None:
    _, video, truth = diarized_episode("unnamed")
    workdir = WorkDir(tmp_path / "work").create()
    document = _attribute(workdir, _copy_video(video, workdir.root, "guest", series=None))
    for line in document["lines"]:
        spoken_by = truth_speaker_at(truth, line["start_s"], line["end_s"])
        if spoken_by == "Gunther":
            assert line["character"] is None
        else:
            assert line["character"] in (spoken_by, None)
    assert line_accuracy({"lines": [ln for ln in document["lines"] if ln["character"]]}, truth) == 1.0
    assert sum(1 for ln in document["lines"] if ln["character"]) >= 0.75 * sum(
        1 for ln in document["lines"] if truth_speaker_at(truth, ln["start_s"], ln["end_s"]) != "Gunther")


def test_one_name_cast_never_names_the_other_speaker(tmp_path: Path) -> None:
    _, video, truth = diarized_episode("two")
    workdir = WorkDir(tmp_path / "work").create()
    document = _attribute(workdir, _copy_video(video, workdir.root, "solo", characters=["Ross"], series=None))
    for line in document["lines"]:
        if truth_speaker_at(truth, line["start_s"], line["end_s"]) == "Monica":
            assert line["character"] is None
    assert any(ln["character"] == "Ross" for ln in document["lines"])


def test_empty_cast_is_explained_null(tmp_path: Path) -> None:
    _, video, _ = diarized_episode("two")
    workdir = WorkDir(tmp_path / "work").create()
    copy = _copy_video(video, workdir.root, "nocast", characters=[], series=None)
    result = Attribute(context=StageContext(workdir)).process(copy)
    document = read_json(copy.paths.lines_json)
    assert document["cast"] == [] and document["cast_source"] == "none" and "no cast" in document["note"]
    assert all(ln["character"] is None for ln in document["lines"])
    assert result.metrics["named_lines"] == 0


def test_cast_found_in_title_and_description(tmp_path: Path) -> None:
    _, video, truth = diarized_episode("two")
    workdir = WorkDir(tmp_path / "work").create()
    copy = _copy_video(video, workdir.root, "fromtitle", characters=[], series=None)
    write_json(copy.paths.info_json, {"title": "Monica and Ross: Sunday Breakfast (Full Scene)",
                                      "description": "Ross tells Monica about the museum."})
    document = _attribute(workdir, copy)
    assert document["cast_source"] == "info" and set(document["cast"]) == {"Monica", "Ross"}
    assert line_accuracy(document, truth) >= 0.9


def test_voice_bank_carries_names_to_the_next_episode(tmp_path: Path) -> None:
    """Episode 1 names both characters; in episode 2 (same voices) nobody is named: the series' voice bank
    attributes it, and a video never matches its own bank entry."""
    _, video, truth = diarized_episode("two")
    workdir = WorkDir(tmp_path / "work").create()
    first = _copy_video(video, workdir.root, "ep1", series="Friends Like")
    _attribute(workdir, first)
    banks = list((workdir.root / "voice_banks").glob("*.json"))
    assert len(banks) == 1
    bank = read_json(banks[0])
    assert set(bank["entries"]["ep1"]) == {"Monica", "Ross"}

    second = _copy_video(video, workdir.root, "ep2", series="Friends Like")
    diarization = read_json(second.paths.diarization_json)
    for line in diarization["lines"]:  # no names spoken in this episode
        line["text"] = "Mm hm, I see what you mean."
    write_json(second.paths.diarization_json, diarization)
    assert all(ln["character"] is None for ln in _attribute(workdir, second, voice_bank=False)["lines"])
    document = _attribute(workdir, second)
    assert line_accuracy(document, truth) >= 0.9
    # a bank holding only ep1's own voices gives ep1 (re-run, names blanked) no evidence
    solo = WorkDir(tmp_path / "solo").create()
    lonely = _copy_video(second, solo.root, "ep1", series="Friends Like")
    write_json(solo.root / "voice_banks" / banks[0].name, {**bank, "entries": {"ep1": bank["entries"]["ep1"]}})
    assert all(ln["character"] is None for ln in _attribute(solo, lonely)["lines"])


def test_evidence_rules() -> None:
    settings = AttributeSettings()
    assert find_vocatives("Hi Monica, how are you?", "Monica") == ["greeting"]
    assert find_vocatives("Yes Ross, I will.", "Ross") == ["answer"]
    assert find_vocatives("I told Ross about it.", "Ross") == []
    assert find_vocatives("I will go.", "Will") == []
    assert find_vocatives("Thanks, Ross.", "Dr. Ross Geller") == ["answer"]
    lines = [
        {"speaker": "A", "text": "Hi Monica, good to see you."},
        {"speaker": "B", "text": "Hello. I'm Rachel, Monica's friend."},
        {"speaker": "C", "text": "I think Ross is late again."},
    ]
    evidence = dialogue_evidence(lines, ["A", "B", "C"], ["Monica", "Rachel", "Ross"], settings)
    assert evidence["A"]["Monica"] < 0 < evidence["B"]["Monica"]  # the speaker is not the addressee
    assert evidence["B"]["Rachel"] == settings.self_intro_weight
    assert evidence["C"]["Ross"] == -settings.mention_penalty


def test_no_diarization_skips(tmp_path: Path) -> None:
    workdir = WorkDir(tmp_path / "work").create()
    video = Video(video_id="v1", source_url="file:///x", dir=workdir.video_dir("v1"), characters=["Ross"])
    video.dir.mkdir(parents=True)
    with pytest.raises(SkipVideo) as caught:
        Attribute(context=StageContext(workdir)).process(video)
    assert caught.value.error_class == "no_diarize_output"
    video.paths.diarization_json.write_text("{not json", encoding="utf-8")
    with pytest.raises(StageError) as failed:
        Attribute(context=StageContext(workdir)).process(video)
    assert failed.value.error_class == "bad_input"
    assert AttributeSettings().llm_arbitration is False


def test_llm_arbitration_hook_only_fills_free_names() -> None:
    lines = [{"speaker": "SPEAKER_00", "text": "Hello."}, {"speaker": "SPEAKER_01", "text": "Hi there."}]
    assignment = {"SPEAKER_00": ("Ross", 0.9), "SPEAKER_01": (None, 0.2), "SPEAKER_02": (None, 0.1)}
    prompts: list[str] = []

    def answer(prompt: str) -> str:  # the LLM boundary: answers follow the prompt's list of free names
        prompts.append(prompt)
        return "Monica." if "SPEAKER_01" in prompt.split("Which")[1] else "Ross"

    out = arbitrate_with_llm(assignment, lines, ["Ross", "Monica"], complete=answer, confidence=0.6)
    assert out == {"SPEAKER_00": ("Ross", 0.9), "SPEAKER_01": ("Monica", 0.6), "SPEAKER_02": (None, 0.1)}
    assert "Ross" not in prompts[0].split("Which")[1]  # a name already held is not offered
    assert arbitrate_with_llm(assignment, lines, ["Ross", "Monica"]) == assignment  # not wired: unchanged


def test_llm_arbitration_through_the_shared_endpoint(tmp_path: Path, openai_server: OpenAIServer) -> None:
    """Nobody is named in the dialogue; with arbitration on, the LLM endpoint (the tests' OpenAI-compatible
    server, answering from the truth) names the speakers, at the threshold confidence and with usage counted."""
    _, video, truth = diarized_episode("two")
    workdir = WorkDir(tmp_path / "work").create()
    copy = _copy_video(video, workdir.root, "asked", series=None)
    diarization = read_json(copy.paths.diarization_json)
    who = {}
    for line in diarization["lines"]:
        who.setdefault(line["speaker"], truth_speaker_at(truth, line["start_s"], line["end_s"]))
        line["text"] = "Mm hm, I see what you mean."
    write_json(copy.paths.diarization_json, diarization)
    questions: list[str] = []

    def answer(body: dict[str, Any]) -> str:
        prompt = body["messages"][-1]["content"]
        questions.append(prompt)
        label = prompt.split("Which of these characters is ")[1].split(":")[0]
        return who[label] + "."

    openai_server.handler = answer
    llm = {"base_url": openai_server.base_url, "model": "test-model"}
    stage = Attribute(AttributeSettings(llm_arbitration=True), StageContext(workdir, {"llm": llm}))
    stage.setup()
    result = stage.process(copy)
    stage.teardown()
    document = read_json(copy.paths.lines_json)
    assert line_accuracy(document, truth) >= 0.9
    assert {ln["confidence"] for ln in document["lines"] if ln["character"]} == {0.6}
    assert len(questions) == 2 and result.usage["requests"] == 2
    assert result.metrics["llm_arbitration"] == "on"
    # without an endpoint the setting changes nothing
    stage = Attribute(AttributeSettings(llm_arbitration=True), StageContext(workdir, {"llm": {}}))
    stage.setup()
    assert stage.process(copy).metrics["llm_arbitration"] == "no_llm_endpoint"
    assert all(ln["character"] is None for ln in read_json(copy.paths.lines_json)["lines"])


def test_cast_from_subtitle_speaker_prefixes(tmp_path: Path) -> None:
    from v60k.core.documents import Info
    from v60k.stages.attribute import resolve_cast

    video = Video(video_id="v", source_url="file:///v", dir=tmp_path, characters=[])
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "en.vtt").write_text(
        "WEBVTT\n\n00:00.000 --> 00:02.000\nROSS: Hi.\n\n00:02.000 --> 00:04.000\n- Phoebe: Hey!\n", "utf-8")
    write_json(tmp_path / "info.json", {"title": "The One With The Breakfast", "description": "",
                                        "subtitles": {"en": "subs/en.vtt"}})
    cast, source = resolve_cast(video, Info.load(video.paths), tmp_path, "Hi. Hey!", limit=12)
    assert (cast, source) == (["Ross", "Phoebe"], "info")
