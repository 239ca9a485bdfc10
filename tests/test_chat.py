"""``v60k chat``: the role-play messages (persona, summary, frames in temporal order, history), and the whole
command on a generated episode against the tests' own OpenAI-compatible server."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from openai_server import Fault, OpenAIServer, openai_server_fixture  # noqa: F401  (fixture)

from v60k.cli import chat_cmds
from v60k.roleplay import chat
from v60k.roleplay.format import RolePlayProfile, Turn, build_messages, image_parts, without_images
from v60k.testing.sample_episodes import build_episode, two_speaker_spec


def _profile(**overrides: object) -> RolePlayProfile:
    values: dict[str, object] = {
        "character": "Ross", "persona": "Ross, a palaeontologist who loves dinosaurs.",
        "summary": "Monica offers Ross pancakes; he talks about the museum.",
        "frames": [(3.5, b"\xff\xd8third"), (0.5, b"\xff\xd8first"), (1.25, b"\xff\xd8second")],
        "title": "central-perk",
    }
    values.update(overrides)
    return RolePlayProfile(**values)  # type: ignore[arg-type]


def test_messages_carry_persona_summary_and_frames_in_temporal_order():
    messages = build_messages(_profile(), [], Turn("user", "How was the museum?", "Monica"))
    system = messages[0]
    assert system["role"] == "system"
    assert "You are Ross" in system["content"]
    assert "Ross, a palaeontologist who loves dinosaurs." in system["content"]
    assert "Monica offers Ross pancakes" in system["content"]
    assert "$" not in system["content"]
    [user] = messages[1:]
    assert user["role"] == "user"
    captions = [p["text"] for p in user["content"] if p["type"] == "text"]
    assert captions[1:4] == ["Frame 1 at 0.50 s", "Frame 2 at 1.25 s", "Frame 3 at 3.50 s"]
    assert captions[-1] == "Monica: How was the museum?"
    decoded = [base64.b64decode(url.split(",", 1)[1]) for url in image_parts(messages)]
    assert decoded == [b"\xff\xd8first", b"\xff\xd8second", b"\xff\xd8third"]
    assert all(url.startswith("data:image/jpeg;base64,") for url in image_parts(messages))


def test_history_alternates_and_only_the_first_user_message_has_the_frames():
    history = [Turn("user", "Hi Ross.", "Monica"), Turn("character", "Hi Monica.", "Ross"),
               Turn("user", "Coffee?", "Monica"), Turn("user", "It is fresh.", "Monica"),
               Turn("character", "Yes please.", "Ross")]
    messages = build_messages(_profile(), history, "Pancakes too?")
    roles = [m["role"] for m in messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[2]["content"] == "Hi Monica."
    assert messages[3]["content"] == "Monica: Coffee?\nMonica: It is fresh."  # same side merged
    assert messages[-1]["content"] == "Pancakes too?"
    assert len(image_parts(messages)) == 3 and len(image_parts(messages[:2])) == 3


def test_a_text_only_model_gets_the_frame_times_but_no_images():
    messages = build_messages(_profile(), [], "Hello", vision=False)
    assert image_parts(messages) == []
    lines = messages[1]["content"].split("\n")
    assert lines[1:] == ["Frame 1 at 0.50 s", "Frame 2 at 1.25 s", "Frame 3 at 3.50 s", "Hello"]
    assert messages[1]["content"] == without_images(build_messages(_profile(), [], "Hello"))[1]["content"]


def test_a_dialogue_the_character_opens_still_starts_with_a_user_message():
    messages = build_messages(_profile(frames=[]), [Turn("character", "Morning!", "Ross")], "Morning, Ross.")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "(The scene starts.)"


def test_no_persona_gives_a_plain_one_and_no_summary_says_so():
    system = build_messages(_profile(persona="", summary=""), [], "Hi")[0]["content"]
    assert "Ross, one of the people in “central-perk”." in system
    assert "(no summary available)" in system


# ------------------------------------------------------------- the command on a generated episode

CHARACTER, MODEL = "Ross", "vision-model"


@pytest.fixture(scope="module")
def episode_work(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A generated two-speaker episode and a work dir where the speech stages already ran on it (once per
    module: the tests below then only resume it)."""
    root = tmp_path_factory.mktemp("chat-episode")
    with pytest.MonkeyPatch.context() as env:  # the same isolation as the per-test fixture
        for name, sub in (("HOME", "home"), ("XDG_CACHE_HOME", "home/.cache"), ("HF_HOME", "home/.cache/hf")):
            env.setenv(name, str(root / sub))
        env.setenv("HF_HUB_OFFLINE", "1")
        episode = build_episode(two_speaker_spec(), root / "media")
        chat.prepare_video(str(episode.path), ["Ross", "Monica"], root / "work")
    return episode.path, root / "work"


def _chat(tmp_path: Path, episode_work: tuple[Path, Path], server: OpenAIServer | None, *extra: str,
          stdin: str | None = None, quiet: bool = True):
    video, prepared = episode_work
    work = tmp_path / "work"
    if not work.exists():
        shutil.copytree(prepared, work)
    group = click.Group()
    chat_cmds.register(group)
    args = ["chat", "--video", str(video), "--character", CHARACTER, "--cast", "Ross;Monica", "--workdir", str(work),
            "--max-frames", "5", *(["--quiet"] if quiet else []), *extra]
    if server is not None:
        config = tmp_path / "chat.yaml"
        config.write_text(f"llm:\n  base_url: {server.base_url}\n  model: {MODEL}\n  max_retries: 0\n", "utf-8")
        args += ["--config", str(config)]
    return CliRunner().invoke(group, args, input=stdin, catch_exceptions=False)


SUMMARY = {"what_happens": "SCRIPTED-SUMMARY: Monica offers Ross pancakes while he talks about the museum.",
           "characters": [{"name": "Ross", "does": "sits down", "says": "the museum called", "feels": "tired"}]}


def _scripted(body: dict) -> str | dict:
    """The summary request (it asks for a JSON schema) gets SUMMARY; chat turns get a numbered answer."""
    if body.get("response_format"):
        return SUMMARY
    turn = sum(1 for m in body["messages"] if m["role"] == "user")
    return f"Answer number {turn}: I barely slept, Monica."


def _chat_bodies(server: OpenAIServer) -> list[dict]:
    return [b for b in server.chat_bodies if not b.get("response_format")]


def test_chat_once_sends_frames_in_temporal_order_the_summary_and_the_persona(tmp_path, episode_work, openai_server):
    from v60k.media.frame_sampler import DEFAULT_MAX_FRAMES, sample
    from v60k.roleplay.format import frames_for_character

    openai_server.handler = _scripted
    result = _chat(tmp_path, episode_work, openai_server, "--persona", "Ross is a shy palaeontologist.",
                   "--once", "How was the museum?")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "Answer number 1: I barely slept, Monica."
    summary_body = next(b for b in openai_server.chat_bodies if b.get("response_format"))
    assert "museum" in summary_body["messages"][-1]["content"].lower()  # the transcript went into the summary prompt
    [body] = _chat_bodies(openai_server)
    assert body["model"] == MODEL
    system = body["messages"][0]["content"]
    assert SUMMARY["what_happens"] in system and "Ross — does: sits down" in system
    assert "Ross is a shy palaeontologist." in system and "You are Ross" in system
    first_user = body["messages"][1]["content"]
    assert first_user[-1] == {"type": "text", "text": "How was the museum?"}
    captions = [p["text"] for p in first_user if p["type"] == "text" and p["text"].startswith("Frame ")]
    times = [float(caption.split(" at ")[1].removesuffix(" s")) for caption in captions]
    # of the reference sampler's frames for the whole video, the five frames_for_character gives for Ross's
    # lines: one within 1 s of each (as many as fit), in temporal order
    source = next((tmp_path / "work" / "videos").glob("*/source.*"))
    scenes = json.loads(next((tmp_path / "work" / "videos").glob("*/scenes.json")).read_text())
    lines = json.loads(next((tmp_path / "work" / "videos").glob("*/lines.json")).read_text())["lines"]
    spans = [(ln["start_s"], ln["end_s"]) for ln in lines if ln.get("character") == CHARACTER]
    candidates = sample(source, 0.0, scenes["stream"]["duration_s"], max_frames=DEFAULT_MAX_FRAMES,
                        motion=scenes["motion"], scenes=scenes["scenes"])
    expected = frames_for_character(candidates, 5, spans)
    assert spans and len(expected) >= 2 and times == sorted(times)
    if len(spans) <= 5:
        assert all(any(start - 1.0 <= t <= end + 1.0 for t in times) for start, end in spans), (spans, times)
    assert times == pytest.approx([t for t, _ in expected], abs=0.01)
    sent = [base64.b64decode(url.split(",", 1)[1]) for url in image_parts(body["messages"])]
    assert sent == [jpeg for _, jpeg in expected]

    before = openai_server.chat_requests  # the same chat in the same work dir: all from the response cache
    again = _chat(tmp_path, episode_work, openai_server, "--persona", "Ross is a shy palaeontologist.",
                  "--once", "How was the museum?")
    assert again.exit_code == 0 and again.stdout == result.stdout
    assert openai_server.chat_requests == before


def test_an_interactive_session_keeps_the_history_and_the_default_persona_quotes_the_character(
        tmp_path, episode_work, openai_server):
    openai_server.handler = _scripted
    for _ in range(2):  # with the frames, then without them: not a text-only model, a failed request
        openai_server.faults.append(Fault("server_error", match=lambda body: "Broken?" in json.dumps(body)))
    result = _chat(tmp_path, episode_work, openai_server,
                   stdin="Broken?\nHow was the museum?\n\nAnd the lecture?\n/quit\n")
    assert result.exit_code == 0, result.output
    assert "the model request failed: server_error" in result.stderr  # reported; the session goes on
    assert "Ross> Answer number 1" in result.stdout and "Ross> Answer number 2" in result.stdout
    failed, failed_text_only, first, second = _chat_bodies(openai_server)
    assert failed["messages"][-1]["content"][-1]["text"] == "Broken?"  # and it is not part of the history
    assert image_parts(failed_text_only["messages"]) == [] and "warning" not in result.stderr
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "user"]
    assert second["messages"][2]["content"] == "Answer number 1: I barely slept, Monica."
    assert second["messages"][3]["content"] == "And the lecture?"
    assert image_parts(second["messages"]) == image_parts(first["messages"])
    assert "Things Ross says" in first["messages"][0]["content"]


def test_a_text_only_server_refusing_the_images_gets_the_conversation_as_text(tmp_path, episode_work,
                                                                              openai_server):
    openai_server.handler = _scripted
    for _ in range(5):  # a text-only server (llama.cpp without a vision projector) answers image parts with 500
        openai_server.faults.append(Fault("server_error", match=lambda body: "image_url" in json.dumps(body)))
    result = _chat(tmp_path, episode_work, openai_server, stdin="How was the museum?\nAnd the lecture?\n/quit\n")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("continuing text-only") == 1
    assert "Ross> Answer number 1" in result.stdout and "Ross> Answer number 2" in result.stdout
    refused, first, second = _chat_bodies(openai_server)  # the images were offered once
    assert len(image_parts(refused["messages"])) == 5
    for body in (first, second):
        assert image_parts(body["messages"]) == []
        assert body["messages"][0] == refused["messages"][0]  # the same system prompt
        assert "\nFrame 1 at " in body["messages"][1]["content"]  # the frames' labels, as text


def test_chat_without_an_endpoint_prepares_offline_then_exits_2_with_a_clear_message(tmp_path, episode_work):
    result = _chat(tmp_path, episode_work, None, "--once", "Hello?", quiet=False)
    assert result.exit_code == 2
    assert "Ross: 5 frames at" in result.stderr  # sampled offline ...
    assert "summary: Present and speaking: " in result.stderr  # ... and the generation stage's extractive summary
    assert "No LLM endpoint is configured" in result.stderr and "base_url" in result.stderr
    assert result.stdout == ""


def test_a_missing_video_file_is_a_clear_error(tmp_path):
    group = click.Group()
    chat_cmds.register(group)
    result = CliRunner().invoke(group, ["chat", "--video", str(tmp_path / "nope.mp4"), "--character", "Ross",
                                        "--once", "Hi"])
    assert result.exit_code == 1 and "video not found" in result.output
