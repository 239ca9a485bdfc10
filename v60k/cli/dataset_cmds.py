"""Dataset commands: ``shard``, ``validate``, ``report``, ``publish``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from v60k.cli.common import command_config, echo_json, set_option


def _output_settings(workdir: str, config_path: str | None, sets: tuple[str, ...], overrides: dict[str, object]):
    from v60k.core.config import Override

    extra = [Override(path=("output", k), value=v) for k, v in overrides.items() if v is not None]
    return command_config(workdir, config_path, sets, extra=extra).output


@click.command("shard")
@click.option("--workdir", "-w", default="./v60k-work", show_default=True, type=click.Path(file_okay=False),
              help="Work dir: catalog and per-video outputs.")
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Shard folder (default: the config's output.dir).")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False, exists=True),
              help="Pipeline YAML; its `output:` section sets the defaults (default: the work dir's config).")
@click.option("--shard-size-mb", type=float, default=None, help="Target shard size (default 500).")
@click.option("--row-group-rows", type=int, default=None, help="Rows per row group (default 1000).")
@click.option("--split-method", type=click.Choice(["series", "hash", "rank"]), default=None,
              help="Whole series per split (hash and rank are earlier names of the same method).")
@click.option("--no-card", is_flag=True, help="Do not write README.md.")
@click.option("--no-validate", is_flag=True, help="Do not validate what was written.")
@click.option("--force", is_flag=True,
              help="Replace a corpus built from another work dir, files v60k wrote that were changed since, or a "
                   "corpus with rows by an empty one. Files v60k did not write are never replaced.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@set_option()
def shard_cmd(workdir, out_dir, config_path, shard_size_mb, row_group_rows, split_method, no_card, no_validate,
              force, as_json, sets):
    """Write the work dir's corpus as Parquet shards (data/<table>/<split>-NNNNN-of-NNNNN.parquet), the
    dataset card, and validate them. The work dir is only read (a read-only mount works). The folder's
    .v60k-corpus.json records what v60k wrote there: only those files are ever replaced.

    \b
    Example:
      v60k shard --workdir ./v60k-work --out ./corpus
    """
    from v60k.dataset.dedup_pass import describe_drops
    from v60k.dataset.writer import write_shards

    settings = _output_settings(workdir, config_path, sets, {"shard_size_mb": shard_size_mb, "row_group_rows": row_group_rows,
                                              "split_method": split_method})
    settings = settings.model_copy(update={"card": not no_card and settings.card,
                                           "check": not no_validate and settings.check})
    target = out_dir or settings.dir
    if not target:
        raise click.UsageError("no --out given and the config has no output.dir")
    summary = write_shards(workdir, target, settings, overwrite=force or None)
    if as_json:
        echo_json(summary.to_dict())
    else:
        click.echo(f"wrote {len(summary.files)} shard(s), {summary.bytes / 1e6:.1f} MB, to {summary.out_dir}")
        for table, counts in sorted(summary.rows.items()):
            click.echo(f"  {table:<11} " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items())))
        for line in describe_drops(summary):
            click.echo(line)
        for warning in summary.warnings[:20]:
            click.echo(f"warning: {warning}", err=True)
        if summary.card:
            click.echo(f"card: {summary.card}")
        if summary.validation is not None:
            click.echo(summary.validation.render())
    if summary.validation is not None and not summary.validation.ok:
        sys.exit(1)


@click.command("validate")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--max-per-check", type=int, default=20, show_default=True, help="Issues shown per kind.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def validate_cmd(directory, max_per_check, as_json):
    """Check a shard folder (as written, or downloaded from the Hub): schema, ids, times, references, cast,
    splits and dialogue turns. Exit code 1 on any error.

    \b
    Example:
      v60k validate ./corpus
    """
    from v60k.dataset.validate import validate

    report = validate(directory, max_per_check=max_per_check)
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(report.render())
    sys.exit(0 if report.ok else 1)


@click.command("report")
@click.option("--workdir", "-w", default=None, type=click.Path(file_okay=False),
              help="Work dir (catalog: failures, tokens and cost; corpus facts when no --shards).")
@click.option("--shards", default=None, type=click.Path(file_okay=False), help="Shard folder to describe.")
@click.option("--out", "-o", "out_html", default="report.html", show_default=True, type=click.Path(dir_okay=False))
@click.option("--eval", "eval_path", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Evaluation results JSON (as `v60k eval` writes it).")
def report_cmd(workdir, shards, out_html, eval_path):
    """One self-contained HTML page of plots: durations, lines and dialogues per character, attribution
    confidence, scenes, languages, failures, tokens and cost, evaluation.

    \b
    Example:
      v60k report --workdir ./v60k-work --shards ./corpus --out report.html --eval eval.json
    """
    from v60k.dataset.report import write_report

    if not workdir and not shards:
        workdir = "./v60k-work"
    eval_results = json.loads(Path(eval_path).read_text(encoding="utf-8")) if eval_path else None
    path = write_report(workdir or shards, out_html, eval_results=eval_results, corpus_dir=shards)
    click.echo(f"report: {path}")


@click.command("publish")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("--repo-id", required=True, help="ORG/NAME of the dataset repository.")
@click.option("--public/--private", "public", default=False,
              help="Create the repository public (default: private).")
@click.option("--allow-unknown-license", is_flag=True,
              help="Publish even videos whose license is missing or unknown.")
@click.option("--dry-run", is_flag=True, help="Validate and list what would be uploaded; upload nothing.")
@click.option("--revision", default=None, help="Branch to commit to (default: main).")
@click.option("--message", default="Upload corpus shards", show_default=True, help="Commit message.")
def publish_cmd(directory, repo_id, public, allow_unknown_license, dry_run, revision, message):
    """Validate, then upload the shards and the card to a Hugging Face dataset repository, created private
    unless --public. Videos without a known license are refused unless --allow-unknown-license. The token
    comes from HF_TOKEN or the login cache (`hf auth login`) and is never printed.

    \b
    Example:
      v60k publish ./corpus --repo-id my-org/my-roleplay --dry-run
    """
    from v60k.dataset.publish import PublishError, publish

    try:
        result = publish(directory, repo_id, private=not public, dry_run=dry_run,
                         allow_unknown_license=allow_unknown_license, revision=revision,
                         commit_message=message, echo=click.echo)
    except PublishError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    if dry_run:
        click.echo(f"dry run: {len(result.files)} file(s), {result.bytes / 1e6:.1f} MB would go to {result.url}")
    else:
        click.echo(f"published {len(result.files)} file(s) in {result.commits} commit(s): {result.url}")


def register(group: click.Group) -> None:
    for command in (shard_cmd, validate_cmd, report_cmd, publish_cmd):
        group.add_command(command)
