"""The Python API of the pipeline: ``run`` stages over the catalog's pending videos, ``status``, ``retry``.

    from v60k.pipeline import run
    summary = run("v60k-work", manifest="videos.csv", config="pipelines/demo.yaml")

The CLI is a thin layer over these functions.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v60k.catalog import Catalog
from v60k.config import ConfigError, PipelineConfig, load_config
from v60k.executors import Executor, StageSpec, make_executor
from v60k.manifest import Manifest, load_manifest
from v60k.progress import Progress
from v60k.stage import Resources, Stage, StageContext, Video
from v60k.stages import STAGE_ORDER, registered_stages, stage_class
from v60k.workdir import WorkDir

StageRef = str | type[Stage]


class WorkDirBusy(RuntimeError):
    """Another run holds this work dir."""


@dataclass
class RunSummary:
    workdir: str
    stages: list[str]
    counts: dict[str, dict[str, int]]
    processed: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    shards: Any = None  # v60k.dataset.ShardSummary when the run ended by writing the shards

    @property
    def shards_ok(self) -> bool:
        """False only when shards were written and failed validation."""
        validation = getattr(self.shards, "validation", None)
        return validation is None or bool(validation.ok)

    @property
    def failed(self) -> int:
        return sum(self.counts.get(s, {}).get("failed", 0) for s in self.stages)

    @property
    def unfinished(self) -> int:
        return sum(self.counts.get(s, {}).get(k, 0) for s in self.stages for k in ("pending", "running"))


class _RunLock:
    def __init__(self, path: Path):
        self.path = path
        self.handle = None

    def __enter__(self) -> _RunLock:
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self.handle.close()
            raise WorkDirBusy(f"another v60k run is using {self.path.parent}") from exc
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.handle is not None
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def resolve_stages(stages: Sequence[StageRef] | None) -> list[type[Stage]]:
    registered_stages()  # registered classes get their derived ``requires``, also those passed as classes
    names = list(stages) if stages else list(STAGE_ORDER)
    return [stage_class(s) if isinstance(s, str) else s for s in names]


def _with_requirements(classes: list[type[Stage]]) -> list[type[Stage]]:
    """The selected stages plus, transitively, the registered stages they read from."""
    by_name = {c.name: c for c in classes}
    queue = list(classes)
    while queue:
        for req in queue.pop().requires:
            if req not in by_name:
                by_name[req] = stage_class(req)
                queue.append(by_name[req])
    order = {name: i for i, name in enumerate(STAGE_ORDER)}
    return sorted(by_name.values(), key=lambda c: order.get(c.name, len(order)))


def build_stage(klass: type[Stage], config: PipelineConfig, workdir: WorkDir) -> Stage:
    return klass(klass.Settings(**config.section(klass.name)), StageContext(workdir, config.shared))


def stage_resources(stage: Stage, config: PipelineConfig) -> Resources:
    """What one worker of ``stage`` needs: the stage's own figure for its settings, then the config's
    ``resources: {stage: {...}}`` entry over it."""
    try:
        return stage.worker_resources().merged(config.resources.get(stage.name))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"resources of {stage.name}: {exc}") from exc


def ingest_manifest(catalog: Catalog, manifest: Manifest | str | Path) -> dict[str, Any]:
    """Add a manifest's rows to the catalog; return what was added, collapsed and rejected."""
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    added, known = catalog.add_videos(manifest.rows)
    return {
        "source": manifest.source,
        "rows": len(manifest.rows),
        "added": added,
        "already_known": known,
        "duplicates": [vars(d) for d in manifest.duplicates],
        "rejected": [vars(r) for r in manifest.rejected],
    }


def run(
    workdir: str | Path | WorkDir,
    *,
    manifest: Manifest | str | Path | None = None,
    config: PipelineConfig | str | Path | None = None,
    stages: Sequence[StageRef] | None = None,
    executor: str | Executor | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    limit: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
    command: str = "run",
    overrides: dict[str, dict[str, Any]] | None = None,
    write_output: bool | None = None,
) -> RunSummary:
    """Run ``stages`` (default: the config's, else all) over every pending video, resumably.

    ``overrides`` ({stage: {setting: value}}) take precedence over the config file's sections.
    ``write_output`` (default: when the whole pipeline runs and the config sets ``output.dir``) ends the run
    by writing the Parquet shards, the card and their validation report (``v60k.dataset.write_shards``).
    """
    started = time.time()
    workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
    workdir.create()
    if not isinstance(config, PipelineConfig):
        config = load_config(config, known_stages=list(STAGE_ORDER))
    if overrides:
        merged = {name: dict(section) for name, section in config.stage_settings.items()}
        for name, values in overrides.items():
            merged.setdefault(name, {}).update(values)
        config = config.model_copy(update={"stage_settings": merged})
    progress = progress or Progress()
    selected = resolve_stages(stages if stages is not None else config.stages)
    involved = _with_requirements(selected)
    # every registered reader too: a stage re-queued here re-queues later stages this run does not select
    requires = {c.name: c.requires for c in (*registered_stages(), *involved)}
    order = [*STAGE_ORDER, *(c.name for c in involved if c.name not in STAGE_ORDER)]
    built = {c.name: build_stage(c, config, workdir) for c in involved}
    specs = {name: StageSpec.of(stage, stage_resources(stage, config)) for name, stage in built.items()}
    fingerprints = {name: stage.fingerprint() for name, stage in built.items()}

    with _RunLock(workdir.lock_path), Catalog(workdir) as catalog:
        manifest_info = ingest_manifest(catalog, manifest) if manifest is not None else {}
        for rejected in manifest_info.get("rejected", []):
            progress.message(f"manifest row {rejected['row']}: rejected: {rejected['reason']}")
        for dup in manifest_info.get("duplicates", []):
            progress.message(f"manifest row {dup['row']}: {dup['reason']}")
        public = {"config": config.model_dump(exclude={"stage_settings", "llm"}),
                  "stages": {n: s.settings.public_dict() for n, s in built.items()}}
        run_id = catalog.start_run(command, public)
        catalog.reset_interrupted()
        catalog.ensure_items([c.name for c in involved])
        catalog.apply_fingerprints(fingerprints, public["stages"])
        for klass in selected:
            if klass.retry_on_run:
                catalog.retry(klass.name, klass.retry_on_run)
        subset = _limited_ids(catalog, limit)
        if force:
            for klass in selected:
                catalog.force(klass.name, sorted(subset) if subset is not None else None)
        catalog.propagate_pending(requires, order)

        if executor is None or isinstance(executor, str):
            runner = make_executor(executor or config.executor, workers or config.workers, ray_address or config.ray_address)
        else:
            runner = executor
        processed: dict[str, int] = {}
        try:
            for klass in selected:
                processed[klass.name] = _run_stage(
                    catalog, built[klass.name], specs[klass.name], fingerprints[klass.name], runner, run_id, subset,
                    progress,
                )
        finally:
            if executor is None or isinstance(executor, str):  # we made it, we close it
                runner.close()
            catalog.finish_run(run_id)
        names = [c.name for c in selected]
        counts = catalog.counts()
        summary = RunSummary(
            workdir=str(workdir.root),
            stages=names,
            counts={n: counts.get(n, {}) for n in names},
            processed=processed,
            failures=[f for f in catalog.failures() if f["stage"] in names],
            manifest=manifest_info,
        )
        if write_output is None:
            write_output = stages is None and bool(config.output.get("dir"))
        if write_output:
            summary.shards = _write_output(workdir, config, progress)
    summary.elapsed_s = round(time.time() - started, 3)
    return summary


def _write_output(workdir: WorkDir, config: PipelineConfig, progress: Progress) -> Any:
    """The run's last step: the corpus as Parquet shards in ``output.dir``, with card and validation."""
    from v60k.dataset import OutputSettings, write_shards

    settings = OutputSettings.from_config(config.output)
    if settings.dir is None:
        raise ValueError("the config's output section has no dir: nowhere to write the shards")
    progress.message(f"writing shards to {settings.dir}")
    return write_shards(workdir, settings.dir, settings)


def _limited_ids(catalog: Catalog, limit: int | None) -> set[str] | None:
    if limit is None:
        return None
    rows = catalog.db.execute("SELECT video_id FROM videos ORDER BY added_at, video_id LIMIT ?", (limit,))
    return {r[0] for r in rows}


def _run_stage(
    catalog: Catalog,
    stage: Stage,
    spec: StageSpec,
    fingerprint: str,
    runner: Executor,
    run_id: str,
    subset: set[str] | None,
    progress: Progress,
) -> int:
    """Run one stage until nothing of it is ready (new videos discovered on the way join in)."""
    total = 0
    while True:
        catalog.skip_after_failed_inputs(stage.name, stage.requires)
        ready = catalog.ready(stage.name, stage.requires)
        if subset is not None:
            ready = [v for v in ready if v in subset]
        if not ready:
            return total
        progress.stage_started(stage.name, len(ready))
        discovered = False
        for outcome in runner.run(spec, _feed(catalog, stage.name, ready, run_id)):
            catalog.record(outcome, fingerprint)
            if outcome.new_videos:
                added, _ = catalog.add_videos(outcome.new_videos, parent_id=outcome.video_id)
                if added:
                    catalog.ensure_items(catalog.stages())
                    discovered = True
            total += 1
            progress.item_finished(outcome)
        progress.stage_finished(stage.name)
        if not discovered:
            return total


def _feed(catalog: Catalog, stage: str, video_ids: list[str], run_id: str) -> Iterator[Video]:
    """Mark each video running just before the executor takes it (so a kill loses only those in flight)."""
    for chunk_start in range(0, len(video_ids), 256):
        for video in catalog.videos(video_ids[chunk_start : chunk_start + 256]):
            catalog.mark_running(stage, [video.video_id], run_id)
            yield video


def status(workdir: str | Path | WorkDir) -> dict[str, Any]:
    """Counts by state per stage, failures grouped by reason, throughput and usage — as plain data."""
    workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
    if not workdir.catalog_path.exists():
        raise FileNotFoundError(f"no catalog in {workdir.root} (run `v60k download` or `v60k run` first)")
    with Catalog(workdir) as catalog:
        counts = catalog.counts()
        order = [s for s in STAGE_ORDER if s in counts] + sorted(s for s in counts if s not in STAGE_ORDER)
        last = catalog.db.execute("SELECT run_id, command, started_at, finished_at FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
        return {
            "workdir": str(workdir.root),
            "videos": catalog.video_count(),
            "stages": {s: counts[s] for s in order},
            "failures": catalog.failures(),
            "throughput": catalog.throughput(),
            "usage": catalog.usage_totals(),
            "last_run": dict(zip(("run_id", "command", "started_at", "finished_at"), last)) if last else None,
        }


def retry(workdir: str | Path | WorkDir, stage: str | None = None) -> int:
    """Re-queue failed items (of one stage, or all); the next run processes them."""
    workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
    with _RunLock(workdir.lock_path), Catalog(workdir) as catalog:
        return catalog.retry(stage)
