"""The HTML report: self-contained, every plot present, and it renders in headless Chromium with no script
errors (a page with a deliberate error is caught the same way)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from v60k.cli import cli
from v60k.dataset import OutputSettings, write_report, write_shards
from v60k.dataset.synthetic import build_workdir, mark

EVAL = {"model": "model-under-test", "judge": "judge-model", "rubric_version": "v1",
        "metrics": {"fluency": {"ratio": 0.93, "model_mean": 7.1, "reference_mean": 7.6, "n_valid": 10, "n_dropped": 1},
                    "tone_consistency": {"ratio": 1.04, "model_mean": 8.0, "reference_mean": 7.7, "n_valid": 11,
                                         "n_dropped": 0}},
        "overall": 0.985}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--enable-logging=stderr", "--v=0"]


def _workdir(tmp_path: Path):
    workdir = build_workdir(tmp_path / "work", videos=4)
    mark(workdir, "vid0003", "generate", "failed", "llm_timeout", "the endpoint did not answer")
    return workdir


def test_report_is_self_contained_with_every_plot(tmp_path: Path) -> None:
    workdir = _workdir(tmp_path)
    out = write_report(workdir.root, tmp_path / "report.html", eval_results=EVAL)
    page = out.read_text()
    for title in ("Video durations", "Lines per character", "Dialogues per character", "Attribution confidence",
                  "Scenes per video", "Languages", "Failures and skips by reason", "Tokens and cost", "Evaluation"):
        assert f"<h2>{title}" in page, title
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from elsewhere
    assert "llm_timeout" in page and "tone_consistency" in page and "0.985" in page
    assert page.count('data-chart="bar"') >= 5 and page.count('data-chart="histogram"') == 3
    assert 'data-label="Monica" data-value="8"' in page  # lines per character: 2 videos x 4 lines x 2 clips / 2


def test_report_from_shards_matches_the_corpus(tmp_path: Path) -> None:
    workdir = build_workdir(tmp_path / "work", videos=3)
    write_shards(workdir, tmp_path / "corpus", OutputSettings(check=False))
    result = CliRunner().invoke(cli, ["report", "--shards", str(tmp_path / "corpus"), "--out",
                                      str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert "<b>3</b><span>videos</span>" in page and "<b>12</b><span>dialogues</span>" in page
    assert "Evaluation" not in page and "Failures" not in page  # no catalog, no eval given
    bad = CliRunner().invoke(cli, ["report", "--shards", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.html")])
    assert bad.exit_code != 0 and "shard folder" in bad.output


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("chromium is not installed")
    return path


def _render(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def test_report_renders_in_chromium_without_errors(tmp_path: Path) -> None:
    workdir = _workdir(tmp_path)
    page = write_report(workdir.root, tmp_path / "report.html", eval_results=EVAL)
    dom = _render(page, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-rendered="1"' in dom.stdout  # the page's script ran to its end
    assert '<html lang="en" data-js-errors' not in dom.stdout and _console_errors(dom.stderr) == []
    assert '<div id="js-errors"></div>' in dom.stdout  # the in-page error list is empty

    shot = tmp_path / "report.png"
    result = _render(page, tmp_path / "profile-shot", "--window-size=1280,1800", f"--screenshot={shot}")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 1800)
    colours = image.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 50  # text and charts, not a blank page
    blue = sum(n for n, rgb in colours if rgb[2] > 180 and rgb[0] < 90)  # the bars (#2f6fde)
    assert blue > 2000


def test_a_script_error_would_be_caught(tmp_path: Path) -> None:
    workdir = _workdir(tmp_path)
    page = write_report(workdir.root, tmp_path / "report.html")
    broken = tmp_path / "broken.html"
    broken.write_text(page.read_text().replace("</main>", "</main><script>notDefinedAnywhere();</script>"))
    dom = _render(broken, tmp_path / "profile2", "--dump-dom")
    assert '<html lang="en" data-js-errors="1"' in dom.stdout and "notDefinedAnywhere" in dom.stdout
    assert any("notDefinedAnywhere" in line for line in _console_errors(dom.stderr))
