"""The Python API of the pipeline: ``plan`` and ``execute`` (``run`` is both) stages over the catalog's pending
videos, ``status``, ``retry``.

    from v60k.core.pipeline import plan, execute, run
    summary = run("v60k-work", manifest="videos.csv", config="pipelines/demo.yaml")
    todo = plan("v60k-work", config="pipelines/demo.yaml")   # changes nothing: what a run would do
    print("\n".join(todo.lines())); summary = execute(todo)

The CLI is a thin layer over these functions.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v60k.core.catalog import Catalog, is_damage
from v60k.core.config import ConfigError, PipelineConfig, check_stage_settings, load_config, store_config
from v60k.core.errors import WorkDirError, canonical, redact
from v60k.core.executors import Executor, StageSpec, make_executor
from v60k.core.locks import RunLock as _RunLock
from v60k.core.locks import (
    WorkDirBusy as WorkDirBusy,  # re-exported: callers catch v60k.core.pipeline.WorkDirBusy
)
from v60k.core.manifest import Manifest, load_manifest
from v60k.core.progress import Progress
from v60k.core.stage import Resources, Stage, StageContext, Video
from v60k.core.workdir import WorkDir
from v60k.stages import STAGE_ORDER, registered_stages, stage_class, with_requirements

StageRef = str | type[Stage]


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


def resolve_stages(stages: Sequence[StageRef] | None) -> list[type[Stage]]:
    registered_stages()  # registered classes get their derived ``requires``, also those passed as classes
    names = list(stages) if stages else list(STAGE_ORDER)
    return [stage_class(s) if isinstance(s, str) else s for s in names]


def build_stage(klass: type[Stage], config: PipelineConfig, workdir: WorkDir) -> Stage:
    """The stage with its config section checked (a ConfigError naming the section and key)."""
    where = config.source or "config"
    settings = check_stage_settings(klass.name, config.section(klass.name), lambda *keys: where, klass.Settings)
    return klass(settings, StageContext(workdir, config.shared))


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


@dataclass
class Plan:
    """What a run will do, worked out without changing anything: the stages built from the config, and per stage
    the videos it will process and how many finished ones among them it redoes (settings changed, an earlier stage
    redone, ``force``). ``execute`` carries it out; ``lines()`` says it in words (``v60k run --dry-run``)."""

    workdir: WorkDir
    config: PipelineConfig
    selected: list[type[Stage]]
    involved: list[type[Stage]]
    built: dict[str, Stage]
    specs: dict[str, StageSpec]
    fingerprints: dict[str, str]
    manifest: Manifest | None = None
    limit: int | None = None
    force: bool = False
    write_output: bool = False
    videos: int = 0  # in the catalog, with the manifest's new rows
    new_videos: int = 0  # of them, not in the catalog yet
    todo: dict[str, int] = field(default_factory=dict)  # selected stage -> videos it will process (at most)
    redo: dict[str, int] = field(default_factory=dict)  # stage -> done videos it will process again
    changed: dict[str, int] = field(default_factory=dict)  # stage -> finished rows whose settings changed
    costly_redo: dict[str, int] = field(default_factory=dict)  # stage -> redone videos whose output cost LLM requests

    @property
    def stages(self) -> list[str]:
        return [c.name for c in self.selected]

    @property
    def overwrites_llm_output(self) -> int:
        """Done videos whose output came from model requests (the generate stage's LLM summaries and dialogues)
        that this run would write again."""
        return sum(self.costly_redo.values())

    def redo_text(self) -> str:
        """'scenes 3, generate 3' — the stages that redo finished videos."""
        return ", ".join(f"{stage} {n}" for stage, n in self.redo.items() if n)

    def lines(self) -> list[str]:
        new = f" ({self.new_videos} new from the manifest)" if self.new_videos else ""
        scope = f", the first {self.limit}" if self.limit is not None else ""
        out = [f"plan for {self.workdir.root}: {self.videos} video(s){new}{scope}; config {self.config.source or 'defaults'}"]
        for name in self.stages:
            why = []
            if self.changed.get(name):
                why.append(f"{self.changed[name]} finished with other settings")
            if self.redo.get(name):
                why.append(f"{self.redo[name]} done will be redone")
            detail = f" ({'; '.join(why)})" if why else ""
            out.append(f"  {name:<11} {self.todo.get(name, 0):>6} to process{detail}")
        for name in (c.name for c in self.involved if c not in self.selected):
            if self.changed.get(name) or self.redo.get(name):
                out.append(f"  {name:<11} not run now: {self.redo.get(name, 0)} done will be pending again")
        if self.write_output:
            out.append(f"  then the shards, to {self.config.output.dir}")
        return out


def plan(
    workdir: str | Path | WorkDir,
    *,
    manifest: Manifest | str | Path | None = None,
    config: PipelineConfig | str | Path | None = None,
    stages: Sequence[StageRef] | None = None,
    limit: int | None = None,
    force: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
    write_output: bool | None = None,
) -> Plan:
    """What ``execute`` would do: build and check the stages, and count per stage the videos to process. Reads the
    catalog (when there is one) and the manifest; writes nothing.

    ``overrides`` ({stage: {setting: value}}) take precedence over the config file's sections.
    ``write_output`` (default: when the whole pipeline runs and the config sets ``output.dir``) ends the run
    by writing the Parquet shards, the card and their validation report (``v60k.dataset.write_shards``).
    """
    workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
    if not isinstance(config, PipelineConfig):
        config = load_config(config)
    if overrides:
        config = config.with_sections(overrides)
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1 (got {limit})")
    selected = resolve_stages(stages if stages is not None else config.stages)
    involved = with_requirements(selected)
    built = {c.name: build_stage(c, config, workdir) for c in involved}
    specs = {name: StageSpec.of(stage, stage_resources(stage, config)) for name, stage in built.items()}
    fingerprints = {name: stage.fingerprint() for name, stage in built.items()}
    if manifest is not None and not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    if write_output is None:
        write_output = stages is None and config.output.dir is not None
    if write_output and config.output.dir is None:
        raise ConfigError(f"{config.source or 'config'}: output.dir: not set, so there is nowhere to write the shards")
    result = Plan(workdir, config, selected, involved, built, specs, fingerprints, manifest, limit, force,
                  bool(write_output))
    _count(result)
    return result


def _count(the_plan: Plan) -> None:
    """Fill ``videos``, ``todo``, ``redo`` and ``changed`` the way ``execute`` will change the catalog's rows."""
    names = [c.name for c in the_plan.involved]
    states: dict[str, dict[str, tuple[str, str | None, str | None]]] = {n: {} for n in names}
    known: list[str] = []
    costly: dict[str, set[str]] = {n: set() for n in names}
    if the_plan.workdir.catalog_path.exists():
        with open_catalog(the_plan.workdir, readonly=True) as catalog:
            known = catalog.video_ids()
            states = catalog.item_states(names)
            costly = catalog.costly_ids(names)
    known_set = set(known)
    new = [row["video_id"] for row in (the_plan.manifest.rows if the_plan.manifest else ())
           if row["video_id"] not in known_set]
    ordered = known + sorted(set(new))
    the_plan.videos, the_plan.new_videos = len(ordered), len(set(new))
    subset = set(ordered[: the_plan.limit]) if the_plan.limit is not None else None
    selected = {c.name for c in the_plan.selected}
    the_plan.todo = dict.fromkeys(the_plan.stages, 0)
    the_plan.redo = dict.fromkeys(names, 0)
    the_plan.changed = dict.fromkeys(names, 0)
    the_plan.costly_redo = dict.fromkeys(names, 0)
    for video_id in ordered:
        pending: dict[str, bool] = {}
        for klass in the_plan.involved:
            state, fingerprint, error_class = states[klass.name].get(video_id, ("pending", None, None))
            again = state in ("pending", "running")
            if not again and fingerprint is not None and fingerprint != the_plan.fingerprints[klass.name]:
                again = True
                the_plan.changed[klass.name] += 1
            if klass.name in selected and state == "failed" and error_class in klass.retry_on_run:
                again = True
            if the_plan.force and klass.name in selected and (subset is None or video_id in subset):
                again = True
            if any(pending.get(req) for req in klass.requires):
                again = True
            pending[klass.name] = again
            if again and state == "done":
                the_plan.redo[klass.name] += 1
                the_plan.costly_redo[klass.name] += video_id in costly[klass.name]
            if again and klass.name in selected and (subset is None or video_id in subset):
                the_plan.todo[klass.name] += 1


def execute(
    the_plan: Plan,
    *,
    executor: str | Executor | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    progress: Progress | None = None,
    command: str = "run",
) -> RunSummary:
    """Carry out a plan: ingest the manifest, re-queue what changed, run each selected stage over its ready videos
    (resumably), and write the shards when the plan says so. The config is stored in the work dir."""
    started = time.time()
    workdir, config, built = the_plan.workdir, the_plan.config, the_plan.built
    _ensure_writable(workdir)
    progress = progress or Progress()
    selected, involved = the_plan.selected, the_plan.involved
    # every registered reader too: a stage re-queued here re-queues later stages this run does not select
    requires = {c.name: c.requires for c in (*registered_stages(), *involved)}
    order = [*STAGE_ORDER, *(c.name for c in involved if c.name not in STAGE_ORDER)]
    with _RunLock(workdir.lock_path), open_catalog(workdir) as catalog:
        manifest_info = ingest_manifest(catalog, the_plan.manifest) if the_plan.manifest is not None else {}
        for rejected in manifest_info.get("rejected", []):
            progress.message(f"manifest row {rejected['row']}: rejected: {rejected['reason']}")
        for dup in manifest_info.get("duplicates", []):
            progress.message(f"manifest row {dup['row']}: {dup['reason']}")
        public = conceal_settings(config, built)
        run_id = catalog.start_run(command, public)
        try:
            store_config(workdir.root, config)
        except OSError as exc:
            raise WorkDirError(f"cannot write the config to {workdir.root}: {exc.strerror}") from None
        catalog.reset_interrupted()
        catalog.ensure_items([c.name for c in involved])
        catalog.apply_fingerprints(the_plan.fingerprints, public["stages"])
        for klass in selected:
            if klass.retry_on_run:
                catalog.retry(klass.name, klass.retry_on_run)
        subset = catalog.first_video_ids(the_plan.limit) if the_plan.limit is not None else None
        if the_plan.force:
            for klass in selected:
                catalog.force(klass.name, sorted(subset) if subset is not None else None)
        catalog.propagate_pending(requires, order)

        if executor is None or isinstance(executor, str):
            runner = make_executor(executor or config.executor, workers or config.workers,
                                   ray_address or config.ray_address)
        else:
            runner = executor
        processed: dict[str, int] = {}
        try:
            for klass in selected:
                name = klass.name
                processed[name] = _run_stage(catalog, built[name], the_plan.specs[name],
                                             the_plan.fingerprints[name], runner, run_id, subset, progress)
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
        if the_plan.write_output:
            summary.shards = _write_output(workdir, config, progress)
    summary.elapsed_s = round(time.time() - started, 3)
    return summary


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
    """``execute(plan(...))``: run ``stages`` (default: the config's, else all) over every pending video,
    resumably. See ``plan`` for ``overrides`` and ``write_output``."""
    the_plan = plan(workdir, manifest=manifest, config=config, stages=stages, limit=limit, force=force,
                    overrides=overrides, write_output=write_output)
    return execute(the_plan, executor=executor, workers=workers, ray_address=ray_address, progress=progress,
                   command=command)


def conceal_settings(config: PipelineConfig, built: dict[str, Stage]) -> dict[str, Any]:
    """What the catalog stores about a run's config: public settings, values from ``${VAR}`` as references."""
    from v60k.core.config import conceal

    return conceal({"config": config.model_dump(mode="json", exclude={"stage_settings", "llm"}),
                    "stages": {n: s.settings.public_dict() for n, s in built.items()}})


def _ensure_writable(workdir: WorkDir) -> None:
    """A work dir the run can write to, or a WorkDirError saying why not."""
    try:
        workdir.create()
        with open(workdir.root / f".write-test-{os.getpid()}", "wb") as handle:
            handle.write(b"ok")
        os.unlink(handle.name)
    except OSError as exc:
        why = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc)).lower()
        raise WorkDirError(f"work dir {workdir.root} cannot be written: {why}") from None


@contextlib.contextmanager
def open_catalog(workdir: WorkDir, readonly: bool = False) -> Iterator[Catalog]:
    """The work dir's catalog; SQLite errors (read-only, disk full, a damaged file) become one WorkDirError."""
    path = workdir.catalog_path
    try:
        catalog = Catalog(workdir, read_only=readonly)
        with catalog:
            yield catalog
    except sqlite3.DatabaseError as exc:
        text = str(exc)
        if is_damage(exc):
            why = (f"{path} is damaged or incomplete ({text}); `v60k doctor --workdir {workdir.root} --repair` "
                   "rebuilds it from the per-video outputs")
        elif "readonly" in text or "unable to open" in text:
            why = f"{path} cannot be written ({text}): is the work dir writable?"
        elif "full" in text or "I/O error" in text:
            why = f"{path} could not be written ({text}): is the disk full?"
        else:
            why = f"{path}: {text}"
        raise WorkDirError(f"catalog {why}") from None
    except PermissionError as exc:
        raise WorkDirError(f"work dir {workdir.root} cannot be written: {exc.strerror}") from None


def _write_output(workdir: WorkDir, config: PipelineConfig, progress: Progress) -> Any:
    """The run's last step: the corpus as Parquet shards in ``output.dir``, with card and validation."""
    from v60k.dataset import write_shards

    progress.message(f"writing shards to {config.output.dir}")
    return write_shards(workdir, config.output.dir, config.output)


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
            if outcome.error_message:  # no secret or ${VAR} value in the catalog or on screen
                outcome.error_message = redact(outcome.error_message)
            outcome.error_class = canonical(outcome.error_class)  # one failure, one name (v60k.core.errors)
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
    """Counts by state per stage with the per-item outcomes and totals its rows reported (``items``,
    ``totals``), failures grouped by reason, throughput and usage — as plain data. Reads only."""
    workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
    if not workdir.catalog_path.exists():
        raise WorkDirError(f"no catalog in {workdir.root} (run `v60k download` or `v60k run` first)")
    with open_catalog(workdir, readonly=True) as catalog:
        counts = catalog.counts()
        outcomes = catalog.outcome_totals()
        order = [s for s in STAGE_ORDER if s in counts] + sorted(s for s in counts if s not in STAGE_ORDER)
        stages: dict[str, dict[str, Any]] = {}
        for name in order:
            reported = outcomes.get(name, {})
            stages[name] = {**counts[name], "items": reported.get("items", {"done": 0, "rejected": {}, "failed": {}}),
                            "totals": reported.get("totals", {})}
        return {
            "workdir": str(workdir.root),
            "videos": catalog.video_count(),
            "stages": stages,
            "failures": catalog.failures(),
            "throughput": catalog.throughput(),
            "usage": catalog.usage_totals(),
            "last_run": catalog.last_run(),
        }


def retry(workdir: str | Path | WorkDir, stage: str | None = None) -> int:
    """Re-queue failed items (of one stage, or all); the next run processes them."""
    workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
    _ensure_writable(workdir)
    with _RunLock(workdir.lock_path), open_catalog(workdir) as catalog:
        return catalog.retry(stage)
