"""The pipeline over real SQLite and real worker processes, with small toy stages."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
import toy_stages
from click.testing import CliRunner
from toy_stages import AfterExpand, Double, Expand, Measure, calls, manifest_rows

from v60k.core import pipeline
from v60k.core.catalog import Catalog
from v60k.core.config import PipelineConfig
from v60k.core.workdir import read_json

TOY = [Measure, Double]


def _seed(workdir: Path, n: int, prefix: str = "vid") -> None:
    with Catalog(workdir) as catalog:
        catalog.add_videos(manifest_rows(n, prefix))


def _config(**sections) -> PipelineConfig:
    return PipelineConfig(stage_settings=sections)


def test_run_processes_everything_once_and_resume_does_nothing(tmp_path):
    work = tmp_path / "work"
    _seed(work, 6)
    summary = pipeline.run(work, stages=TOY)
    assert summary.counts["toy_measure"]["done"] == 6 and summary.counts["toy_double"]["done"] == 6
    assert read_json(work / "videos" / "vid003" / "double.json") == {"value": 12}
    assert len(calls(work)) == 12
    again = pipeline.run(work, stages=TOY)
    assert again.processed == {"toy_measure": 0, "toy_double": 0}
    assert len(calls(work)) == 12


def test_failures_are_recorded_and_the_batch_goes_on(tmp_path):
    work = tmp_path / "work"
    _seed(work, 5)
    config = _config(toy_measure={"fail_ids": ["vid001"], "skip_ids": ["vid002"]})
    summary = pipeline.run(work, stages=TOY, config=config)
    m, d = summary.counts["toy_measure"], summary.counts["toy_double"]
    assert (m["done"], m["failed"], m["skipped"]) == (3, 1, 1)
    # a skipped input still lets the next stage decide (it skips with its own reason); a failed one blocks it
    assert (d["done"], d["skipped"]) == (3, 2)
    reasons = {(f["stage"], f["error_class"]) for f in summary.failures}
    assert ("toy_measure", "broken_on_purpose") in reasons and ("toy_double", "upstream_failed") in reasons
    assert ("toy_double", "no_input") in reasons
    status = pipeline.status(work)
    assert status["stages"]["toy_measure"]["failed"] == 1
    assert status["usage"]["toy_measure"]["requests"] == 3

    # fix the cause, retry: only the failed video (and what waited on it) runs again
    assert pipeline.retry(work, "toy_measure") == 1
    before = len(calls(work))
    config = _config(toy_measure={"skip_ids": ["vid002"]})
    # the settings changed (fail_ids), so every measure row re-runs: that is the fingerprint rule
    summary = pipeline.run(work, stages=TOY, config=config)
    assert summary.counts["toy_measure"]["failed"] == 0
    assert summary.counts["toy_double"]["done"] == 4
    assert len(calls(work)) > before


def test_retry_without_settings_change_reruns_only_the_failed(tmp_path):
    work = tmp_path / "work"
    _seed(work, 4)
    marker = tmp_path / "broken"
    marker.write_text("vid000")
    config = _config(toy_measure={"crash_marker": str(marker)})
    summary = pipeline.run(work, stages=TOY, config=config)
    [failure] = [f for f in summary.failures if f["state"] == "failed"]
    assert failure["error_class"] == "RuntimeError" and "disk on fire" in failure["example"]
    marker.unlink()
    pipeline.retry(work)
    n = len(calls(work))
    summary = pipeline.run(work, stages=TOY, config=config)
    assert summary.processed == {"toy_measure": 1, "toy_double": 1}
    assert Counter(c[1] for c in calls(work)[n:]) == {"vid000": 2}


def test_changing_a_later_stage_setting_reruns_only_that_stage(tmp_path):
    work = tmp_path / "work"
    _seed(work, 3)
    pipeline.run(work, stages=TOY)
    n = len(calls(work))
    summary = pipeline.run(work, stages=TOY, config=_config(toy_double={"sleep_s": 0.001}))
    assert summary.processed == {"toy_measure": 0, "toy_double": 3}
    summary = pipeline.run(work, stages=TOY, config=_config(toy_measure={"factor": 3}, toy_double={"sleep_s": 0.001}))
    assert summary.processed == {"toy_measure": 3, "toy_double": 3}
    assert read_json(work / "videos" / "vid000" / "double.json") == {"value": 2 * 3 * len("vid000")}
    assert len(calls(work)) == n + 9


def test_process_pool_sets_up_once_per_worker(tmp_path):
    work = tmp_path / "work"
    _seed(work, 12)
    # the run has one worker; the config's resources section gives this stage two processes
    config = PipelineConfig(resources={"toy_measure": {"workers": 2}})
    summary = pipeline.run(work, stages=[Measure], workers=1, config=config)
    assert summary.counts["toy_measure"]["done"] == 12
    setups = (work / "setups.log").read_text().splitlines()
    assert 1 <= len(setups) <= 2  # once per worker process, never per video
    assert len({c.split()[1] for c in setups}) == len(setups)
    pids = {line.split()[2] for line in (work / "calls.log").read_text().splitlines()}
    assert str(os.getpid()) not in pids


def test_new_videos_from_a_playlist_join_the_same_run(tmp_path):
    work = tmp_path / "work"
    with Catalog(work) as catalog:
        catalog.add_videos([{"video_id": "list1", "source_url": "http://h/list1", "series": "S"},
                            {"video_id": "solo", "source_url": "http://h/solo"}])
    summary = pipeline.run(work, stages=[Expand, AfterExpand])
    counts = summary.counts["toy_expand"]
    assert counts["done"] == 4 and counts["skipped"] == 1
    # the playlist row is no video: its later stages are skipped as such, never run and never failed
    assert summary.counts["toy_after_expand"] == {"pending": 0, "running": 0, "done": 4, "failed": 0, "skipped": 1}
    with Catalog(work) as catalog:
        videos = {v.video_id: v for v in catalog.videos()}
        after = catalog.item("list1", "toy_after_expand")
    assert videos["item2-of-list1"].series == "S"
    assert after["error_class"] == "expanded" and "toy_expand expanded it" in after["error_message"]
    assert "toy_after_expand list1 " not in (work / "calls.log").read_text()


def test_limit_and_force(tmp_path):
    work = tmp_path / "work"
    _seed(work, 5)
    summary = pipeline.run(work, stages=[Measure], limit=2)
    assert summary.counts["toy_measure"]["done"] == 2
    summary = pipeline.run(work, stages=[Measure], limit=2, force=True)
    assert summary.processed["toy_measure"] == 2
    summary = pipeline.run(work, stages=[Measure])
    assert summary.processed["toy_measure"] == 3


def test_a_second_concurrent_run_is_refused(tmp_path):
    work = tmp_path / "work"
    _seed(work, 1)
    lock = pipeline._RunLock(work / ".run.lock")
    with lock, pytest.raises(pipeline.WorkDirBusy):
        pipeline.run(work, stages=[Measure])


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from toy_stages import Measure, Double
from v60k.core import pipeline
from v60k.core.config import PipelineConfig
config = PipelineConfig(stage_settings={{"toy_measure": {{"sleep_s": {sleep}}}, "toy_double": {{"sleep_s": {sleep}}}}})
pipeline.run({work!r}, stages=[Measure, Double], config=config, workers={workers})
"""


def _run_script(work: Path, sleep: float, workers: int) -> subprocess.Popen:
    code = KILL_SCRIPT.format(tests=str(Path(toy_stages.__file__).parent), work=str(work), sleep=sleep, workers=workers)
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def _outputs(work: Path) -> dict[str, dict]:
    return {
        p.parent.name + "/" + p.name: json.loads(p.read_text())
        for p in sorted((work / "videos").glob("*/*.json"))
    }


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_mid_stage_then_resume_matches_an_uninterrupted_run(tmp_path, workers):
    reference, work = tmp_path / "reference", tmp_path / "work"
    for w in (reference, work):
        _seed(w, 16)
    config = PipelineConfig(stage_settings={"toy_measure": {"sleep_s": 0.05}, "toy_double": {"sleep_s": 0.05}})
    pipeline.run(reference, stages=TOY, config=config)

    proc = _run_script(work, 0.05, workers)
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until the run is part-way through the first stage
        if len(calls(work)) >= 5:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with Catalog(work) as catalog:
        counts = catalog.counts()
        done_before = {r["video_id"] for r in catalog.items("toy_measure", "done")}
    assert 0 < counts["toy_measure"]["done"] < 16, counts
    assert counts["toy_double"]["done"] == 0
    for output in work.glob("videos/*/measure.json"):  # whatever was renamed into place is whole
        assert "value" in json.loads(output.read_text())

    pipeline.run(work, stages=TOY, config=config)
    assert _outputs(work) == _outputs(reference)
    measure_calls = Counter(vid for stage, vid in calls(work) if stage == "toy_measure")
    assert all(measure_calls[vid] == 1 for vid in done_before), "a finished item was redone"
    with Catalog(work) as catalog:
        assert catalog.counts()["toy_double"]["done"] == 16
        assert catalog.db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 32  # nothing duplicated


@pytest.mark.slow
def test_ray_executor_runs_the_same_stages(tmp_path):
    pytest.importorskip("ray")
    work = tmp_path / "work"
    _seed(work, 8)
    from v60k.core.executors.ray import RayExecutor

    # Ray's socket paths must stay under 107 bytes: a short link in /tmp points into the test's tmp dir
    ray_dir = tmp_path / "ray"
    ray_dir.mkdir()
    link = Path(tempfile.mkdtemp(prefix="v60k-")) / "ray"
    link.symlink_to(ray_dir)
    executor = RayExecutor(workers=2, num_cpus=2, temp_dir=str(link), node_ip_address="127.0.0.1")
    try:
        # four workers asked for, two CPUs in the cluster: two actors (the others could never start)
        config = _config(toy_measure={"fail_ids": ["vid004"]}).model_copy(
            update={"resources": {"toy_measure": {"workers": 4}}})
        summary = pipeline.run(work, stages=TOY, executor=executor, config=config)
        setups = (work / "setups.log").read_text().splitlines()
        teardowns = (work / "teardowns.log").read_text().splitlines()
        # a stage needing a GPU on a cluster without one: every video says why, nothing waits forever
        no_gpu = pipeline.run(work, stages=TOY, executor=executor, force=True,
                              config=PipelineConfig(resources={"toy_double": {"gpus": 1}}))
    finally:
        executor.close()
        shutil.rmtree(link.parent, ignore_errors=True)
    assert any(ray_dir.iterdir()), "Ray wrote its session files elsewhere"
    assert summary.counts["toy_measure"]["done"] == 7
    assert summary.counts["toy_measure"]["failed"] == 1
    assert summary.counts["toy_double"]["done"] == 7
    assert len(setups) <= 2  # one per actor
    assert sorted(teardowns) == sorted(setups)  # and every actor released what it set up
    assert read_json(work / "videos" / "vid007" / "double.json") == {"value": 12}
    assert no_gpu.counts["toy_double"]["failed"] == 8
    assert no_gpu.failures[0]["error_class"] == "no_resources"
    assert "0 GPU; one worker of this stage needs 1 CPU, 1 GPU" in no_gpu.failures[0]["example"]


def test_worker_resources_follow_the_device_and_the_config():
    from v60k.core.config import ConfigError
    from v60k.core.executors.ray import placeable_workers
    from v60k.core.stage import Resources
    from v60k.stages.diarize import Diarize, DiarizeSettings
    from v60k.stages.transcribe import Transcribe, TranscribeSettings

    config = PipelineConfig(resources={"transcribe": {"gpus": 0.5, "workers": 4}})
    gpu = Transcribe(TranscribeSettings(backend="whisperx", device="cuda"))
    assert pipeline.stage_resources(gpu, PipelineConfig()) == Resources(cpus=1, gpus=1)
    assert pipeline.stage_resources(gpu, config) == Resources(cpus=1, gpus=0.5, workers=4)
    assert pipeline.stage_resources(Transcribe(), PipelineConfig()).gpus == 0
    assert Diarize(DiarizeSettings(backend="pyannote", device="cuda:1")).worker_resources().gpus == 1
    assert Diarize(DiarizeSettings(backend="embeddings")).worker_resources().gpus == 0
    with pytest.raises(ConfigError, match="unknown resource"):
        pipeline.stage_resources(gpu, PipelineConfig(resources={"transcribe": {"vram": 24}}))
    with pytest.raises(ConfigError, match="workers >= 1"):
        pipeline.stage_resources(gpu, PipelineConfig(resources={"transcribe": {"workers": 0}}))

    cluster = {"CPU": 16.0, "GPU": 2.0, "memory": 64 * 2**30}
    assert placeable_workers(Resources(cpus=1, gpus=0.5), 8, cluster) == (4, None)
    assert placeable_workers(Resources(cpus=4), 8, cluster) == (4, None)
    assert placeable_workers(Resources(cpus=1, memory_gb=20), 8, cluster) == (3, None)
    assert placeable_workers(Resources(cpus=1), 8, cluster) == (8, None)
    workers, why = placeable_workers(Resources(cpus=1, gpus=1), 8, {"CPU": 16.0})
    assert workers == 0 and why.startswith("the Ray cluster has 16 CPU, 0 GPU")


# ------------------------------------------------------------------------------------------ plan, dry run, config


def test_plan_counts_what_a_run_would_do_and_changes_nothing(tmp_path):
    work = tmp_path / "work"
    _seed(work, 4)
    before = (work / "catalog.sqlite").read_bytes()
    first = pipeline.plan(work, stages=TOY)
    assert first.todo == {"toy_measure": 4, "toy_double": 4} and not any(first.redo.values())
    assert (work / "catalog.sqlite").read_bytes() == before and calls(work) == []
    pipeline.execute(first)
    assert pipeline.plan(work, stages=TOY).todo == {"toy_measure": 0, "toy_double": 0}

    later = pipeline.plan(work, stages=TOY, config=_config(toy_double={"sleep_s": 0.001}))
    assert later.todo == {"toy_measure": 0, "toy_double": 4}
    assert later.changed["toy_double"] == 4 and later.redo == {"toy_measure": 0, "toy_double": 4}
    assert later.overwrites_llm_output == 0  # toy_double's rows cost no requests
    earlier = pipeline.plan(work, stages=TOY, config=_config(toy_measure={"factor": 2}), limit=3)
    assert earlier.todo == {"toy_measure": 3, "toy_double": 3}
    assert earlier.redo == {"toy_measure": 4, "toy_double": 4}  # every changed row goes pending, --limit or not
    assert earlier.costly_redo["toy_measure"] == 4 and earlier.overwrites_llm_output == 4  # they made requests
    lines = "\n".join(earlier.lines())
    assert "toy_measure      3 to process (4 finished with other settings; 4 done will be redone)" in lines
    assert (work / "catalog.sqlite").read_bytes() != before  # (the run wrote; the plans did not:)
    n = len(calls(work))
    pipeline.plan(work, stages=TOY, config=_config(toy_measure={"factor": 5}), force=True)
    assert len(calls(work)) == n and pipeline.plan(work, stages=TOY).todo["toy_measure"] == 0


def test_a_manifest_and_new_videos_are_counted_before_they_are_added(tmp_path):
    work = tmp_path / "work"
    _seed(work, 2)
    manifest = tmp_path / "videos.jsonl"
    manifest.write_text("".join(json.dumps({"url": f"http://127.0.0.1/new{i}.mp4", "id": f"new{i}"}) + "\n"
                                for i in range(3)))
    the_plan = pipeline.plan(work, stages=[Measure], manifest=manifest)
    assert (the_plan.videos, the_plan.new_videos, the_plan.todo["toy_measure"]) == (5, 3, 5)
    with Catalog(work) as catalog:
        assert catalog.video_count() == 2
    summary = pipeline.execute(the_plan)
    assert summary.processed == {"toy_measure": 5}


def test_execute_stores_the_config_and_status_sums_per_item_outcomes(tmp_path, monkeypatch):
    from v60k.cli import cli
    from v60k.core.config import load_config

    monkeypatch.setenv("V60K_TEST_FACTOR", "3")
    path = tmp_path / "p.yaml"
    path.write_text("toy_measure:\n  factor: ${V60K_TEST_FACTOR}\n")
    config = load_config(path, known_stages=["toy_measure", "toy_double"])
    work = tmp_path / "work"
    _seed(work, 3)
    pipeline.run(work, stages=TOY, config=config)
    assert "factor: ${V60K_TEST_FACTOR}" in (work / "config.yaml").read_text()

    measure = pipeline.status(work)["stages"]["toy_measure"]
    # each of vid000..vid002 measures 6 * 3 = 18 parts, its 3 digits rejected
    assert measure["items"] == {"done": 3 * 15, "rejected": {"digit": 9}, "failed": {}}
    assert measure["totals"] == {"measured": 54.0, "half": 27.0}
    assert pipeline.status(work)["stages"]["toy_double"]["items"] == {"done": 0, "rejected": {}, "failed": {}}

    runner = CliRunner()
    shown = runner.invoke(cli, ["status", "--workdir", str(work)])
    assert shown.exit_code == 0, shown.output
    assert "per-item outcomes" in shown.stdout and "9: digit 9" in shown.stdout and "measured 54" in shown.stdout
    data = json.loads(runner.invoke(cli, ["status", "--workdir", str(work), "--json"]).stdout)
    assert data["stages"]["toy_measure"]["items"]["rejected"] == {"digit": 9}

    # a row that is pending again no longer counts (its metrics describe outputs about to be replaced)
    with Catalog(work) as catalog:
        catalog.force("toy_measure", ["vid000"])
    assert pipeline.status(work)["stages"]["toy_measure"]["totals"]["measured"] == 36.0


@pytest.mark.parametrize("workers", [1, 2])
def test_executors_tear_their_stages_down(tmp_path, workers):
    work = tmp_path / "work"
    _seed(work, 6)
    config = PipelineConfig(resources={"toy_measure": {"workers": workers}})
    pipeline.run(work, stages=[Measure], config=config)
    setups = sorted((work / "setups.log").read_text().splitlines())
    assert setups and sorted((work / "teardowns.log").read_text().splitlines()) == setups


def _finished_work_dir(work: Path, config_path: Path, videos: int = 2) -> None:
    """A work dir as a finished run of ``config_path`` leaves it: every stage done, generate's rows made requests."""
    from v60k.core.catalog import ItemOutcome
    from v60k.core.config import load_config, store_config
    from v60k.stages import STAGE_ORDER

    config = load_config(config_path)
    fingerprints = pipeline.plan(work, config=config).fingerprints
    with Catalog(work) as catalog:
        catalog.add_videos(manifest_rows(videos))
        catalog.ensure_items(list(STAGE_ORDER))
        for stage in STAGE_ORDER:
            usage = {"requests": 3, "prompt_tokens": 900} if stage == "generate" else {}
            for i in range(videos):
                catalog.record(ItemOutcome(f"vid{i:03d}", stage, "done", 1.0, 2.0, usage=usage),
                               fingerprints[stage])
    store_config(work, config)


def test_without_config_the_work_dirs_config_is_used_and_llm_output_is_not_redone_unasked(tmp_path):
    from v60k.cli import cli

    work = tmp_path / "work"
    _finished_work_dir(work, Path(__file__).resolve().parent.parent / "pipelines" / "demo.yaml")
    before = (work / "catalog.sqlite").read_bytes()
    runner = CliRunner()

    dry = runner.invoke(cli, ["run", "--workdir", str(work), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "config.yaml" in dry.stdout and "generate         0 to process" in dry.stdout
    assert all(line.split()[1] == "0" for line in dry.stdout.splitlines()[1:] if "to process" in line)
    again = runner.invoke(cli, ["generate", "--workdir", str(work), "--quiet"])
    assert again.exit_code == 0, again.output
    with Catalog(work) as catalog:  # nothing re-generated, nothing reset
        assert catalog.counts()["generate"]["done"] == 2

    changed = ["run", "--workdir", str(work), "--set", "clips.min_s=20"]
    plan = runner.invoke(cli, [*changed, "--dry-run"])
    assert plan.exit_code == 0 and "clips            2 to process" in plan.stdout
    assert "generate         2 to process (2 done will be redone)" in plan.stdout and "needs --yes" in plan.stdout
    refused = runner.invoke(cli, changed)
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    [line] = refused.stderr.splitlines()
    assert "clips 2" in line and "generate 2" in line and "--yes" in line
    with Catalog(work) as catalog:
        assert all(catalog.counts()[s]["done"] == 2 for s in ("clips", "sample", "generate"))
    assert "min_s: 30" in (work / "config.yaml").read_text()  # the refused config was not stored
    assert before != b""  # (the catalog was only read by the dry runs and the refusal)


def test_one_failure_has_one_name_in_the_catalog(tmp_path):
    from toy_stages import Unsourced

    from v60k.core.errors import MISSING_INPUT

    work = tmp_path / "work"
    _seed(work, 2)
    summary = pipeline.run(work, stages=[Unsourced])
    assert {(f["error_class"], f["count"]) for f in summary.failures} == {(MISSING_INPUT, 2)}
