"""Options every pipeline command shares, and small output helpers."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from v60k.config import ConfigError
from v60k.manifest import ManifestError


def pipeline_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--workdir --config --workers --executor --ray-address --limit --force --strict --quiet."""
    options = [
        click.option("--workdir", "-w", default="./v60k-work", show_default=True, type=click.Path(file_okay=False),
                     help="Work dir: catalog and per-video outputs."),
        click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False, exists=True),
                     help="Pipeline YAML (e.g. pipelines/demo.yaml)."),
        click.option("--workers", "-j", type=int, default=None, help="Parallel workers (default: the config's, else 1)."),
        click.option("--executor", type=click.Choice(["local", "ray"]), default=None, help="Where stages run."),
        click.option("--ray-address", default=None, help="Join an existing Ray cluster (e.g. ray://head:10001)."),
        click.option("--limit", type=int, default=None, help="Only the first N videos of the catalog."),
        click.option("--force", is_flag=True, help="Re-run the stage(s) even where done."),
        click.option("--strict", is_flag=True, help="Exit non-zero when any video failed."),
        click.option("--quiet", "-q", is_flag=True, help="No progress output."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected user errors into one clear line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from v60k.catalog import CatalogDamaged
        from v60k.dataset.ownership import CorpusError
        from v60k.locks import Busy

        try:
            return func(*args, **kwargs)
        except (ConfigError, ManifestError, Busy, CatalogDamaged, CorpusError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def is_tty() -> bool:
    return sys.stdout.isatty()
