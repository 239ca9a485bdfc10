"""What the commands share: options, the config a command uses, the one error report, and output helpers."""

from __future__ import annotations

import errno
import functools
import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import click

from v60k.core.config import PipelineConfig, parse_override, resolve_config
from v60k.core.errors import V60kError, redact

log = logging.getLogger("v60k.cli")

SET_HELP = "Override a config value, SECTION.KEY=VALUE (repeatable), e.g. llm.base_url=http://127.0.0.1:8000/v1."


def pipeline_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--workdir --config --set --workers --executor --ray-address --limit --force --yes --dry-run --strict --quiet."""
    options = [
        click.option("--workdir", "-w", default="./v60k-work", show_default=True, type=click.Path(file_okay=False),
                     help="Work dir: catalog and per-video outputs."),
        click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False, exists=True),
                     help="Pipeline YAML (e.g. pipelines/demo.yaml); default: the one the work dir was last run with."),
        click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
                     help="Parallel workers (default: the config's, else 1)."),
        click.option("--executor", type=click.Choice(["local", "ray"]), default=None, help="Where stages run."),
        click.option("--ray-address", default=None, help="Join an existing Ray cluster (e.g. ray://head:10001)."),
        click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N videos of the catalog."),
        click.option("--force", is_flag=True, help="Re-run the stage(s) even where done."),
        click.option("--yes", "-y", is_flag=True,
                     help="Go ahead when a changed config redoes finished LLM output (summaries, dialogues)."),
        click.option("--dry-run", is_flag=True, help="Print what would run (stages x videos) and change nothing."),
        click.option("--strict", is_flag=True, help="Exit non-zero when any video failed."),
        click.option("--quiet", "-q", is_flag=True, help="No progress output."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def set_option(help_text: str = SET_HELP) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--set SECTION.KEY=VALUE`` (repeatable), passed to the command as ``sets``."""
    return click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE", help=help_text)


def command_config(workdir: str | None, config_path: str | None, sets: Sequence[str] = (),
                   default_section: str | None = None, extra: Sequence[Any] = ()) -> PipelineConfig:
    """The config a command uses: --config, else the work dir's stored one, else the defaults; then --set (a bare
    KEY belongs to ``default_section`` when given) and ``extra`` overrides. Checked: a ConfigError on a mistake."""
    overrides = [parse_override(item, default_section) for item in sets] + list(extra)
    return resolve_config(workdir, config_path, overrides)


def report_error(exc: BaseException) -> int | None:
    """Print an expected error as one line on stderr and return its exit code; None for anything else (a bug,
    which keeps its traceback). Usage and config mistakes exit 2, runs that cannot go on 1. Values of secrets and
    of expanded ``${VAR}`` references never appear."""
    if isinstance(exc, (click.ClickException, click.exceptions.Exit, click.Abort)):
        return None
    if isinstance(exc, V60kError):
        message, code = str(exc), exc.exit_code
    elif isinstance(exc, FileNotFoundError):
        message, code = str(exc), 1
    elif isinstance(exc, OSError):
        why = "the disk is full" if exc.errno == errno.ENOSPC else f"{exc.strerror or exc}"
        target = f" {exc.filename}" if exc.filename else ""
        message, code = f"cannot write{target}: {why}", 1
    elif isinstance(exc, sqlite3.Error):
        message, code = f"the catalog cannot be used: {exc} (is the work dir writable, the disk full?)", 1
    else:
        return None
    log.debug("the error in full", exc_info=exc)
    click.echo(f"Error: {redact(message)}", err=True)
    return code


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """``report_error`` for a command used outside the ``v60k`` group (whose own handler reports them)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            code = report_error(exc)
            if code is None:
                raise
            raise click.exceptions.Exit(code) from None

    return wrapper


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))

