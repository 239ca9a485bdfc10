"""Pipeline commands: one per stage, ``run``, ``status`` and ``retry``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from v60k.cli.common import command_config, echo_json, pipeline_options, set_option
from v60k.cli.render import print_plan, print_status, print_summary
from v60k.core import pipeline
from v60k.core.config import Override
from v60k.core.errors import ConfirmationNeeded
from v60k.core.progress import default_progress
from v60k.stages import STAGE_ORDER, STAGE_SUMMARIES

# Stage settings that deserve a flag of their own on the stage's command (all others: --set KEY=VALUE).
STAGE_FLAGS = {"generate": {"batch": "Send requests through the OpenAI Batch API; a later run collects results."}}


def _execute(stages: list[str] | None, manifest: str | None, *, workdir: str, config_path: str | None,
             sets: Sequence[str], workers: int | None, executor: str | None, ray_address: str | None,
             limit: int | None, force: bool, yes: bool, dry_run: bool, strict: bool, quiet: bool, command: str,
             default_section: str | None = None, extra: Sequence[Override] = ()) -> None:
    """Plan the run, print it (``--dry-run``) or check it may go ahead, then execute it."""
    config = command_config(workdir, config_path, sets, default_section, extra)
    the_plan = pipeline.plan(workdir, manifest=manifest, config=config, stages=stages, limit=limit, force=force)
    if dry_run:
        print_plan(the_plan)
        return
    if the_plan.overwrites_llm_output and not (force or yes):
        costly = ", ".join(f"{stage} {n}" for stage, n in the_plan.costly_redo.items() if n)
        raise ConfirmationNeeded(
            f"this config redoes finished work ({the_plan.redo_text()} video(s)) and would overwrite output that "
            f"took LLM requests ({costly} video(s): summaries, dialogues); see `v60k {command} --dry-run`, "
            "and pass --yes (or --force) to go ahead")
    progress = default_progress(quiet)
    try:
        if the_plan.redo_text():
            progress.message(f"settings changed since the last run: redoing {the_plan.redo_text()} video(s)")
        summary = pipeline.execute(the_plan, executor=executor, workers=workers, ray_address=ray_address,
                                   progress=progress, command=command)
    finally:
        progress.close()
    if not quiet:
        print_summary(summary)
    if strict and summary.failed or not summary.shards_ok:
        sys.exit(1)
    if summary.unfinished:
        click.echo(f"{summary.unfinished} item(s) are still waiting for an earlier stage", err=True)
        sys.exit(3)


def _stage_command(name: str) -> click.Command:
    doc = STAGE_SUMMARIES[name]
    takes_manifest = name == "download"
    example = (
        f"v60k {name} videos.csv --workdir ./v60k-work --workers 4"
        if takes_manifest
        else f"v60k {name} --workdir ./v60k-work --config pipelines/demo.yaml"
    )
    help_text = f"{doc}\n\n\b\nExample:\n  {example}"

    flags = STAGE_FLAGS.get(name, {})

    def command(manifest=None, **options):
        extra = [Override(path=(name, flag), value=True) for flag in flags if options.pop(flag, False)]
        _execute([name], manifest, command=name, default_section=name, extra=extra, **options)

    command.__name__ = name
    command = pipeline_options(command)
    command = set_option(f"Override a setting: KEY=VALUE for the {name} section, SECTION.KEY=VALUE for another "
                         "(repeatable).")(command)
    for flag, flag_help in flags.items():
        command = click.option(f"--{flag}", flag, is_flag=True, help=flag_help)(command)
    if takes_manifest:
        command = click.argument("manifest", type=click.Path(dir_okay=False, exists=True))(command)
    else:
        command = click.option("--manifest", type=click.Path(dir_okay=False, exists=True),
                               help="Add these videos to the catalog first.")(command)
    return click.command(name=name, help=help_text)(command)


def _stage_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if not value:
        return None
    names = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in names if s not in STAGE_ORDER]
    if unknown or not names:
        raise click.BadParameter(f"unknown stage(s) {', '.join(map(repr, unknown))}; stages are "
                                 f"{', '.join(STAGE_ORDER)}")
    return names


@click.command(name="run")
@click.argument("manifest", type=click.Path(dir_okay=False, exists=True), required=False)
@pipeline_options
@set_option()
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write the shards here at the end (the config's output.dir).")
@click.option("--stages", "stage_list", default=None, callback=_stage_list,
              help="Comma-separated subset, e.g. download,scenes.")
def run_command(manifest, stage_list, out_dir, **options):
    """Run every stage of the config, in order, over the manifest's videos (resumable).

    \b
    Example:
      v60k run videos.csv --config pipelines/demo.yaml --workdir ./v60k-work
      v60k run --dry-run --workdir ./v60k-work --set scenes.detector=content
      v60k run --config pipelines/video60k.yaml --executor ray --ray-address auto
    """
    extra = [Override(path=("output", "dir"), value=out_dir)] if out_dir else []
    _execute(stage_list, manifest, command="run", extra=extra, **options)


@click.command(name="status")
@click.option("--workdir", "-w", default="./v60k-work", show_default=True, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(workdir, as_json):
    """Per stage: counts by state, per-item outcomes and totals, failures grouped by reason, throughput, usage.

    \b
    Example:
      v60k status --workdir ./v60k-work --json
    """
    data = pipeline.status(workdir)
    echo_json(data) if as_json else print_status(data)


@click.command(name="retry")
@click.option("--workdir", "-w", default="./v60k-work", show_default=True, type=click.Path(file_okay=False))
@click.option("--stage", type=click.Choice(list(STAGE_ORDER)), default=None, help="Only this stage's failures.")
def retry_command(workdir, stage):
    """Re-queue failed items; the next `v60k run` (or stage command) processes them again.

    \b
    Example:
      v60k retry --stage download --workdir ./v60k-work && v60k run --workdir ./v60k-work
    """
    n = pipeline.retry(workdir, stage)
    click.echo(f"re-queued {n} failed item(s)")


def register(group: click.Group) -> None:
    for name in STAGE_ORDER:
        group.add_command(_stage_command(name))
    for command in (run_command, status_command, retry_command):
        group.add_command(command)
