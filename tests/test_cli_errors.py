"""A user's mistakes through the real command line: one clear line naming the file (or --set), the section and
the key, exit code 2 for usage and config errors and 1 for a work dir that cannot be used, never a traceback, and
never the value of a secret or of an expanded ${VAR}, neither on screen nor in the work dir."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from toy_stages import manifest_rows

from v60k.cli import cli
from v60k.core.catalog import Catalog

REPO = Path(__file__).resolve().parent.parent
SECRET = "sk-test-SECRET123"


@pytest.fixture(autouse=True)
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("V60K_TEST_TOKEN", SECRET)


def _yaml(path: Path, data: dict | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def _one_line_error(result, code: int, *fragments: str) -> str:
    """The command failed with ``code`` and one 'Error:' line holding every fragment; no trace, no secret."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and SECRET not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _nothing_secret_in(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


# ------------------------------------------------------------------------------------------ A: secrets


def test_a_secret_in_a_mistyped_llm_key_is_never_echoed_by_any_command(tmp_path):
    config = _yaml(tmp_path / "pipeline.yaml", "llm:\n  api_key: ${OPENAI_API_KEY}\n  base_url: http://127.0.0.1:9/v1\n")
    work = tmp_path / "work"
    shards = tmp_path / "shards"
    shards.mkdir()
    commands = [
        ["run", "--config", str(config), "--workdir", str(work)],
        ["generate", "--config", str(config), "--workdir", str(work)],
        ["chat", "--video", str(tmp_path / "x.mp4"), "--character", "Ross", "--config", str(config), "--once", "Hi"],
        ["eval", "--shards", str(shards), "--model", "m", "--config", str(config), "--workdir", str(work)],
        ["shard", "--config", str(config), "--workdir", str(work), "--out", str(tmp_path / "corpus")],
    ]
    for args in commands:
        line = _one_line_error(_invoke(*args), 2, "pipeline.yaml: llm.api_key: unknown key", "api_key_env")
        assert "input_value" not in line
    assert not work.exists() or not (work / "catalog.sqlite").exists()  # found before any work


def test_an_expanded_variable_in_a_wrong_typed_field_is_not_echoed(tmp_path):
    config = _yaml(tmp_path / "pipeline.yaml", "llm:\n  timeout_s: ${V60K_TEST_TOKEN}\n"
                                                "scenes:\n  detector: ${V60K_TEST_TOKEN}\n")
    result = _invoke("run", "--config", str(config), "--workdir", str(tmp_path / "work"))
    _one_line_error(result, 2, "llm.timeout_s", "scenes.detector")
    # a --set value that is the secret itself is not shown either
    result = _invoke("run", "--workdir", str(tmp_path / "work"), "--set", f"llm.timeout_s={SECRET}")
    _one_line_error(result, 2, "--set llm.timeout_s", "valid number")


def test_the_stored_config_holds_references_never_values(tmp_path, monkeypatch):
    monkeypatch.setenv("V60K_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    work = tmp_path / "work"
    with Catalog(work) as catalog:  # a video whose download fails fast: the run goes through every step
        catalog.add_videos([{"video_id": "v1", "source_url": "http://127.0.0.1:9/missing.mp4"}])
    config = _yaml(tmp_path / "pipeline.yaml", "download:\n  retries: 0\n  cookies_file: ${V60K_TEST_TOKEN}\n"
                                               "llm:\n  base_url: ${V60K_LLM_BASE_URL}\n  model: ${V60K_TEST_TOKEN}\n")
    result = _invoke("run", "--stages", "download", "--config", str(config), "--workdir", str(work), "--quiet")
    assert SECRET not in result.output and "Traceback" not in result.output, result.output
    stored = (work / "config.yaml").read_text()
    assert "${V60K_TEST_TOKEN}" in stored and "${V60K_LLM_BASE_URL}" in stored
    _nothing_secret_in(work)


# ------------------------------------------------------------------------------------------ B: user mistakes


def test_stage_key_mistakes_name_the_file_section_and_key(tmp_path):
    work = str(tmp_path / "work")
    config = _yaml(tmp_path / "p.yaml", {"scenes": {"detectr": "content"}})
    _one_line_error(_invoke("run", "-c", str(config), "-w", work), 2, "p.yaml: scenes.detectr: unknown key",
                    "did you mean 'detector'")
    config = _yaml(tmp_path / "q.yaml", {"scense": {"detector": "content"}})
    _one_line_error(_invoke("run", "-c", str(config), "-w", work), 2, "q.yaml: scense: unknown section",
                    "did you mean 'scenes'")
    config = _yaml(tmp_path / "r.yaml", {"resources": {"transcribe": {"vram": 24}}})
    _one_line_error(_invoke("run", "-c", str(config), "-w", work), 2, "r.yaml: resources.transcribe",
                    "unknown resource")
    _one_line_error(_invoke("scenes", "--set", "detectr=content", "-w", work), 2, "--set scenes.detectr: unknown key")
    _one_line_error(_invoke("scenes", "--set", "min_scene_len_s=abc", "-w", work), 2, "--set scenes.min_scene_len_s")
    _one_line_error(_invoke("run", "--set", "novalue", "-w", work), 2, "expected SECTION.KEY=VALUE")
    _one_line_error(_invoke("run", "--set", "stages=[scenes, bogus]", "-w", work), 2, "unknown stage 'bogus'")
    assert not Path(work).exists()


@pytest.mark.parametrize("args", [["--workers", "0"], ["--limit", "0"], ["--stages", "bogus"],
                                  ["--stages", "scenes,bogus"]])
def test_nonsense_flags_are_refused(tmp_path, args):
    result = _invoke("run", "--workdir", str(tmp_path / "work"), *args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Invalid value" in result.stderr
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("output, fragment", [
    ({"splits": {"train": 0.9, "validation": -0.1, "test": 0.2}}, "output.splits.validation"),
    ({"splits": {"train": 0.8, "test": 0.1}}, "must sum to 1"),
    ({"split_method": "random"}, "output.split_method"),
    ({"shard_size_mb": 0}, "output.shard_size_mb"),
    ({"directory": "x"}, "output.directory: unknown key (known: dir,"),
])
def test_a_bad_output_section_is_refused_before_any_stage_runs(tmp_path, output, fragment):
    config = yaml.safe_load((REPO / "pipelines" / "demo.yaml").read_text())
    config["output"] = {**config["output"], **output}
    path = _yaml(tmp_path / "p.yaml", config)
    work = tmp_path / "work"
    _one_line_error(_invoke("run", "-c", str(path), "-w", str(work)), 2, "p.yaml:", fragment)
    assert not work.exists()
    _one_line_error(_invoke("shard", "-c", str(path), "-w", str(work), "--out", str(tmp_path / "c")), 2, fragment)


def test_set_works_on_run_and_on_generate(tmp_path):
    work = str(tmp_path / "work")
    for command in ("run", "generate"):
        result = _invoke(command, "--workdir", work, "--set", "llm.base_url=http://127.0.0.1:9/v1",
                         "--set", "llm.model=m", "--dry-run")
        assert result.exit_code == 0, result.output
        assert "to process" in result.stdout
    result = _invoke("run", "--workdir", work, "--out", str(tmp_path / "corpus"), "--dry-run")
    assert result.exit_code == 0 and f"then the shards, to {tmp_path / 'corpus'}" in result.stdout
    assert not Path(work).exists()  # a dry run writes nothing


def _catalog_with_videos(work: Path, n: int = 3) -> None:
    with Catalog(work) as catalog:
        catalog.add_videos(manifest_rows(n))


def test_a_half_written_catalog_is_one_line_and_is_left_alone(tmp_path):
    work = tmp_path / "work"
    _catalog_with_videos(work)
    catalog = work / "catalog.sqlite"
    catalog.write_bytes(catalog.read_bytes()[:3000])  # cut short: its tables are gone
    before = catalog.read_bytes()
    for args in (["status"], ["run", "--stages", "scenes"], ["retry"], ["run", "--dry-run"]):
        _one_line_error(_invoke(*args, "--workdir", str(work)), 1, "catalog.sqlite", "v60k doctor")
    garbage = b"this is no SQLite file" * 50
    catalog.write_bytes(garbage)
    _one_line_error(_invoke("status", "--workdir", str(work)), 1, "catalog.sqlite", "v60k doctor")
    _one_line_error(_invoke("report", "--workdir", str(work), "--out", str(tmp_path / "r.html")), 1, "catalog")
    assert catalog.read_bytes() == garbage  # nothing lost, nothing rewritten
    assert before  # (the first cut was left as it was too: checked by each command's refusal above)


def _limited_disk() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) like one on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))


def test_a_full_disk_is_one_line_and_status_still_reads(tmp_path):
    work = tmp_path / "work"
    _catalog_with_videos(work)
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def v60k(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "v60k", *args, "--workdir", str(work)], env=env, text=True,
                              capture_output=True, preexec_fn=_limited_disk, timeout=120)

    run = v60k("run", "--stages", "download", "--quiet")
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr and run.stderr.startswith("Error: ") and len(run.stderr.splitlines()) == 1
    assert "is the disk full" in run.stderr or "disk is full" in run.stderr
    status = v60k("status", "--json")
    assert status.returncode == 0, status.stderr
    assert '"videos": 3' in status.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_work_dir(tmp_path):
    work = tmp_path / "work"
    _catalog_with_videos(work)
    for path in [work, *work.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        assert _invoke("status", "--workdir", str(work)).exit_code == 0
        _one_line_error(_invoke("run", "--stages", "scenes", "--workdir", str(work)), 1, "cannot be written")
    finally:
        for path in [work, *work.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)


def test_missing_status_work_dir_and_manifest_errors_are_one_line(tmp_path):
    _one_line_error(_invoke("status", "--workdir", str(tmp_path / "none")), 1, "no catalog in")
    manifest = tmp_path / "videos.xml"
    manifest.write_text("http://x/y.mp4\n")
    _one_line_error(_invoke("download", str(manifest), "--workdir", str(tmp_path / "w")), 2,
                    "unknown manifest format")


def test_errors_are_v60k_errors_with_their_exit_codes():
    from v60k.core.config import ConfigError
    from v60k.core.errors import UsageError, V60kError, WorkDirError
    from v60k.core.locks import WorkDirBusy
    from v60k.core.manifest import ManifestError
    from v60k.core.pipeline import WorkDirBusy as PipelineWorkDirBusy
    from v60k.dataset.publish import PublishError
    from v60k.dataset.writer import ShardError
    from v60k.roleplay.chat import ChatError
    from v60k.roleplay.sft_export import ExportError

    assert PipelineWorkDirBusy is WorkDirBusy
    for usage in (ConfigError, ManifestError):
        assert issubclass(usage, UsageError) and usage.exit_code == 2
    for failure in (WorkDirBusy, WorkDirError, ChatError, ExportError, PublishError, ShardError):
        assert issubclass(failure, V60kError) and failure.exit_code == 1
