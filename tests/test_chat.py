"""``v60k chat``: the role-play messages (persona, summary, frames in temporal order, history), and the whole
command on a generated episode against the tests' own OpenAI-compatible server."""

from __future__ import annotations

import base64

from v60k.framework.profile import RolePlayProfile, Turn, build_messages, image_parts


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
    assert messages[1]["content"].startswith("(The video's frames, at 0.50, 1.25, 3.50 s,")


def test_a_dialogue_the_character_opens_still_starts_with_a_user_message():
    messages = build_messages(_profile(frames=[]), [Turn("character", "Morning!", "Ross")], "Morning, Ross.")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "(The scene starts.)"


def test_no_persona_gives_a_plain_one_and_no_summary_says_so():
    system = build_messages(_profile(persona="", summary=""), [], "Hi")[0]["content"]
    assert "Ross, one of the people in “central-perk”." in system
    assert "(no summary available)" in system
