"""Errors v60k reports to its user, and the names of failure classes.

Every error meant for a user derives from ``V60kError``: the command line catches it in one place and prints
one line (exit code ``exit_code``: 2 for a usage or config mistake, 1 for a run that could not go on). Messages
pass through ``redact`` there, so no secret or value of an expanded ``${ENV}`` variable is ever echoed.

The failure-class names (``error_class`` of a catalog row, what ``status`` groups by) are constants here so that
one failure has one name wherever it is detected.
"""

from __future__ import annotations

import os

# ------------------------------------------------------------------------------------------ exceptions


class V60kError(Exception):
    """The root of every error v60k reports as one line: a run that could not go on (exit code 1)."""

    exit_code: int = 1


class UsageError(V60kError):
    """A mistake in what the user asked for: flags, arguments, a config file (exit code 2)."""

    exit_code = 2


class ConfigError(UsageError, ValueError):
    """A config that cannot be used, with a message naming the file (or --set), the section and the key."""


class WorkDirError(V60kError):
    """A work dir that cannot be used as it is: not writable, disk full, a damaged catalog."""


class ConfirmationNeeded(UsageError):
    """The command would redo finished work it cannot get back (LLM output): it needs --force or --yes."""


# ------------------------------------------------------------------------------------------ failure classes
# A row's error_class. One failure, one name: stages raise StageError / SkipVideo with these.

MISSING_INPUT = "missing_input"  # an earlier stage's file is absent (the downloaded source, audio.wav, ...)
BAD_INPUT = "bad_input"  # an earlier stage's file exists but cannot be read (invalid JSON, wrong shape)
NOT_A_VIDEO = "not_a_video"  # no video stream: audio only, a web page, a text file
NO_AUDIO = "no_audio"  # a video without an audio stream (skipped by the speech stages)
DECODE_FAILED = "decode_failed"  # ffmpeg could not decode the media
BAD_MEDIA = "bad_media"  # any other unusable media file
UPSTREAM_FAILED = "upstream_failed"  # an input stage failed: this one is skipped
EXPANDED = "expanded"  # a playlist row: its entries became videos of their own
WORKER_CRASHED = "worker_crashed"  # the worker process died while processing the video
NO_RESOURCES = "no_resources"  # the cluster can never place a worker of the stage

# names that mean the same as a canonical one: the driver records the canonical name (stages should raise it)
ALIASES: dict[str, str] = {
    "missing_source": MISSING_INPUT,
    "no_video_stream": NOT_A_VIDEO,
    "no_streams": NOT_A_VIDEO,
}


def canonical(error_class: str | None) -> str | None:
    """The canonical name of a failure class (itself when it has no alias)."""
    return ALIASES.get(error_class, error_class) if error_class else error_class


# ------------------------------------------------------------------------------------------ redaction

# environment variables whose values are secrets wherever they turn up
SECRET_ENV = ("OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_MIN_REDACTED = 4  # shorter values ("1", "cpu") are not searched for inside text: they would mangle it
_sensitive: dict[str, str] = {}  # value -> what replaces it


def register_sensitive(value: str | None, name: str) -> None:
    """Never show ``value`` again: ``redact`` replaces it with ``${name}``."""
    if value and len(value) >= _MIN_REDACTED:
        _sensitive.setdefault(value, f"${{{name}}}")


def redact(text: str, extra_env: tuple[str, ...] = ()) -> str:
    """``text`` with every registered value, and the values of the secret environment variables, replaced by
    their ``${NAME}`` reference (longest first, so a value inside another is not half-replaced)."""
    for name in (*SECRET_ENV, *extra_env):
        register_sensitive(os.environ.get(name), name)
    for value in sorted(_sensitive, key=len, reverse=True):
        if value in text:
            text = text.replace(value, _sensitive[value])
    return text

