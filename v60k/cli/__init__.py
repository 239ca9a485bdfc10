"""The ``v60k`` command line: a thin layer over the Python API (``v60k.core.pipeline`` and friends)."""

from __future__ import annotations

import logging
import os

import click

from v60k import __version__
from v60k.cli import chat_cmds, dataset_cmds, doctor_cmds, eval_cmds, pipeline_cmds, sft_cmds
from v60k.cli.common import report_error


class V60kGroup(click.Group):
    """The command group; the one place where errors reach the user: an expected one (``V60kError``, a file that
    cannot be written) as one line and its exit code (2: usage or config, 1: the run could not go on)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            code = report_error(exc)
            if code is None:
                raise
            ctx.exit(code)


@click.group(cls=V60kGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
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


for _commands in (pipeline_cmds, dataset_cmds, doctor_cmds, sft_cmds, chat_cmds, eval_cmds):
    _commands.register(cli)


def main() -> None:
    cli(prog_name="v60k")
