"""``v60k export-sft``: SFT conversations from the corpus shards, for LLaMA-Factory and TRL."""

from __future__ import annotations

import json

import click

from v60k.roleplay.format import PERSONA_LINES
from v60k.roleplay.sft_export import ExportError, ExportSettings, export_sft


@click.command("export-sft")
@click.option(
    "--shards",
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="Corpus directory holding data/<table>/<split>-NNNNN-of-NNNNN.parquet.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option(
    "--max-frames",
    type=click.IntRange(min=0),
    default=None,
    help="At most this many frames per clip (evenly in time); default all the shards hold.",
)
@click.option(
    "--persona-lines",
    type=click.IntRange(min=0),
    default=PERSONA_LINES,
    show_default=True,
    help="Characteristic lines quoted in each persona.",
)
@click.option("--text-only", is_flag=True, help="Leave the frames out even when the shards have them.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def export_sft_cmd(
    shards: str, out: str, max_frames: int | None, persona_lines: int, text_only: bool, as_json: bool
) -> None:
    """Write role-play SFT conversations: LLaMA-Factory sharegpt (+ dataset_info.json) and TRL messages.

    \b
    Rendered exactly as `v60k chat` and `v60k eval` ask a model (prompt roleplay-v1): the system prompt with the
    character's persona and the clip summary (static profile); the first user turn carries the clip's frames in
    temporal order, each labelled with its time (dynamic profile); assistant turns are the character's lines.
    Example:
      v60k export-sft --shards demo-work/corpus --out sft
    """
    settings = ExportSettings(
        max_frames=max_frames, persona_lines=persona_lines, include_frames=not text_only
    )
    try:
        summary = export_sft(shards, out, settings)
    except ExportError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=1))
    else:
        for line in summary.lines():
            click.echo(line)


def register(group: click.Group) -> None:
    group.add_command(export_sft_cmd)
