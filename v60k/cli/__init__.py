"""The ``v60k`` command line: a thin layer over the Python API (``v60k.pipeline`` and friends)."""

from __future__ import annotations

import logging
import os

import click

from v60k import __version__
from v60k.cli import pipeline_cmds


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="v60k")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """v60k — build video-grounded role-play corpora, one resumable stage at a time.

    \b
    Example:
      v60k run videos.csv --config pipelines/demo.yaml --workdir ./v60k-work
      v60k status --workdir ./v60k-work
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


pipeline_cmds.register(cli)


def _register_optional(module: str) -> None:
    """Command groups of the later layers (dataset, framework) register themselves here."""
    import importlib

    try:
        importlib.import_module(module).register(cli)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise


for _module in ("v60k.cli.dataset_cmds", "v60k.cli.framework_cmds"):
    _register_optional(_module)


def main() -> None:
    cli(prog_name="v60k")
