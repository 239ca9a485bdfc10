"""The role-play format: how a character's conversation is rendered for a model, the same way for training
(``v60k export-sft``), inference (``v60k chat``) and evaluation (``v60k eval``).

    profile = RolePlayProfile(character="Ross", persona="...", summary="...", frames=[(1.2, jpeg), ...])
    conversation = Conversation.of(profile, turns)              # system prompt, frames, merged turns
    messages = conversation.openai_messages(vision=True)       # chat and eval
    record = conversation.sharegpt(image_paths)                # the SFT export (LLaMA-Factory); .trl(...) for TRL

- the system prompt is the ``[system]`` part of the versioned prompt file ``roleplay-v1``
  (``v60k/prompts/roleplay-v1.md``) with the character, the title, the persona (``persona_text``) and the
  summary context: the static profile;
- the frames (the dynamic profile) open the first user turn, in temporal order: the prompt's ``[user]`` caption,
  then per frame its label ``Frame i at t s`` and the image (an image part, or LLaMA-Factory's ``<image>``);
  without frames there is no caption; a text-only model gets the labels without the images;
- turns (``merge_turns``) alternate user / assistant: the character's turns are the assistant's, the others'
  are the user's with the speaker named ("Monica: ..."), consecutive turns of one side joined.

``evenly_spaced`` is the one way frames are thinned out to a budget (the ends kept, temporal order kept);
``frames_for_character`` is the one way a character's conversation chooses its clip's frames: the frame nearest
each of the character's lines first, the rest evenly over the clip.
"""

from __future__ import annotations

import base64
import hashlib
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"  # also reachable as pipelines/prompts/
ROLEPLAY_PROMPT_VERSION = "roleplay-v1"
IMAGE_TOKEN = "<image>"  # LLaMA-Factory's image placeholder
SCENE_OPENING = "(The scene starts.)"  # the user turn before a conversation the character opens
PERSONA_LINES = 8  # the character's own lines quoted in a persona
_HEADER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)
T = TypeVar("T")


# ------------------------------------------------------------------------------------------------ prompt file
@dataclass(frozen=True)
class Prompt:
    """A versioned prompt file: a ``---`` header (``version: ...``), then ``[system]`` and ``[user]`` parts
    with ``$name`` placeholders."""

    version: str
    system: str
    user: str
    sha256: str

    @classmethod
    def load(cls, name: str, prompts_dir: Path | None = None) -> Prompt:
        """A prompt by version name (``summary-v1``: ``v60k/prompts/summary-v1.md``) or by a ``.md`` file path."""
        path = Path(name).expanduser() if name.endswith(".md") else (prompts_dir or PROMPTS_DIR) / f"{name}.md"
        if not path.exists():
            raise FileNotFoundError(f"prompt file not found: {path}")
        text = path.read_text(encoding="utf-8")
        header = _HEADER.match(text)
        version = re.search(r"^version:\s*(\S+)\s*$", header.group(1), re.MULTILINE) if header else None
        if not header or not version or "[system]\n" not in text or "[user]\n" not in text:
            raise ValueError(f"{path}: expected a '---' header with 'version:', then [system] and [user] parts")
        body = text[header.end():]
        system, user = body.split("[user]\n", 1)
        return cls(version.group(1), system.replace("[system]\n", "", 1).strip(), user.strip(),
                   hashlib.sha256(text.encode()).hexdigest())

    def messages(self, **values: Any) -> list[dict[str, Any]]:
        fill = {k: "" if v is None else str(v) for k, v in values.items()}
        return [{"role": "system", "content": string.Template(self.system).substitute(fill)},
                {"role": "user", "content": string.Template(self.user).substitute(fill)}]


# ------------------------------------------------------------------------------------------------ pieces
def evenly_spaced(items: Sequence[T], limit: int | None) -> list[T]:
    """At most ``limit`` of ``items``, evenly spread over them, first and last kept, order kept.
    ``None`` keeps all; ``0`` keeps none."""
    items = list(items)
    if limit is None or len(items) <= limit:
        return items
    if limit <= 0:
        return []
    if limit == 1:
        return [items[len(items) // 2]]
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def frames_for_character(frames: Sequence[tuple[float, T]], limit: int | None,
                         line_spans: Iterable[tuple[float, float]] = ()) -> list[tuple[float, T]]:
    """At most ``limit`` of the ``(t_s, image)`` frames for a character whose lines span ``line_spans``
    (``(start_s, end_s)``): the frame nearest each line (inside it, else closest to it; as many as fit, spread
    over the lines), then the rest ``evenly_spaced`` over the clip; temporal order. Without line spans it is
    ``evenly_spaced``, so that a high-motion stretch sampled densely does not crowd out where the character speaks."""
    ordered = sorted(frames, key=lambda frame: frame[0])
    if limit is None or len(ordered) <= limit:
        return ordered
    if limit <= 0:
        return []
    times = [float(t) for t, _ in ordered]

    def nearest(span: tuple[float, float]) -> int:
        start, end = sorted((float(span[0]), float(span[1])))
        middle = (start + end) / 2
        return min(range(len(times)), key=lambda i: (max(start - times[i], times[i] - end, 0.0),
                                                      abs(times[i] - middle), i))

    spans = sorted((s for s in line_spans if s[0] is not None and s[1] is not None), key=lambda s: (s[0], s[1]))
    at_lines = evenly_spaced(sorted({nearest(span) for span in spans}), limit)
    taken = set(at_lines)
    rest = [i for i in range(len(ordered)) if i not in taken]
    chosen = sorted([*at_lines, *evenly_spaced(rest, limit - len(at_lines))])
    return [ordered[i] for i in chosen]


@dataclass(frozen=True)
class Turn:
    """One turn of a dialogue: ``role`` is "user" or "character" (the corpus's turn roles)."""

    role: str
    text: str
    speaker: str | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Turn:
        return cls(role=str(record["role"]), text=str(record.get("text") or ""), speaker=record.get("speaker"))


def merge_turns(turns: Iterable[Turn], character: str) -> list[tuple[str, str]]:
    """(``user`` | ``assistant``, text) alternating, starting with ``user``.

    The character's turns are the assistant's; another speaker's turn is the user's, named ("Monica: ...")
    unless it is the anonymous user; empty turns are dropped; consecutive turns of one side are joined by a
    newline; a conversation the character opens gets ``SCENE_OPENING`` as its first user turn."""
    merged: list[tuple[str, str]] = []
    for turn in turns:
        text = " ".join(str(turn.text or "").split())
        if not text:
            continue
        role = "assistant" if turn.role == "character" else "user"
        speaker = (turn.speaker or "").strip()
        if role == "user" and speaker and speaker.lower() not in ("user", character.lower()):
            text = f"{speaker}: {text}"
        if merged and merged[-1][0] == role:
            merged[-1] = (role, f"{merged[-1][1]}\n{text}")
        else:
            merged.append((role, text))
    if merged and merged[0][0] == "assistant":
        merged.insert(0, ("user", SCENE_OPENING))
    return merged


def persona_text(character: str, title: str | None = None, lines: Iterable[str] = ()) -> str:
    """The persona when none is written: who the character is and, when known, some of their own lines."""
    where = f" in “{title}”" if title else ""
    text = f"{character}, one of the people{where}."
    quoted = [" ".join(line.split()) for line in lines if line and line.strip()]
    if quoted:
        text += f" Things {character} says:\n" + "\n".join(f"- “{line}”" for line in quoted)
    return text


def frame_label(index: int, t_s: float) -> str:
    """The text before the ``index``-th frame (from 1): its time in seconds from the start of the video."""
    return f"Frame {index} at {t_s:.2f} s"


def image_data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


# ------------------------------------------------------------------------------------------------ profile
@dataclass
class RolePlayProfile:
    """What the role-playing model gets: who it plays, the persona, the summary context and the frames
    (``(t_s, image)`` where the image is JPEG bytes or a path; kept in temporal order)."""

    character: str
    persona: str = ""
    summary: str = ""
    frames: list[tuple[float, Any]] = field(default_factory=list)
    title: str | None = None

    def __post_init__(self) -> None:
        self.frames = sorted(self.frames, key=lambda frame: frame[0])  # the dynamic profile is temporal

    @property
    def frame_times(self) -> list[float]:
        return [round(t, 3) for t, _ in self.frames]

    def prompt_texts(self, prompt: Prompt | None = None) -> tuple[str, str]:
        """(system prompt, frames caption) of the role-play prompt file."""
        prompt = prompt or Prompt.load(ROLEPLAY_PROMPT_VERSION)
        system, caption = prompt.messages(
            character=self.character,
            title=self.title or "the video",
            persona=self.persona.strip() or persona_text(self.character, self.title),
            summary=self.summary.strip() or "(no summary available)",
            frame_count=len(self.frames),
        )
        return system["content"].strip(), caption["content"].strip()


# ------------------------------------------------------------------------------------------------ rendering
@dataclass
class Conversation:
    """One rendered conversation: the system prompt, the frames' caption and labels, and the merged turns."""

    system: str
    caption: str
    frames: list[tuple[float, Any]]
    turns: list[tuple[str, str]]  # merge_turns: (user | assistant, text), starting with user

    @classmethod
    def of(cls, profile: RolePlayProfile, turns: Iterable[Turn], prompt: Prompt | None = None) -> Conversation:
        system, caption = profile.prompt_texts(prompt)
        return cls(system, caption, list(profile.frames), merge_turns(turns, profile.character))

    @property
    def frame_labels(self) -> list[str]:
        return [frame_label(i, t) for i, (t, _) in enumerate(self.frames, start=1)]

    def trimmed(self) -> Conversation:
        """The conversation ending with the character's turn (a trailing user turn is dropped): for training."""
        turns = list(self.turns)
        while turns and turns[-1][0] == "user":
            turns.pop()
        return Conversation(self.system, self.caption, self.frames, turns)

    # -- chat and eval: OpenAI chat messages
    def openai_messages(self, *, vision: bool = True, detail: str | None = None) -> list[dict[str, Any]]:
        """System, then user / assistant messages; the frames open the first user message: image parts with
        ``vision``, their labels only without."""
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system}]
        for index, (role, text) in enumerate(self.turns):
            content: Any = text
            if index == 0 and self.frames:
                parts: list[dict[str, Any]] = [{"type": "text", "text": self.caption}]
                for label, (_, image) in zip(self.frame_labels, self.frames, strict=True):
                    parts.append({"type": "text", "text": label})
                    if vision:
                        url: dict[str, Any] = {"url": _image_url(image)}
                        if detail:
                            url["detail"] = detail
                        parts.append({"type": "image_url", "image_url": url})
                parts.append({"type": "text", "text": text})
                content = parts if vision else "\n".join(p["text"] for p in parts)
            messages.append({"role": role, "content": content})
        return messages

    # -- the SFT export
    def _first_user_text(self, image_marker: str) -> str:
        lines = [self.caption, *(f"{label}: {image_marker}" for label in self.frame_labels)] if self.frames else []
        return "\n".join([*lines, self.turns[0][1]])

    def sharegpt(self, images: Sequence[str]) -> dict[str, Any]:
        """LLaMA-Factory sharegpt: ``<image>`` after each frame label; ``images`` are the frames' files."""
        assert len(images) == len(self.frames), "one image file per frame"
        messages = [{"role": "system", "content": self.system}]
        for index, (role, text) in enumerate(self.turns):
            messages.append({"role": role, "content": self._first_user_text(IMAGE_TOKEN) if index == 0 else text})
        record: dict[str, Any] = {"messages": messages}
        if images:
            record["images"] = list(images)
        return record

    def trl(self, images: Sequence[str]) -> dict[str, Any]:
        """TRL chat format: content parts; each frame's label text part is followed by its image part."""
        assert len(images) == len(self.frames), "one image file per frame"
        messages: list[dict[str, Any]] = [{"role": "system", "content": [{"type": "text", "text": self.system}]}]
        for index, (role, text) in enumerate(self.turns):
            parts: list[dict[str, Any]] = []
            if index == 0 and self.frames:
                parts.append({"type": "text", "text": self.caption})
                for label in self.frame_labels:
                    parts += [{"type": "text", "text": label}, {"type": "image"}]
            parts.append({"type": "text", "text": text})
            messages.append({"role": role, "content": parts})
        return {"messages": messages, "images": list(images)}


def _image_url(image: Any) -> str:
    if isinstance(image, (bytes, bytearray)):
        return image_data_url(bytes(image))
    return image_data_url(Path(image).read_bytes())


def build_messages(
    profile: RolePlayProfile,
    history: Sequence[Turn],
    question: str | Turn,
    *,
    vision: bool = True,
    detail: str | None = None,
    prompt: Prompt | None = None,
) -> list[dict[str, Any]]:
    """OpenAI chat messages for the character's next answer to ``question`` after ``history``."""
    last = question if isinstance(question, Turn) else Turn("user", question)
    return Conversation.of(profile, [*history, last], prompt).openai_messages(vision=vision, detail=detail)


def image_parts(messages: Sequence[dict[str, Any]]) -> list[str]:
    """The image URLs of ``messages`` in order (what a request actually carried)."""
    urls: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            urls += [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
    return urls


def without_images(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with every image part left out and the remaining text parts joined (a text-only model)."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = "\n".join(p["text"] for p in content if p.get("type") == "text")
        out.append({**message, "content": content})
    return out
