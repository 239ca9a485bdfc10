"""One batch of bad input through download + scenes: every bad item ends failed or skipped with a clear,
classified reason, the good ones finish, ``status`` groups them, and retry + re-run redoes no finished work."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from urllib.parse import quote

import ffmpeg
import pytest
from click.testing import CliRunner

from v60k.cli import cli
from v60k.core import pipeline
from v60k.core.catalog import Catalog
from v60k.core.workdir import read_json
from v60k.testing.sample_episodes import build_scene_video

FAST = {"retries": 1, "backoff_base_s": 0.001, "backoff_max_s": 0.01, "socket_timeout_s": 5,
        "allow_private_networks": True}  # the test server is on 127.0.0.1
ODD_TITLE = "Ross & Rachel \u200f«שלום» — 日本語 🎬 Zoë e\u0301 \u202eevil\u202c 𝔉𝔯𝔦𝔢𝔫𝔡𝔰"
ODD_FILE = "Joey’s “best” — ça 🍕"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served(media_server) -> dict[str, str]:
    """The bad (and good) files on the test server; returns name → URL."""
    root: Path = media_server.root
    build_scene_video(root / "good.mp4", [1.0, 1.0], width=320, height=180, fps=10)
    build_scene_video(root / "silent.mp4", [1.0, 1.0], width=320, height=180, fps=10, audio=False)
    sine = ffmpeg.input("sine=frequency=440:sample_rate=22050", f="lavfi", t=2)
    ffmpeg.output(sine, str(root / "voice.mp4"), acodec="aac").overwrite_output().run(quiet=True)
    good = (root / "good.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 2])  # index first: it still probes
    (root / "page.mp4").write_text("<!DOCTYPE html><html><body><h1>Video not found</h1></body></html>")
    (root / "empty.mp4").write_bytes(b"")
    for name in ("escape.mp4", "odd.mp4", f"{ODD_FILE}.mp4"):
        (root / name).write_bytes(good + name.encode())  # trailing bytes: distinct files, not duplicates
    return {p.name: media_server.url(quote(p.name)) for p in root.iterdir()}


def _manifest(path: Path, served: dict[str, str]) -> Path:
    rows = [
        {"url": served["good.mp4"], "id": "good", "series": "Friends", "characters": "Monica;Ross"},  # 1
        {"url": served["truncated.mp4"], "id": "truncated"},  # 2
        {"url": served["page.mp4"], "id": "html-page"},  # 3
        {"url": served["voice.mp4"], "id": "audio-only"},  # 4
        {"url": served["silent.mp4"], "id": "no-audio"},  # 5
        {"url": served["empty.mp4"], "id": "zero-bytes"},  # 6
        {"url": served["good.mp4"].replace("good.mp4", "missing.mp4"), "id": "not-found"},  # 7
        {"url": f"http://127.0.0.1:{_closed_port()}/episode.mp4", "id": "unreachable"},  # 8
        {"url": "file:///etc/hosts", "id": "local-file"},  # 9
        {"url": served["escape.mp4"], "id": "../../escape"},  # 10
        {"url": served[f"{ODD_FILE}.mp4"]},  # 11: title from the file name
        {"url": served["odd.mp4"], "id": "odd-title", "title": ODD_TITLE},  # 12
    ]
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines += [
        '{"url": "http://127.0.0.1/broken.mp4", ',  # 13: not JSON
        json.dumps({"id": "no-url", "series": "Friends"}),  # 14: no url
        json.dumps({"url": served["good.mp4"].replace("http://", "HTTP://") + "#t=3"}),  # 15: same URL as row 1
        json.dumps({"url": served["odd.mp4"] + "?v=2", "characters": 42}),  # 16: characters not a list
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


EXPECTED_FAILURES = {
    "truncated": ("corrupt_media", "truncated"),
    "html-page": ("not_a_video", "web page"),
    "audio-only": ("not_a_video", "audio only"),
    "zero-bytes": ("empty_file", "empty"),
    "not-found": ("unavailable", "404"),
    "unreachable": ("unreachable", "Connection refused"),
    "local-file": ("unsupported_scheme", "file://"),
}


def test_one_bad_batch_through_download_and_scenes(tmp_path, served):
    work = tmp_path / "work"
    manifest = _manifest(tmp_path / "batch.jsonl", served)
    summary = pipeline.run(work, manifest=manifest, stages=["download", "scenes"], overrides={"download": FAST})

    # malformed and duplicate rows are reported with their row numbers, and the rest of the batch runs
    rejected = {r["row"]: r["reason"] for r in summary.manifest["rejected"]}
    assert sorted(rejected) == [13, 14, 16]
    assert "JSON" in rejected[13] and "missing url" in rejected[14] and "characters" in rejected[16]
    assert [(d["row"], d["reason"]) for d in summary.manifest["duplicates"]] == [(15, "duplicate of row 1 (same URL)")]

    with Catalog(work) as catalog:
        videos = {v.video_id: v for v in catalog.videos()}
        download = {vid: catalog.item(vid, "download") for vid in videos}
        scenes = {vid: catalog.item(vid, "scenes") for vid in videos}
    assert len(videos) == 12

    for vid, (error_class, words) in EXPECTED_FAILURES.items():
        item = download[vid]
        assert (item["state"], item["error_class"]) == ("failed", error_class), (vid, item["error_message"])
        assert words in item["error_message"], (vid, item["error_message"])
        assert not (work / "videos" / vid / "source.mp4").exists()
        assert (scenes[vid]["state"], scenes[vid]["error_class"]) == ("skipped", "upstream_failed")

    done = sorted(vid for vid, item in download.items() if item["state"] == "done")
    assert len(done) == 5 and {"good", "no-audio", "odd-title"} <= set(done)
    assert all(scenes[vid]["state"] == "done" for vid in done)

    # a video without audio is done, recorded as such (the speech stages will skip it)
    assert download["no-audio"]["metrics"]["has_audio"] is False
    assert read_json(work / "videos" / "no-audio" / "scenes.json")["stream"]["has_audio"] is False
    assert download["good"]["metrics"]["has_audio"] is True

    # the id that tried ../ was sanitized: its files stay under videos/
    escaped = next(vid for vid in done if "escape" in vid)
    assert "/" not in escaped and ".." not in escaped
    assert videos[escaped].extra["manifest_id"] == "../../escape"
    assert (work / "videos" / escaped / "source.mp4").exists()
    assert sorted(p.name for p in work.iterdir() if not p.name.startswith(".")) == ["catalog.sqlite", "config.yaml", "videos"]

    # odd Unicode survives intact: the manifest's title, and a title taken from the URL's file name
    assert read_json(work / "videos" / "odd-title" / "info.json")["title"] == ODD_TITLE
    from_url = next(vid for vid in done if vid not in {"good", "no-audio", "odd-title", escaped})
    assert read_json(work / "videos" / from_url / "info.json")["title"] == ODD_FILE

    # status groups the failures by reason
    groups = {(f["stage"], f["state"], f["error_class"]): f["count"] for f in pipeline.status(work)["failures"]}
    assert groups == {
        ("download", "failed", "corrupt_media"): 1,
        ("download", "failed", "not_a_video"): 2,
        ("download", "failed", "empty_file"): 1,
        ("download", "failed", "unavailable"): 1,
        ("download", "failed", "unreachable"): 1,
        ("download", "failed", "unsupported_scheme"): 1,
        ("scenes", "skipped", "upstream_failed"): 7,
    }

    # retry + re-run: only the failed items run again; nothing finished is redone
    stamps = {vid: ((work / "videos" / vid / "source.mp4").stat().st_mtime_ns,
                    (work / "videos" / vid / "scenes.json").stat().st_mtime_ns) for vid in done}
    assert pipeline.retry(work, "download") == 7
    again = pipeline.run(work, stages=["download", "scenes"], overrides={"download": FAST})
    assert again.processed == {"download": 7, "scenes": 0}
    assert again.counts["download"]["done"] == 5 and again.counts["download"]["failed"] == 7
    with Catalog(work) as catalog:
        for vid in done:
            assert catalog.item(vid, "download")["attempts"] == 1
        for vid, (error_class, _) in EXPECTED_FAILURES.items():
            item = catalog.item(vid, "download")
            assert (item["attempts"], item["error_class"]) == (2, error_class)
    assert stamps == {vid: ((work / "videos" / vid / "source.mp4").stat().st_mtime_ns,
                            (work / "videos" / vid / "scenes.json").stat().st_mtime_ns) for vid in done}


def test_a_hostile_mixed_manifest_through_the_cli(tmp_path, served):
    """Encodings, oversized fields, an alias bomb, a blocked address: every valid row runs, no traceback."""
    huge = "x" * 200_000
    lines = [
        "url,id,title",
        f"{served['good.mp4']},good,Pilot",  # 1
        f"{served['odd.mp4']},latin,Zoë",  # 2: a Latin-1 byte in a UTF-8 file
        f"{served['escape.mp4']},huge,{huge}",  # 3: a field above the csv module's limit
        "http://169.254.169.254/latest/meta-data/,metadata,",  # 4: the cloud metadata service
        f"{served['silent.mp4']},silent,Quiet",  # 5
    ]
    manifest = tmp_path / "mixed.csv"
    manifest.write_bytes("\n".join(lines).encode("utf-8").replace("Zoë".encode(), "Zoë".encode("latin-1")) + b"\n")
    work = tmp_path / "work"
    sets = [arg for key, value in FAST.items() for arg in ("--set", f"{key}={value}")]
    result = CliRunner().invoke(cli, ["download", str(manifest), "--workdir", str(work), *sets])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and result.exception is None
    assert "row 2" in result.output and "not UTF-8" in result.output and "row 3" in result.output
    with Catalog(work) as catalog:
        states = {v.video_id: catalog.item(v.video_id, "download") for v in catalog.videos()}
    assert {vid: item["state"] for vid, item in states.items()} == {"good": "done", "silent": "done",
                                                                     "metadata": "failed"}
    assert states["metadata"]["error_class"] == "blocked_address"

    bomb = tmp_path / "bomb.yaml"
    levels = [f"  {c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    bomb.write_text("\n".join([f"- url: {served['good.mp4']}", f"- url: {served['odd.mp4']}",
                               '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]', *levels,
                               f"- url: {served['silent.mp4']}"]) + "\n", encoding="utf-8")
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["download", str(bomb), "--workdir", str(tmp_path / "w2"), *sets])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "row 2" in result.output and "aliases" in result.output and time.monotonic() - started < 60
    with Catalog(tmp_path / "w2") as catalog:
        assert sorted(v.source_url for v in catalog.videos()) == sorted([served["good.mp4"], served["silent.mp4"]])

    nonsense = tmp_path / "typo.yaml"
    nonsense.write_text(f"video:\n  - url: {served['good.mp4']}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["download", str(nonsense), "--workdir", str(tmp_path / "w3")])
    assert result.exit_code == 2 and "'videos:'" in result.output and result.output.count("\n") == 1, result.output
