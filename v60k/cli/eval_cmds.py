"""``v60k eval``: the eight-metric role-play evaluation of a model on a split of the corpus."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from v60k.cli.chat_cmds import no_endpoint
from v60k.cli.common import command_config, echo_json, friendly_errors, set_option
from v60k.core.workdir import WorkDir, write_json

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
    from v60k.roleplay import chat, evaluate

    config = command_config(workdir, config_path, sets)
    rubric_obj = evaluate.Rubric.load(rubric)
    try:
        items = evaluate.load_test_items(shards, split=split, limit=limit, max_frames=max_frames)
    except evaluate.NoDialogues as exc:
        raise click.ClickException(str(exc)) from exc
    if not as_json:
        click.echo(f"evaluating on the {split!r} split: {len(items)} character turn(s) of "
                   f"{len({i.dialogue_id for i in items})} dialogue(s)", err=True)
    client = chat.make_client(config, WorkDir(workdir).create())
    if client is None:
        no_endpoint("eval")
    judge = judge or chat.configured_model(config)
    if not judge:
        raise click.UsageError("no judge model: pass --judge or set llm.model in the config")
    llm = client.settings
    prices = (llm.price_input_per_1m, llm.price_output_per_1m)
    settings = evaluate.EvalSettings(model=model, judge=judge, vision=not text_only, concurrency=concurrency,
                                     model_prices=prices, judge_prices=prices)

    async def _run() -> dict[str, Any]:
        try:
            return await evaluate.evaluate_items(items, rubric_obj, client, client, settings, split=split)
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
    on = f" on the {results['split']!r} split" if results.get("split") else ""
    table = Table(title=f"{results['model']} judged by {results['judge']} ({results['rubric_version']}){on}",
                  title_justify="left")
    for column, justify in (("metric", "left"), ("model/ref", "right"), ("model", "right"),
                            ("reference", "right"), ("valid", "right"), ("dropped", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]

    def fmt(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"  # no valid judgement: never a 0

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
    group.add_command(eval_command)
