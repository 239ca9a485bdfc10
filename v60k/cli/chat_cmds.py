"""``v60k chat``: talk to a character of a video (frames, summary context and persona sent to any
OpenAI-compatible model)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from typing import Any

import click

from v60k.cli.common import command_config, friendly_errors, set_option
from v60k.core.workdir import WorkDir

NO_ENDPOINT_EXIT = 2


def no_endpoint(what: str) -> None:
    """Exit 2 explaining how to configure an LLM endpoint."""
    click.echo(
        f"No LLM endpoint is configured, so {what} cannot ask a model. Give a config file (--config) whose "
        "`llm:` section sets base_url (any OpenAI-compatible server) and model; the API key is read from the "
        "environment variable named by llm.api_key_env (default OPENAI_API_KEY).",
        err=True,
    )
    sys.exit(NO_ENDPOINT_EXIT)


@click.command("chat")
@click.option("--video", required=True, help="A video file or URL.")
@click.option("--character", required=True, help="The character to talk to.")
@click.option("--persona", default=None, help="The character's persona (default: built from their lines in the video).")
@click.option("--cast", default=None, help="The video's cast for speaker attribution, 'A;B;C' (default: the character).")
@click.option("--once", "question", default=None, help="Ask one question, print the answer and exit.")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False, exists=True),
              help="Pipeline YAML: its llm section (endpoint, model) and speech stage settings.")
@click.option("--model", default=None, help="The vision model to talk to (default: the config's llm model).")
@click.option("--workdir", "-w", type=click.Path(file_okay=False), default=None,
              help="Keep the video's stage outputs here and reuse them next time (default: a temporary dir).")
@click.option("--max-frames", type=int, default=8, show_default=True, help="Frames sent with the conversation.")
@click.option("--text-only", is_flag=True, help="The model takes no images: send the summary and frame times only.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@set_option()
@friendly_errors
def chat_command(video, character, persona, cast, question, config_path, model, workdir, max_frames, text_only, quiet,
                 sets):
    """Talk to a character of a video: frames in temporal order + a summary context of the video's transcript
    + the character's persona, sent to any OpenAI-compatible vision model.

    \b
    Example:
      v60k chat --video episode.mp4 --character Ross --config pipelines/chat.yaml
      v60k chat --video episode.mp4 --character Ross --once "How was the museum?"
    """
    from v60k.core.progress import default_progress
    from v60k.roleplay import chat

    config = command_config(workdir, config_path, sets)
    cast_list = [c.strip() for c in (cast or "").split(";") if c.strip()] or [character]
    if character not in cast_list:
        cast_list.append(character)
    with contextlib.ExitStack() as stack:
        root = workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="v60k-chat-"))
        progress = default_progress(quiet)
        try:
            prepared = chat.prepare_video(video, cast_list, WorkDir(root), config, progress)
        except chat.ChatError as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            progress.close()
        client = chat.make_client(config, WorkDir(root))
        loop = asyncio.new_event_loop()  # one loop for the whole session: the client's connections live on it
        try:
            profile = loop.run_until_complete(
                chat.build_profile(prepared, character, persona, max_frames=max_frames, client=client))
            for note in prepared.notes:
                click.echo(f"note: {note}", err=True)
            if not quiet:
                click.echo(f"{character}: {len(profile.frames)} frames at "
                           f"{', '.join(f'{t:.1f}' for t in profile.frame_times)} s; summary: {profile.summary}",
                           err=True)
            if client is None:
                no_endpoint("chat")
            if not (model or client.settings.model):
                raise click.UsageError("no model: pass --model or set llm.model in the config")
            session = chat.ChatSession(profile, client, model=model, vision=not text_only)
            _converse(loop, session, question)
        finally:
            if client is not None:
                loop.run_until_complete(client.aclose())
                client.close()
            loop.close()


def _converse(loop: asyncio.AbstractEventLoop, session: Any, question: str | None) -> None:
    """``--once``: one answer on stdout (exit 1 when the request fails). Otherwise an interactive session until
    /quit or end of input; a failed request is reported and the conversation goes on."""
    from v60k.backends.llm import LLMError

    def answer(text: str) -> str | None:
        shown = len(session.warnings)
        try:
            return loop.run_until_complete(session.ask(text))
        except LLMError as exc:
            click.echo(f"the model request failed: {exc}", err=True)
            return None
        finally:
            for warning in session.warnings[shown:]:
                click.echo(f"warning: {warning}", err=True)

    if question is not None:
        reply = answer(question)
        if reply is None:
            sys.exit(1)
        click.echo(reply)
        return
    click.echo(f"Talking to {session.profile.character}. /quit or Ctrl-D to end.", err=True)
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            click.echo("", err=True)
            return
        if text in ("/quit", "/exit"):
            return
        if text and (reply := answer(text)) is not None:
            click.echo(f"{session.profile.character}> {reply}")


def register(group: click.Group) -> None:
    group.add_command(chat_command)
