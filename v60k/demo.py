"""`make demo`: the whole pipeline, offline, on generated sample episodes served over HTTP on 127.0.0.1.

    python -m v60k.demo [--workdir demo-work] [--workers 1]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from v60k.core import pipeline
from v60k.core.config import load_config
from v60k.core.progress import default_progress
from v60k.stages import STAGE_ORDER
from v60k.testing.sample_episodes import Episode, MediaServer, build_episode, demo_specs

REPO = Path(__file__).resolve().parent.parent
SERIES = "Demo Apartment"


def build_media(media_dir: Path) -> list[Episode]:
    """Build the demo episodes once (kept between demo runs)."""
    episodes = []
    for spec in demo_specs():
        truth = media_dir / f"{spec.name}.truth.json"
        path = media_dir / f"{spec.name}.mp4"
        if truth.exists() and path.exists():
            import json

            episodes.append(Episode(path=path, truth_path=truth, truth=json.loads(truth.read_text())))
        else:
            episodes.append(build_episode(spec, media_dir))
    return episodes


def write_manifest(path: Path, server: MediaServer, episodes: list[Episode]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["url", "id", "series", "characters", "language", "license"])
        writer.writeheader()
        for ep in episodes:
            writer.writerow({
                "url": server.url(ep.path.name),
                "id": ep.path.stem,
                "series": SERIES,
                "characters": ";".join(ep.truth["cast"]),
                "language": "en",
                "license": "CC-BY-4.0",
            })
    return path


def summarize(workdir: Path, corpus_dir: Path | None, extra: dict[str, str]) -> None:
    console = Console(width=110)
    status = pipeline.status(workdir)
    table = Table(title=f"v60k demo — {status['videos']} videos", title_justify="left")
    for col in ("stage", "done", "skipped", "failed", "s/item"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for stage in STAGE_ORDER:
        counts = status["stages"].get(stage)
        if counts:
            per_item = status["throughput"].get(stage, {}).get("per_item_s", 0.0)
            table.add_row(stage, str(counts["done"]), str(counts["skipped"]), str(counts["failed"]), f"{per_item:.2f}")
    console.print(table)
    for failure in status["failures"]:
        console.print(f"  {failure['stage']}: {failure['count']} {failure['state']} ({failure['error_class']})"
                      f" e.g. {failure['example_video']}: {(failure['example'] or '').splitlines()[0][:80]}")
    for label, value in extra.items():
        console.print(f"{label:>10}: {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="demo-work")
    parser.add_argument("--config", default=str(REPO / "pipelines" / "demo.yaml"))
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    root = Path(args.workdir).resolve()
    media_dir = root / "media"
    started = time.time()
    print(f"building sample episodes in {media_dir} ...", flush=True)
    episodes = build_media(media_dir)
    config = load_config(args.config, known_stages=list(STAGE_ORDER))
    corpus_dir = root / "corpus"
    config = config.model_copy(update={"output": config.output.model_copy(update={"dir": corpus_dir})})
    progress = default_progress()
    with MediaServer(media_dir) as server:
        manifest = write_manifest(root / "manifest.csv", server, episodes)
        try:
            summary = pipeline.run(root / "work", manifest=manifest, config=config, workers=args.workers,
                                   progress=progress)
        finally:
            progress.close()
    extra = {"manifest": str(manifest), "work dir": str(root / "work")}
    from v60k.dataset import write_report

    shard_summary, report = summary.shards, summary.shards.validation
    html = write_report(root / "work", root / "report.html", corpus_dir=corpus_dir)
    extra.update({
        "shards": f"{corpus_dir / 'data'} ({shard_summary.describe()})",
        "card": str(corpus_dir / "README.md"),
        "validate": "ok" if report.ok else f"{len(report.errors)} error(s)",
        "report": str(html),
        "took": f"{time.time() - started:.0f}s",
    })
    summarize(root / "work", corpus_dir, extra)
    if not report.ok:
        print(report.render(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
