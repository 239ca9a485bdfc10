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
from v60k.core.workdir import read_json, write_json
from v60k.dataset import OutputSettings, write_report, write_shards
from v60k.dataset.report import CorpusFacts, render_report, stage_outcomes
from v60k.testing.sample_workdirs import build_workdir, mark

EVAL = {"model": "model-under-test", "judge": "judge-model", "rubric_version": "v1",
        "metrics": {"fluency": {"ratio": 0.93, "model_mean": 7.1, "reference_mean": 7.6, "n_valid": 10, "n_dropped": 1},
                    "tone_consistency": {"ratio": 1.04, "model_mean": 8.0, "reference_mean": 7.7, "n_valid": 11,
                                         "n_dropped": 0}},
        "overall": 0.985}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--enable-logging=stderr", "--v=0"]


REJECTED = [{"kind": "dialogue", "clip_id": "vid0001-c000", "reason": "out_of_character", "score": 0.2},
            {"kind": "dialogue", "clip_id": "vid0001-c001", "reason": "out_of_character", "score": 0.1},
            {"kind": "summary", "clip_id": "vid0001-c001", "reason": "too_short"}]


def _workdir(tmp_path: Path):
    workdir = build_workdir(tmp_path / "work", videos=4)
    mark(workdir, "vid0003", "generate", "failed", "llm_timeout", "the endpoint did not answer")
    path = workdir.paths("vid0001").generation_json
    generation = read_json(path)  # what the generate stage's quality gate adds
    generation["rejected"] = REJECTED
    generation["dialogues"][0]["scores"] = {"fluency": 4, "coherency": 3}
    generation["dialogues"][1]["scores"] = {"fluency": 6}
    write_json(path, generation)
    return workdir


def test_report_is_self_contained_with_every_plot(tmp_path: Path) -> None:
    workdir = _workdir(tmp_path)
    out = write_report(workdir.root, tmp_path / "report.html", eval_results=EVAL)
    page = out.read_text()
    for title in ("Video durations", "Lines per character", "Dialogues per character", "Attribution confidence",
                  "Scenes per video", "Languages", "Failures and skips by reason", "Tokens and cost", "Evaluation",
                  "Sample clips", "Per-dialogue statistics", "Rejected items by reason"):
        assert f"<h2>{title}" in page, title
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from elsewhere
    assert "llm_timeout" in page and "tone_consistency" in page and "0.985" in page
    assert page.count('data-chart="bar"') >= 5 and page.count('data-chart="histogram"') == 5
    assert 'data-label="Monica" data-value="8"' in page  # lines per character: 2 videos x 4 lines x 2 clips / 2


def test_the_gallery_shows_sample_clips_with_frames_in_order_summary_dialogues_and_confidence(tmp_path: Path) -> None:
    page = write_report(_workdir(tmp_path).root, tmp_path / "report.html").read_text()
    clips = re.findall(r'<article class="clip" data-clip="([^"]+)">(.*?)</article>', page, re.DOTALL)
    # one clip per video with a dialogue (vid0003's generation failed), at most four
    assert [clip_id for clip_id, _ in clips] == ["vid0000-c000", "vid0001-c000", "vid0002-c000"]
    body = dict(clips)["vid0001-c000"]
    times = [float(t) for t in re.findall(r"<figcaption>([\d.]+) s</figcaption>", body)]
    assert times == [5.0, 15.0, 25.0]  # temporal order, with their times
    assert body.count('<img src="data:image/jpeg;base64,') == 3
    assert "In clip 0 of vid0001, Ada and Grace talk." in body  # the summary
    assert [h for h in re.findall(r"<h4>(\w+)</h4>", body)] == ["Ada", "Grace"]  # one dialogue per character
    assert "<td>Ada</td><td>0.90</td>" in body.replace('<td class="">', "<td>")  # confidence per line


def test_rejected_items_dialogue_statistics_and_cost_per_dialogue(tmp_path: Path) -> None:
    page = write_report(_workdir(tmp_path).root, tmp_path / "report.html").read_text()
    assert "<h2>Rejected items by reason" in page
    assert 'data-label="dialogue: out_of_character" data-value="2"' in page
    assert "vid0001-c000" in page and "score=0.2" in page  # an example of each reason
    assert 'data-label="summary: too_short" data-value="1"' in page
    assert "<h2>Per-dialogue statistics" in page
    assert re.search(r"<b>\$0\.000\d+</b><span>cost per dialogue", page)
    flat = page.replace('<td class="">', "<td>").replace('<td class="num">', "<td>")
    assert "<td>fluency</td><td>2</td><td>5</td>" in flat  # judge scores in the dialogues: mean of 4 and 6


def test_stage_outcomes_and_totals_from_the_status_are_rendered() -> None:
    state = {"stages": {"transcribe": {"done": 3, "items": {"done": 3, "rejected": {"no_speech": 2},
                                                            "failed": {"bad_audio": 1}},
                                       "totals": {"dropped_speech_s": 3.25}}},
             "totals": {"generate": {"dialogues": 12.0}}}
    facts = CorpusFacts()
    facts.stage_items, facts.stage_totals = stage_outcomes(state)
    page = render_report(facts).replace('<td class="">', "<td>").replace('<td class="num">', "<td>")
    assert "<h2>Item outcomes and totals per stage" in page
    assert "<td>transcribe</td><td>3</td><td>2</td><td>1</td><td>no_speech 2</td><td>bad_audio 1</td>" in page
    assert "<td>dropped_speech_s</td><td>3.250</td>" in page and "<td>dialogues</td><td>12</td>" in page
    assert "Item outcomes" not in render_report(CorpusFacts())  # nothing reported: no section


def test_a_metric_without_a_valid_judgement_is_n_a_never_a_zero_bar(tmp_path: Path) -> None:
    results = {**EVAL, "metrics": {**EVAL["metrics"], "coherency": {"ratio": None, "model_mean": None,
                                                                  "reference_mean": None, "n_valid": 0,
                                                                  "n_dropped": 7}}}
    page = render_report(CorpusFacts(), eval_results=results)
    section = page[page.index("<h2>Evaluation"):]
    assert 'data-label="coherency"' not in section and 'data-label="fluency"' in section
    assert "<td>coherency</td>" in section.replace('<td class="">', "<td>") and "n/a" in section


def test_report_from_shards_matches_the_corpus(tmp_path: Path) -> None:
    workdir = build_workdir(tmp_path / "work", videos=3)
    write_shards(workdir, tmp_path / "corpus", OutputSettings(check=False))
    result = CliRunner().invoke(cli, ["report", "--shards", str(tmp_path / "corpus"), "--out",
                                      str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert "<b>3</b><span>videos</span>" in page and "<b>12</b><span>dialogues</span>" in page
    assert "Evaluation" not in page and "Failures" not in page  # no catalog, no eval given
    assert page.count('<article class="clip"') == 3 and page.count('<img src="data:image/jpeg') == 9  # the gallery
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
    from PIL import Image, ImageStat

    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 1800)
    colours = image.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 50  # text and charts, not a blank page
    blue = sum(n for n, rgb in colours if rgb[2] > 180 and rgb[0] < 90)  # the bars (#2f6fde)
    assert blue > 2000

    # the gallery: every thumbnail decoded, and the first strip of them is no blank area on the screenshot
    assert 'data-thumbs="9/9"' in dom.stdout
    x, y, w, h = (int(v) for v in re.search(r'data-gallery-rect="([\d,]+)"', dom.stdout).group(1).split(","))
    assert w >= 3 * 160 and h >= 90
    strip = ImageStat.Stat(image.crop((x, y, x + w, y + h)).convert("L"))
    header = ImageStat.Stat(image.crop((0, 0, 1280, 12)).convert("L"))  # a blank band, for contrast
    assert strip.stddev[0] > 20 and header.stddev[0] < 5


def test_a_script_error_would_be_caught(tmp_path: Path) -> None:
    workdir = _workdir(tmp_path)
    page = write_report(workdir.root, tmp_path / "report.html")
    broken = tmp_path / "broken.html"
    broken.write_text(page.read_text().replace("</main>", "</main><script>notDefinedAnywhere();</script>"))
    dom = _render(broken, tmp_path / "profile2", "--dump-dom")
    assert '<html lang="en" data-js-errors="1"' in dom.stdout and "notDefinedAnywhere" in dom.stdout
    assert any("notDefinedAnywhere" in line for line in _console_errors(dom.stderr))
