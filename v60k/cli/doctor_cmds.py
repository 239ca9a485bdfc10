"""``v60k doctor``: check a work dir's catalog against its per-video outputs, and rebuild it from them."""

from __future__ import annotations

import sys

import click

from v60k.cli.common import echo_json


@click.command("doctor")
@click.option("--workdir", "-w", default="./v60k-work", show_default=True, type=click.Path(file_okay=False),
              help="Work dir: catalog and per-video outputs.")
@click.option("--repair", is_flag=True,
              help="Rebuild a missing, empty or damaged catalog from videos/<id>/ (the old file is kept as "
                   "catalog.sqlite.damaged-<time>), and add video folders the catalog does not know.")
@click.option("--manifest", type=click.Path(dir_okay=False, exists=True),
              help="With --repair: the manifest the videos came from (gives back series, cast and URLs).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor_cmd(workdir, repair, manifest, as_json):
    """Check the catalog: readable, not empty while videos/ holds outputs, every video folder known. Exit 1
    when something is wrong and not repaired.

    \b
    Example:
      v60k doctor --workdir ./v60k-work
      v60k doctor --workdir ./v60k-work --repair --manifest videos.csv
    """
    from v60k.core.catalog import Catalog
    from v60k.core.locks import RunLock
    from v60k.core.manifest import load_manifest
    from v60k.core.workdir import WorkDir
    from v60k.dataset.writer import STAGE_FILES

    work = WorkDir(workdir)
    health = Catalog.diagnose(work)
    problem = health["state"] != "ok" or bool(health["unknown_dirs"])
    result = None
    if repair and problem:
        rows = load_manifest(manifest).rows if manifest else []
        with RunLock(work.lock_path):
            result = Catalog.rebuild(work, STAGE_FILES, rows)
    if as_json:
        echo_json({"health": health, "repair": result})
    else:
        _print(health, result)
    if problem and result is None:
        sys.exit(1)


def _print(health: dict, result: dict | None) -> None:
    click.echo(f"work dir {health['workdir']}: {health['video_dirs']} video folder(s) with outputs")
    if health["state"] != "ok":
        click.echo(f"catalog: {health['state']}: {health['detail']}")
    else:
        click.echo(f"catalog: ok, {health['catalog_videos']} video(s)")
    if health["unknown_dirs"]:
        shown = ", ".join(health["unknown_dirs"][:5])
        click.echo(f"{len(health['unknown_dirs'])} video folder(s) unknown to the catalog: {shown}")
    if result is None:
        if health["state"] != "ok" or health["unknown_dirs"]:
            click.echo("run `v60k doctor --repair` (with --manifest for series and cast) to rebuild the catalog")
        return
    for path in result["moved_aside"]:
        click.echo(f"kept the damaged catalog as {path}")
    stages = ", ".join(f"{stage} {n}" for stage, n in result["stages"].items()) or "none"
    click.echo(f"rebuilt: {result['videos']} video(s); stages done: {stages}")
    click.echo("stages without an output file are pending; failures were not recovered (the next run retries "
               "them); done stages carry no settings fingerprint (`--force` re-runs a stage)")


def register(group: click.Group) -> None:
    group.add_command(doctor_cmd)
