"""Pipeline commands: one per stage, ``run``, ``status`` and ``retry``."""

from __future__ import annotations

import sys

import click

from v60k import pipeline
from v60k.cli.common import echo_json, friendly_errors, pipeline_options
from v60k.cli.render import print_status, print_summary
from v60k.progress import default_progress
from v60k.stages import STAGE_ORDER, STAGE_SUMMARIES

# Stage settings that deserve a flag of their own on the stage's command (all others: --set KEY=VALUE).
STAGE_FLAGS = {"generate": {"batch": "Send requests through the OpenAI Batch API; a later run collects results."}}


def _parse_sets(values: tuple[str, ...]) -> dict[str, object]:
    """--set key=value pairs; values parsed as YAML scalars (true, 3, 0.5, text)."""
    import yaml

    parsed: dict[str, object] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        parsed[key.strip()] = yaml.safe_load(raw)
    return parsed


def _execute(stages, manifest, workdir, config_path, workers, executor, ray_address, limit, force, strict, quiet,
             command, overrides=None):
    progress = default_progress(quiet)
    try:
        summary = pipeline.run(
            workdir,
            manifest=manifest,
            config=config_path,
            stages=stages,
            executor=executor,
            workers=workers,
            ray_address=ray_address,
            limit=limit,
            force=force,
            progress=progress,
            command=command,
            overrides=overrides,
        )
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

    @friendly_errors
    def command(manifest=None, settings=(), **options):
        overrides = _parse_sets(settings)
        for flag in flags:
            if options.pop(flag, False):
                overrides[flag] = True
        _execute([name], manifest, command=name, overrides={name: overrides} if overrides else None, **options)

    command.__name__ = name
    command = pipeline_options(command)
    command = click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                           help=f"Override a setting of the {name} section (repeatable).")(command)
    for flag, flag_help in flags.items():
        command = click.option(f"--{flag}", flag, is_flag=True, help=flag_help)(command)
    if takes_manifest:
        command = click.argument("manifest", type=click.Path(dir_okay=False, exists=True))(command)
    else:
        command = click.option("--manifest", type=click.Path(dir_okay=False, exists=True),
                               help="Add these videos to the catalog first.")(command)
    return click.command(name=name, help=help_text)(command)


@click.command(name="run")
@click.argument("manifest", type=click.Path(dir_okay=False, exists=True), required=False)
@pipeline_options
@click.option("--stages", "stage_list", default=None, help="Comma-separated subset, e.g. download,scenes.")
@friendly_errors
def run_command(manifest, stage_list, **options):
    """Run every stage of the config, in order, over the manifest's videos (resumable).

    \b
    Example:
      v60k run videos.csv --config pipelines/demo.yaml --workdir ./v60k-work
      v60k run --config pipelines/video60k.yaml --executor ray --ray-address auto
    """
    stages = [s.strip() for s in stage_list.split(",") if s.strip()] if stage_list else None
    _execute(stages, manifest, command="run", **options)


@click.command(name="status")
@click.option("--workdir", "-w", default="./v60k-work", show_default=True, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def status_command(workdir, as_json):
    """Per stage: counts by state, failures grouped by reason, throughput, token usage.

    \b
    Example:
      v60k status --workdir ./v60k-work --json
    """
    data = pipeline.status(workdir)
    echo_json(data) if as_json else print_status(data)


@click.command(name="retry")
@click.option("--workdir", "-w", default="./v60k-work", show_default=True, type=click.Path(file_okay=False))
@click.option("--stage", type=click.Choice(list(STAGE_ORDER)), default=None, help="Only this stage's failures.")
@friendly_errors
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
