"""Framework commands: ``chat`` (talk to a character of a video) and ``eval`` (the eight-metric evaluation)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from v60k.cli.common import command_config, echo_json, friendly_errors, set_option
from v60k.config import PipelineConfig
from v60k.workdir import WorkDir, write_json

NO_ENDPOINT_EXIT = 2


def _config(path: str | None, sets: tuple[str, ...], workdir: str | None) -> PipelineConfig:
    return command_config(workdir, path, sets)


def _no_endpoint(what: str) -> None:
    click.echo(
        f"No LLM endpoint is configured, so {what} cannot ask a model. Give a config file (--config) whose "
        "`llm:` section sets base_url (any OpenAI-compatible server) and model; the API key is read from the "
        "environment variable named by llm.api_key_env (default OPENAI_API_KEY).",
        err=True,
    )
    sys.exit(NO_ENDPOINT_EXIT)


# ------------------------------------------------------------------------------------------------ chat


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
    from v60k.framework import chat
    from v60k.progress import default_progress

    config = _config(config_path, sets, workdir)
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
                _no_endpoint("chat")
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
        try:
            return loop.run_until_complete(session.ask(text))
        except LLMError as exc:
            click.echo(f"the model request failed: {exc}", err=True)
            return None

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


# ------------------------------------------------------------------------------------------------ eval


@click.command("eval")
@click.option("--shards", required=True, type=click.Path(file_okay=False, exists=True),
              help="The corpus's shard dir (DIR/data/<table>/<split>-*.parquet).")
@click.option("--model", required=True, help="The model under test.")
@click.option("--judge", default=None, help="The judge model (default: the config's llm model).")
@click.option("--limit", type=int, default=None, help="Only the first N test dialogues (by dialogue_id).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the results JSON here.")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False, exists=True),
              help="Pipeline YAML: its llm section (endpoint, key, concurrency, cache).")
@click.option("--workdir", "-w", default="./v60k-work", show_default=True, type=click.Path(file_okay=False),
              help="Where the LLM response cache lives: a re-run repeats no request.")
@click.option("--split", default="test", show_default=True, help="The split to evaluate on.")
@click.option("--rubric", default="eval-rubric-v1", show_default=True, help="Rubric version or YAML file.")
@click.option("--max-frames", type=int, default=8, show_default=True, help="Frames per clip sent to the model.")
@click.option("--text-only", is_flag=True, help="The model under test takes no images.")
@click.option("--concurrency", type=int, default=8, show_default=True, help="Turns evaluated at once.")
@click.option("--json", "as_json", is_flag=True, help="Print the results JSON instead of the table.")
@set_option()
@friendly_errors
def eval_command(shards, model, judge, limit, out, config_path, workdir, split, rubric, max_frames, text_only,
                 concurrency, as_json, sets):
    """Evaluate a role-play model on the test split: it answers every user turn (frames + summary + persona,
    as in chat), and an LLM judge scores its answer and the reference answer on the eight metrics of the
    rubric. A metric's score is the mean model/reference ratio over valid judgements.

    \b
    Example:
      v60k eval --shards corpus/ --model my-roleplay-model --judge gpt-4o --out results.json
    """
    from v60k.framework import chat, evaluate

    config = _config(config_path, sets, workdir)
    rubric_obj = evaluate.Rubric.load(rubric)
    items = evaluate.load_test_items(shards, split=split, limit=limit, max_frames=max_frames)
    client = chat.make_client(config, WorkDir(workdir).create())
    if client is None:
        _no_endpoint("eval")
    judge = judge or chat.configured_model(config)
    if not judge:
        raise click.UsageError("no judge model: pass --judge or set llm.model in the config")
    llm = client.settings
    prices = (llm.price_input_per_1m, llm.price_output_per_1m)
    settings = evaluate.EvalSettings(model=model, judge=judge, vision=not text_only, concurrency=concurrency,
                                     model_prices=prices, judge_prices=prices)

    async def _run() -> dict[str, Any]:
        try:
            return await evaluate.evaluate_items(items, rubric_obj, client, client, settings)
        finally:
            await client.aclose()

    try:
        results = asyncio.run(_run())
    finally:
        client.close()
    if out:
        write_json(Path(out), results)
    if as_json:
        echo_json(results)
    else:
        print_results(results, out)


def print_results(results: dict[str, Any], out: str | None = None) -> None:
    """The results as a terminal table: one row per metric, then overall, drops and usage."""
    console = Console(soft_wrap=False, width=120)
    table = Table(title=f"{results['model']} judged by {results['judge']} ({results['rubric_version']})",
                  title_justify="left")
    for column, justify in (("metric", "left"), ("model/ref", "right"), ("model", "right"),
                            ("reference", "right"), ("valid", "right"), ("dropped", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]

    def fmt(value: float | None, digits: int) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    for name, metric in results["metrics"].items():
        table.add_row(metric.get("title", name), fmt(metric["ratio"], 3), fmt(metric["model_mean"], 2),
                      fmt(metric["reference_mean"], 2), str(metric["n_valid"]), str(metric["n_dropped"]))
    table.add_section()
    table.add_row("overall", fmt(results["overall"], 3), "", "", "", "")
    console.print(table)
    console.print(f"{results.get('n_turns', 0)} turns of {results.get('n_dialogues', 0)} dialogues; "
                  f"{len(results['dropped'])} dropped judgement(s)")
    for drop in results["dropped"][:10]:
        metric = f" {drop['metric']}" if drop.get("metric") else ""
        console.print(f"  dropped {drop['dialogue_id']} turn {drop['turn']}{metric}: {drop['reason']}", markup=False)
    usage = results.get("usage", {})
    console.print(f"requests {usage.get('requests', 0)} (cached {usage.get('cached', 0)}), tokens "
                  f"{usage.get('prompt_tokens', 0)} in / {usage.get('completion_tokens', 0)} out, "
                  f"cost ${usage.get('cost_usd', 0):.4f}")
    if out:
        console.print(f"results: {out}")


def register(group: click.Group) -> None:
    group.add_command(chat_command)
    group.add_command(eval_command)
