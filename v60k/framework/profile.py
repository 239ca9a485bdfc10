"""The role-play prompt: a character's static profile (persona + the video's summary context) and dynamic
profile (frames in temporal order) turned into OpenAI chat messages. ``v60k chat`` and ``v60k eval`` share it.

    profile = RolePlayProfile(character="Ross", persona="...", summary="...", frames=[(1.2, jpeg), ...])
    messages = build_messages(profile, history=[], question="How was the museum?", vision=True)

The system message holds the role-play prompt (``pipelines/prompts/roleplay-v1.md``) with the persona and the
summary; the frames are image parts of the first user message, each preceded by its time, so that every
OpenAI-compatible vision server gets them in the same, temporal, order. Text-only models get the frame times only.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from v60k.stages.generate import Prompt

ROLEPLAY_PROMPT_VERSION = "roleplay-v1"


@dataclass(frozen=True)
class Turn:
    """One turn of a dialogue: ``role`` is "user" or "character" (the corpus's turn roles)."""

    role: str
    text: str
    speaker: str | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Turn:
        return cls(role=str(record["role"]), text=str(record.get("text") or ""), speaker=record.get("speaker"))


@dataclass
class RolePlayProfile:
    """What the role-playing model gets: who it plays, the persona, the summary context and the frames."""

    character: str
    persona: str = ""
    summary: str = ""
    frames: list[tuple[float, bytes]] = field(default_factory=list)
    title: str | None = None

    def __post_init__(self) -> None:
        self.frames = sorted(self.frames, key=lambda frame: frame[0])  # the dynamic profile is temporal

    @property
    def frame_times(self) -> list[float]:
        return [round(t, 3) for t, _ in self.frames]


def default_persona(character: str, title: str | None = None, lines: Iterable[str] = ()) -> str:
    """A plain persona when none is given: who the character is and, when known, a few of their own lines."""
    where = f" in “{title}”" if title else ""
    text = f"{character}, one of the people{where}."
    quoted = [line.strip() for line in lines if line and line.strip()]
    if quoted:
        text += f" Things {character} says:\n" + "\n".join(f"- “{line}”" for line in quoted)
    return text


def prompt_messages(profile: RolePlayProfile, prompt: Prompt | None = None) -> tuple[str, str]:
    """(system prompt, frames caption) of the role-play prompt file for ``profile``."""
    prompt = prompt or Prompt.load(ROLEPLAY_PROMPT_VERSION)
    system, caption = prompt.messages(
        character=profile.character,
        title=profile.title or "the video",
        persona=profile.persona.strip() or default_persona(profile.character, profile.title),
        summary=profile.summary.strip() or "(no summary available)",
        frame_count=len(profile.frames),
    )
    return system["content"].strip(), caption["content"].strip()


def image_data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def frame_parts(frames: Sequence[tuple[float, bytes]], caption: str, detail: str | None = None) -> list[dict[str, Any]]:
    """Chat content parts for the frames: the caption, then per frame its time and the image, in temporal order."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": caption}]
    for index, (t, jpeg) in enumerate(frames, start=1):
        image: dict[str, Any] = {"url": image_data_url(jpeg)}
        if detail:
            image["detail"] = detail
        parts.append({"type": "text", "text": f"Frame {index} at {t:.2f} s"})
        parts.append({"type": "image_url", "image_url": image})
    return parts


def _user_text(turn: Turn, character: str) -> str:
    speaker = (turn.speaker or "").strip()
    if speaker and speaker.lower() not in ("user", character.lower()):
        return f"{speaker}: {turn.text}"
    return turn.text


def build_messages(
    profile: RolePlayProfile,
    history: Sequence[Turn],
    question: str | Turn,
    *,
    vision: bool = True,
    detail: str | None = None,
    prompt: Prompt | None = None,
) -> list[dict[str, Any]]:
    """OpenAI chat messages for the character's next answer to ``question`` after ``history``.

    History turns of the character become assistant messages; consecutive turns of the same side are merged
    (servers with strict chat templates want user/assistant alternation). The frames ride on the first user
    message — image parts with ``vision``, their times only without.
    """
    last = question if isinstance(question, Turn) else Turn("user", question)
    exchanges: list[dict[str, Any]] = []
    for turn in [*history, last]:
        role = "assistant" if turn.role == "character" else "user"
        text = turn.text if role == "assistant" else _user_text(turn, profile.character)
        if exchanges and exchanges[-1]["role"] == role:
            exchanges[-1]["text"] += "\n" + text
        else:
            exchanges.append({"role": role, "text": text})
    if exchanges[0]["role"] != "user":  # a conversation the character opened: the scene is the first user turn
        exchanges.insert(0, {"role": "user", "text": "(The scene starts.)"})

    system, caption = prompt_messages(profile, prompt)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for index, exchange in enumerate(exchanges):
        if index == 0 and profile.frames and vision:
            content: Any = [*frame_parts(profile.frames, caption, detail), {"type": "text", "text": exchange["text"]}]
        elif index == 0 and profile.frames:
            times = ", ".join(f"{t:.2f}" for t in profile.frame_times)
            content = f"(The video's frames, at {times} s, are summarized in the context above.)\n{exchange['text']}"
        else:
            content = exchange["text"]
        messages.append({"role": exchange["role"], "content": content})
    return messages


def image_parts(messages: Sequence[dict[str, Any]]) -> list[str]:
    """The image URLs of ``messages`` in order (what a request actually carried)."""
    urls: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            urls += [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
    return urls
