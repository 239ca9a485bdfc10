"""The download stage: real yt-dlp against a real HTTP server on 127.0.0.1, real ffmpeg, real SQLite."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import ffmpeg
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from v60k.cli import cli
from v60k.core import pipeline
from v60k.core.catalog import Catalog
from v60k.core.config import load_config
from v60k.core.netguard import address_refusal
from v60k.core.stage import SkipVideo, StageError, Video
from v60k.core.workdir import read_json, sanitize_id
from v60k.stages import STAGE_ORDER
from v60k.stages.download import STAGING_DIR, Download, classify_download_error, parse_rate
from v60k.testing.sample_episodes import MediaServer, build_scene_video

# tiny waits: the retry logic runs for real, the test does not sleep for long
REPO = Path(__file__).resolve().parent.parent
FAST = {"retries": 2, "backoff_base_s": 0.001, "backoff_max_s": 0.01, "socket_timeout_s": 5,
        "allow_private_networks": True}  # the test server is on 127.0.0.1
INFO_KEYS = {"id", "title", "channel", "uploader", "duration", "license", "upload_date", "tags", "description",
             "webpage_url", "extractor", "width", "height", "fps", "vcodec", "acodec", "filesize", "subtitles",
             "content_sha256"}


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the directory (with HTTP Range); records each request; answers scripted error statuses,
    redirects and transfer faults first."""

    def log_message(self, *args: object) -> None:
        pass

    def _scripted(self) -> bool:
        recorder: RecordingServer = self.server.recorder  # type: ignore[attr-defined]
        path = unquote(urlsplit(self.path).path).lstrip("/")
        recorder.requests.append({"method": self.command, "path": path, "cookie": self.headers.get("Cookie"),
                                  "range": self.headers.get("Range")})
        statuses = recorder.scripted.get(path)
        if statuses:
            self.send_error(statuses.pop(0))
            return True
        if path in recorder.redirects:
            self.send_response(302)
            self.send_header("Location", recorder.redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        faults = recorder.faults.get(path)
        if faults and self.command == "GET":
            self._fault(recorder, path, *faults.pop(0))
            return True
        if path in recorder.stalls and self.command == "GET":
            self._stall(recorder, path)
            return True
        return False

    def _stall(self, recorder: RecordingServer, path: str) -> None:
        """Send the first ``after_bytes`` (no headers at all for 0), signal, and wait to be released."""
        after_bytes, reached, release = recorder.stalls[path]
        data = (recorder.root / path).read_bytes()
        if after_bytes:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:after_bytes])
            self.wfile.flush()
        reached.set()
        release.wait(60)
        if after_bytes:
            self.wfile.write(data[after_bytes:])

    def _range_start(self, size: int) -> int:
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        return int(match.group(1)) if match and int(match.group(1)) < size else 0

    def _send_body_headers(self, size: int, start: int) -> None:
        """200 for the whole file, 206 with Content-Range from ``start`` on."""
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(size - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()

    def _fault(self, recorder: RecordingServer, path: str, kind: str, after_bytes: int) -> None:
        """Announce the whole (remaining) file, send ``after_bytes`` of it, then hang up ("cut") or go silent
        until the server closes ("stall")."""
        data = (recorder.root / path).read_bytes()
        start = self._range_start(len(data))
        self._send_body_headers(len(data), start)
        self.wfile.write(data[start:start + after_bytes])
        self.wfile.flush()
        if kind == "stall":
            recorder.closing.wait(30)
        self.close_connection = True

    def do_GET(self) -> None:
        if self._scripted():
            return
        path = unquote(urlsplit(self.path).path).lstrip("/")
        file = self.server.recorder.root / path  # type: ignore[attr-defined]
        if self.headers.get("Range") and file.is_file():
            data = file.read_bytes()
            start = self._range_start(len(data))
            self._send_body_headers(len(data), start)
            self.wfile.write(data[start:])
            return
        super().do_GET()

    def do_HEAD(self) -> None:
        if not self._scripted():
            super().do_HEAD()


class RecordingServer(MediaServer):
    """The tests' MediaServer, plus a request log and scripted failures (``scripted[path] = [503, 503]``)."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.requests: list[dict[str, str | None]] = []
        self.scripted: dict[str, list[int]] = {}
        self.stalls: dict[str, tuple[int, threading.Event, threading.Event]] = {}
        self.redirects: dict[str, str] = {}  # path -> Location of a 302
        self.faults: dict[str, list[tuple[str, int]]] = {}  # path -> [("cut" | "stall", bytes sent first), ...]
        self.closing = threading.Event()
        self.httpd.RequestHandlerClass = functools.partial(_RecordingHandler, directory=str(root))
        self.httpd.recorder = self  # type: ignore[attr-defined]
        # the generic extractor reads a direct link's first bytes and hangs up: not an error worth a traceback
        self.httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]

    def paths(self, method: str = "GET") -> list[str]:
        return [r["path"] for r in self.requests if r["method"] == method]

    def stall(self, path: str, after_bytes: int) -> tuple[threading.Event, threading.Event]:
        """GETs of ``path`` stop after ``after_bytes``: returns (reached, release) events."""
        reached, release = threading.Event(), threading.Event()
        self.stalls[path] = (after_bytes, reached, release)
        return reached, release

    def __exit__(self, *exc: object) -> None:
        for _, _, release in self.stalls.values():
            release.set()
        self.closing.set()
        super().__exit__(*exc)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real media, built once: a 2 s video with audio and hard cuts, an audio-only mp4."""
    root = tmp_path_factory.mktemp("media")
    build_scene_video(root / "good.mp4", [1.0, 1.0], width=320, height=180, fps=10)
    sine = ffmpeg.input("sine=frequency=440:sample_rate=22050", f="lavfi", t=2)
    ffmpeg.output(sine, str(root / "voice.mp4"), acodec="aac").overwrite_output().run(quiet=True)
    return {p.stem: p for p in root.glob("*.mp4")}


@pytest.fixture
def server(tmp_path: Path, media: dict[str, Path]) -> Iterator[RecordingServer]:
    root = tmp_path / "served"
    root.mkdir()
    shutil.copy(media["good"], root / "good.mp4")
    with RecordingServer(root) as srv:
        yield srv


def _video(tmp_path: Path, url: str, video_id: str = "v1", **fields) -> Video:
    """A video in a work dir of its own (the same file downloaded twice into one work dir is a duplicate)."""
    return Video(video_id=video_id, source_url=url, dir=tmp_path / f"work-{video_id}" / "videos" / video_id, **fields)


def _stage(**settings) -> Download:
    return Download(Download.Settings(**{**FAST, **settings}))


def _manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_good_video_downloads_with_info_json(tmp_path, server, media):
    odd = "Ça va — 日本語 🎬 e\u0301"
    shutil.copy(media["good"], server.root / f"{odd}.mp4")
    video = _video(tmp_path, server.url(quote(f"{odd}.mp4")), license="CC-BY-4.0")
    result = _stage().process(video)

    source = video.dir / "source.mp4"
    assert result.outputs == {"source": "source.mp4", "info": "info.json"}
    assert source.read_bytes() == media["good"].read_bytes()
    info = read_json(video.dir / "info.json")
    assert set(info) == INFO_KEYS
    assert info["title"] == odd  # a direct link's title is its file name, Unicode intact
    assert (info["id"], info["license"], info["extractor"]) == ("v1", "CC-BY-4.0", "Generic")
    assert (info["width"], info["height"], info["fps"], info["vcodec"], info["acodec"]) == (320, 180, 10.0, "h264", "aac")
    assert info["duration"] == pytest.approx(2.0, abs=0.1)
    assert info["filesize"] == source.stat().st_size and info["subtitles"] == {}
    assert result.metrics["has_audio"] is True and result.metrics["attempts"] == 1
    assert not (video.dir / STAGING_DIR).exists()
    assert sorted(p.name for p in video.dir.iterdir()) == ["info.json", "source.mp4"]


def _html5_page(server: RecordingServer, name: str, tracks: dict[str, str], title: str = "Pilot") -> str:
    track_tags = "".join(f'<track kind="subtitles" src="{src}" srclang="{lang}">' for lang, src in tracks.items())
    page = (f"<html><head><title>{title}</title></head><body><video controls>"
            f'<source src="good.mp4" type="video/mp4">{track_tags}</video></body></html>')
    (server.root / name).write_text(page, encoding="utf-8")
    return server.url(name)


def test_creator_subtitles_from_an_html5_page(tmp_path, server):
    (server.root / "good.en.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:01.000\nHi Monica.\n", encoding="utf-8")
    (server.root / "good.fr.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:01.000\nSalut.\n", encoding="utf-8")
    url = _html5_page(server, "page.html", {"en": "good.en.vtt", "fr": "good.fr.vtt"})

    video = _video(tmp_path, url)
    result = _stage(subtitle_languages=["en"]).process(video)
    info = read_json(video.dir / "info.json")
    assert info["subtitles"] == {"en": "subs/en.vtt"}  # only the languages asked for
    assert "Hi Monica." in (video.dir / "subs" / "en.vtt").read_text(encoding="utf-8")
    assert result.outputs["subs"] == "subs" and info["extractor"] == "HTML5MediaEmbed"

    every = _video(tmp_path, url, "v2")
    _stage().process(every)  # default: every creator language
    assert read_json(every.dir / "info.json")["subtitles"] == {"en": "subs/en.vtt", "fr": "subs/fr.vtt"}

    none = _video(tmp_path, url, "v3")
    server.requests.clear()
    _stage(write_subtitles=False).process(none)
    assert not (none.dir / "subs").exists() and not any(p.endswith(".vtt") for p in server.paths())


def test_a_missing_subtitle_file_does_not_lose_the_video(tmp_path, server):
    url = _html5_page(server, "broken-subs.html", {"en": "gone.en.vtt"})
    video = _video(tmp_path, url)
    result = _stage().process(video)
    assert (video.dir / "source.mp4").exists() and not (video.dir / "subs").exists()
    assert read_json(video.dir / "info.json")["subtitles"] == {}
    assert "404" in result.metrics["subtitles_error"]


def test_duration_cap_before_and_after_the_media_request(tmp_path, server, media):
    # known duration (schema.org metadata): refused before the download (the one request to long.mp4 is the
    # extractor's look at its first bytes; a download would be a second)
    shutil.copy(media["good"], server.root / "long.mp4")
    ld = {"@context": "https://schema.org", "@type": "VideoObject", "name": "A long one", "duration": "PT2H",
          "contentUrl": server.url("long.mp4"), "uploadDate": "2024-01-02"}
    (server.root / "long.html").write_text(
        f'<html><head><script type="application/ld+json">{json.dumps(ld)}</script></head><body></body></html>')
    video = _video(tmp_path, server.url("long.html"))
    with pytest.raises(StageError) as refused:
        _stage(max_duration_s=3600).process(video)
    assert refused.value.error_class == "too_long" and "7200" in str(refused.value)
    assert server.paths().count("long.mp4") == 1 and not list(video.dir.iterdir())

    # unknown until probed (a direct link): measured, then refused; nothing kept
    direct = _video(tmp_path, server.url("good.mp4"), "v2")
    with pytest.raises(StageError) as measured:
        _stage(max_duration_s=1.5).process(direct)
    assert measured.value.error_class == "too_long"
    assert not list(direct.dir.iterdir())


def test_an_audio_only_source_is_refused_before_its_download(tmp_path, server, media):
    shutil.copy(media["voice"], server.root / "voice.m4a")  # served as audio/mp4: yt-dlp knows it has no video
    video = _video(tmp_path, server.url("voice.m4a"))
    with pytest.raises(StageError) as refused:
        _stage().process(video)
    assert refused.value.error_class == "not_a_video" and "audio only" in str(refused.value)
    assert server.paths().count("voice.m4a") == 1 and not list(video.dir.iterdir())  # the extractor's look only


def test_file_size_cap(tmp_path, server):
    video = _video(tmp_path, server.url("good.mp4"))
    with pytest.raises(StageError) as refused:
        _stage(max_filesize_mb=0.01).process(video)
    assert refused.value.error_class == "too_large"
    assert not list(video.dir.iterdir())


def test_transient_errors_are_retried_then_classified(tmp_path, server):
    server.scripted["good.mp4"] = [503, 502]
    video = _video(tmp_path, server.url("good.mp4"))
    result = _stage(retries=2).process(video)
    assert result.metrics["attempts"] == 3 and (video.dir / "source.mp4").exists()

    server.scripted["good.mp4"] = [503] * 10
    server.requests.clear()
    with pytest.raises(StageError) as exhausted:
        _stage(retries=1).process(_video(tmp_path, server.url("good.mp4"), "v2"))
    assert exhausted.value.error_class == "transient_exhausted" and "after 2 attempts" in str(exhausted.value)
    assert server.paths().count("good.mp4") == 2

    server.scripted["gone.mp4"] = [410]
    server.requests.clear()
    with pytest.raises(StageError) as gone:  # permanent: no retry
        _stage(retries=3).process(_video(tmp_path, server.url("gone.mp4"), "v3"))
    assert gone.value.error_class == "unavailable" and server.paths() == ["gone.mp4"]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("ERROR: [generic] x: Unable to download webpage: HTTP Error 404: File not found", ("unavailable", False)),
        ("ERROR: [generic] x: Unable to download webpage: HTTP Error 410: Gone", ("unavailable", False)),
        ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader", ("unavailable", False)),
        ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access to this video", ("private", False)),
        ("ERROR: [youtube] abc: The uploader has not made this video available in your country",
         ("geo_blocked", False)),
        ("ERROR: [vimeo] 1: This video is not available from your location due to geo restriction",
         ("geo_blocked", False)),
        ("ERROR: [youtube] abc: Sign in to confirm your age. This video may be inappropriate", ("login_required", False)),
        ("ERROR: Unsupported URL: http://example.com/", ("unsupported_url", False)),
        ("ERROR: [generic] x: Requested format is not available. Use --list-formats", ("no_suitable_format", False)),
        ("ERROR: [generic] x: Unable to download webpage: HTTP Error 403: Forbidden", ("http_error", False)),
        ("ERROR: [generic] x: Unable to download webpage: HTTP Error 503: Service Unavailable",
         ("transient_exhausted", True)),
        ("ERROR: [generic] x: Unable to download webpage: HTTP Error 429: Too Many Requests",
         ("transient_exhausted", True)),
        ("ERROR: [generic] x: Unable to download webpage: The read operation timed out", ("transient_exhausted", True)),
        ("ERROR: [download] Got error: 1000 bytes read, 435189 more expected. Giving up after 1 retries",
         ("transient_exhausted", True)),
        ("ERROR: [generic] x: Unable to download webpage: [Errno 104] Connection reset by peer",
         ("transient_exhausted", True)),
        ("ERROR: [generic] x: Unable to download webpage: Failed to establish a new connection: "
         "[Errno 111] Connection refused", ("unreachable", True)),
        ("ERROR: [generic] x: Unable to download webpage: [Errno -2] Name or service not known",
         ("unreachable", True)),
        ("ERROR: Did not get any data blocks", ("empty_file", False)),
        ("ERROR: [generic] x: Unable to download webpage: blocked address: 169.254.169.254 resolves to ...",
         ("blocked_address", False)),
        ("ERROR: something nobody has seen before", ("download_error", False)),
    ],
)
def test_classify_download_error(message, expected):
    assert classify_download_error(message) == expected


def _rss(server: RecordingServer, name: str, items: list[tuple[str, str]]) -> str:
    body = "".join(f'<item><title>{t}</title><enclosure url="{server.url(f)}" type="video/mp4" length="1"/></item>'
                   for t, f in items)
    (server.root / name).write_text(
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Central Perk Tapes</title>'
        f"{body}</channel></rss>", encoding="utf-8")
    return server.url(name)


def test_playlist_expands_and_its_videos_download_in_the_same_run(tmp_path, server, media):
    (server.root / "ep2.mp4").write_bytes(media["good"].read_bytes() + b"\0")  # another file, not a duplicate
    feed = _rss(server, "feed.xml", [("Ep 1 — “Pilot”", "good.mp4"), ("Ep 2", "ep2.mp4")])
    manifest = _manifest(tmp_path / "m.jsonl", [
        {"url": feed, "id": "season-1", "characters": "Monica;Ross", "language": "en", "license": "CC-BY-4.0"},
    ])
    work = tmp_path / "work"
    summary = pipeline.run(work, manifest=manifest, stages=["download"], overrides={"download": FAST})

    assert summary.counts["download"] == {"pending": 0, "running": 0, "done": 2, "failed": 0, "skipped": 1}
    with Catalog(work) as catalog:
        parent = catalog.item("season-1", "download")
        assert parent["state"] == "skipped" and parent["error_message"] == "playlist expanded into 2 videos"
        assert parent["error_class"] == "expanded"  # later stages skip it as no video of its own
        children = [v for v in catalog.videos() if v.video_id != "season-1"]
        parents = dict(catalog.db.execute("SELECT video_id, parent_id FROM videos"))
    assert len(children) == 2
    for child in children:
        assert parents[child.video_id] == "season-1"
        assert child.series == "Central Perk Tapes"  # the feed's title, since the row had no series
        assert (child.characters, child.language, child.license) == (["Monica", "Ross"], "en", "CC-BY-4.0")
        assert (child.dir / "source.mp4").exists()
    titles = sorted(read_json(c.dir / "info.json")["title"] for c in children)
    assert titles == ["Ep 1 — “Pilot”", "Ep 2"]


def test_second_run_downloads_nothing(tmp_path, server):
    manifest = _manifest(tmp_path / "m.jsonl", [{"url": server.url("good.mp4"), "id": "one"}])
    work = tmp_path / "work"
    first = pipeline.run(work, manifest=manifest, stages=["download"], overrides={"download": FAST})
    assert first.processed == {"download": 1} and first.counts["download"]["done"] == 1
    source = work / "videos" / "one" / "source.mp4"
    stamp = source.stat().st_mtime_ns

    server.requests.clear()
    again = pipeline.run(work, manifest=manifest, stages=["download"], overrides={"download": FAST})
    assert again.processed == {"download": 0} and again.counts["download"]["done"] == 1
    assert server.requests == [] and source.stat().st_mtime_ns == stamp
    # pacing, retries and cookies are not part of the fingerprint: changing them redoes nothing
    calmer = pipeline.run(work, stages=["download"], overrides={"download": {**FAST, "retries": 5, "rate_limit": "1M"}})
    assert calmer.processed == {"download": 0} and server.requests == []


def test_an_interrupted_download_resumes_from_staging_and_leaves_no_half_file(tmp_path, server, media):
    video = _video(tmp_path, server.url("good.mp4"))
    staging = video.dir / STAGING_DIR
    staging.mkdir(parents=True)
    data = media["good"].read_bytes()
    (staging / "source.mp4.part").write_bytes(data[: len(data) // 2])  # what a killed run leaves behind
    assert Video.from_dict(video.to_dict()).paths.source is None  # a half file is never taken for the source

    _stage().process(video)
    assert any(r["range"] for r in server.requests if r["path"] == "good.mp4")  # yt-dlp tried to resume
    assert (video.dir / "source.mp4").read_bytes() == data
    assert not staging.exists()


def test_cli_download_and_status_json(tmp_path, server):
    manifest = _manifest(tmp_path / "m.jsonl", [
        {"url": server.url("good.mp4"), "id": "good"},
        {"url": server.url("nope-1.mp4")},
        {"url": server.url("nope-2.mp4")},
        {"url": "ftp://127.0.0.1/film.mp4"},
    ])
    work = tmp_path / "work"
    runner = CliRunner()
    sets = [arg for key, value in FAST.items() for arg in ("--set", f"{key}={value}")]
    result = runner.invoke(cli, ["download", str(manifest), "--workdir", str(work), "--quiet", *sets])
    assert result.exit_code == 0, result.output
    assert (work / "videos" / "good" / "source.mp4").exists()

    strict = runner.invoke(cli, ["download", str(manifest), "--workdir", str(work), "--quiet", "--strict"])
    assert strict.exit_code == 1  # failures stay recorded; nothing re-ran

    status = runner.invoke(cli, ["status", "--workdir", str(work), "--json"])
    assert status.exit_code == 0, status.output
    data = json.loads(status.output)
    assert data["stages"]["download"]["done"] == 1 and data["stages"]["download"]["failed"] == 3
    groups = {(f["stage"], f["state"], f["error_class"]): f["count"] for f in data["failures"]}
    assert groups == {("download", "failed", "unavailable"): 2, ("download", "failed", "unsupported_scheme"): 1}
    example = next(f for f in data["failures"] if f["error_class"] == "unavailable")
    assert "404" in example["example"]


def test_cookies_are_sent_but_never_stored_logged_or_rewritten(tmp_path, server, caplog):
    secret = "s3cr3t-session-value-0123456789"
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(f"# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t4102444800\tsession\t{secret}\n")
    before = (cookies.read_bytes(), cookies.stat().st_mtime_ns)
    manifest = _manifest(tmp_path / "m.jsonl", [{"url": server.url("good.mp4"), "id": "good"}])
    work = tmp_path / "work"
    with caplog.at_level(logging.DEBUG):
        summary = pipeline.run(work, manifest=manifest, stages=["download"],
                               overrides={"download": {**FAST, "cookies_file": str(cookies)}})
    assert summary.counts["download"]["done"] == 1
    assert any(r["cookie"] and secret in r["cookie"] for r in server.requests)  # the cookie was used
    assert (cookies.read_bytes(), cookies.stat().st_mtime_ns) == before  # and the file left as it was
    assert secret not in caplog.text
    for path in work.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    with Catalog(work) as catalog:
        stored = json.loads(catalog.db.execute("SELECT settings FROM stage_settings WHERE stage='download'").fetchone()[0])
    assert stored["cookies_file"] == str(cookies)  # the path only

    missing = _stage(cookies_file=str(tmp_path / "nope.txt"))
    with pytest.raises(StageError) as unreadable:
        missing.process(_video(tmp_path, server.url("good.mp4"), "v2"))
    assert unreadable.value.error_class == "cookies_unreadable"


def test_settings_validation_and_fingerprint():
    assert parse_rate("2M") == 2 * 1024 * 1024 and parse_rate("500K") == 512_000 and parse_rate(1000) == 1000
    with pytest.raises(ValidationError):
        Download.Settings(rate_limit="fast please")
    with pytest.raises(ValidationError):
        Download.Settings(allow_schemes=["http", "file"])
    assert Download.Settings(cookies_file="").cookies_file is None  # an unset ${V60K_COOKIES_FILE:-}
    for config in ("demo.yaml", "video60k.yaml"):
        section = load_config(REPO / "pipelines" / config, known_stages=list(STAGE_ORDER)).section("download")
        assert Download.Settings(**section).max_duration_s
    base = Download(Download.Settings()).fingerprint()
    assert Download(Download.Settings(retries=9, cookies_file="/x", sleep_interval_s=3)).fingerprint() == base
    assert Download(Download.Settings(format="b")).fingerprint() != base


def test_non_http_schemes_fail_before_yt_dlp(tmp_path, server):
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/a.mp4", "data:video/mp4;base64,AAAA"):
        with pytest.raises(StageError) as refused:
            _stage().process(_video(tmp_path, url))
        assert refused.value.error_class == "unsupported_scheme"
    with pytest.raises(StageError) as https_only:
        _stage(allow_schemes=["https"]).process(_video(tmp_path, server.url("good.mp4")))
    assert https_only.value.error_class == "unsupported_scheme"
    assert server.requests == []


def test_a_server_that_never_answers_times_out_as_transient(tmp_path, server):
    reached, _ = server.stall("good.mp4", after_bytes=0)
    with pytest.raises(StageError) as timed_out:
        _stage(retries=1, socket_timeout_s=0.3).process(_video(tmp_path, server.url("good.mp4")))
    assert timed_out.value.error_class == "transient_exhausted" and "timed out" in str(timed_out.value)
    assert reached.is_set() and server.paths().count("good.mp4") == 2


KILL_SCRIPT = """
import sys
from v60k.core import pipeline
pipeline.run(sys.argv[1], manifest=sys.argv[2], stages=["download"], overrides={{"download": {fast}}})
"""


def test_a_run_killed_mid_download_leaves_no_half_file_and_resumes(tmp_path, server, media):
    data = media["good"].read_bytes()
    shutil.copy(media["good"], server.root / "slow.mp4")
    # an HTML5 page: the media URL is fetched once, by the download itself
    (server.root / "slow.html").write_text('<html><head><title>Slow</title></head><body><video src="slow.mp4">'
                                           "</video></body></html>")
    reached, release = server.stall("slow.mp4", after_bytes=len(data) // 2)
    manifest = _manifest(tmp_path / "m.jsonl", [{"url": server.url("slow.html"), "id": "slow"}])
    work = tmp_path / "work"
    video_dir = work / "videos" / "slow"
    part = video_dir / STAGING_DIR / "source.mp4.part"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT.format(fast=repr(FAST)), str(work), str(manifest)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert reached.wait(60), "the download never started"
        deadline = time.monotonic() + 30  # the half already sent reaches the .part file
        while not (part.exists() and part.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert part.exists() and proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not list(video_dir.glob("source.*")) and not (video_dir / "info.json").exists()
    with Catalog(work) as catalog:
        assert catalog.item("slow", "download")["state"] == "running"  # lost in flight, nothing else

    del server.stalls["slow.mp4"]
    release.set()
    server.requests.clear()
    summary = pipeline.run(work, stages=["download"], overrides={"download": FAST})
    assert summary.processed == {"download": 1} and summary.counts["download"]["done"] == 1
    assert (video_dir / "source.mp4").read_bytes() == data
    assert any(r["range"] for r in server.requests if r["path"] == "slow.mp4")  # it picked up the .part file
    assert not (video_dir / STAGING_DIR).exists()


def test_an_empty_feed_is_skipped_with_its_reason(tmp_path, server):
    feed = _rss(server, "empty.xml", [])
    with pytest.raises(SkipVideo) as skipped:
        _stage().process(_video(tmp_path, feed))
    assert skipped.value.error_class == "empty_playlist"


def test_site_playlist_entries_keep_their_extractor_ids(tmp_path):
    """What yt-dlp's flat extraction returns for a site playlist (entries of a named extractor)."""
    entries = [
        {"_type": "url", "ie_key": "Youtube", "id": "dQw4w9WgXcQ", "url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
         "title": "Episode 1"},
        {"_type": "url", "ie_key": "Youtube", "id": "dQw4w9WgXcQ", "url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ"},
        {"_type": "url", "ie_key": "Youtube", "id": "../x", "url": "https://www.youtube.com/watch?v=../x"},
        {"_type": "url", "ie_key": "Youtube", "id": "no-url"},
        None,
    ]
    video = _video(tmp_path, "https://www.youtube.com/playlist?list=PL1", "season", series="Friends",
                   characters=["Ross"], language="en")
    result = Download()._expand(video, {"_type": "playlist", "title": "Season 1", "entries": entries})
    assert [r["video_id"] for r in result.new_videos] == ["dQw4w9WgXcQ", sanitize_id("../x")]
    first = result.new_videos[0]
    assert (first["series"], first["characters"], first["language"], first["title"]) == (
        "Friends", ["Ross"], "en", "Episode 1")
    assert first["extra"] == {"playlist": "season", "playlist_index": 1}
    assert result.skip_reason == "playlist expanded into 2 videos"


def _sources_page(server: RecordingServer, name: str, heights: list[int], media: dict[str, Path]) -> str:
    sources = ""
    for height in heights:
        shutil.copy(media["good"], server.root / f"{name}-{height}.mp4")
        sources += f'<source src="{name}-{height}.mp4" type="video/mp4" res="{height}" label="{height}p">'
    (server.root / f"{name}.html").write_text(f"<html><head><title>{name}</title></head><body><video>{sources}"
                                             "</video></body></html>")
    return server.url(f"{name}.html")


def test_format_cap_takes_the_best_up_to_720p_else_the_smallest(tmp_path, server, media):
    capped = _sources_page(server, "ladder", [1080, 720, 360], media)
    _stage().process(_video(tmp_path, capped))
    assert [p for p in server.paths() if p.endswith(".mp4")] == ["ladder-720.mp4"]

    server.requests.clear()
    only_large = _sources_page(server, "large", [2160, 1080], media)
    _stage().process(_video(tmp_path, only_large, "v2"))  # nothing ≤ 720p: the smallest rather than nothing
    assert [p for p in server.paths() if p.endswith(".mp4")] == ["large-1080.mp4"]


# ---- cut and stalled transfers: yt-dlp resumes with HTTP Range, or the stage retries -----------------------
def _page_for(server: RecordingServer, media_name: str) -> str:
    """An HTML5 page around one media file: the media URL is then fetched by the download alone."""
    name = f"{Path(media_name).stem}.html"
    (server.root / name).write_text(f'<html><head><title>{media_name}</title></head><body>'
                                    f'<video src="{media_name}"></video></body></html>', encoding="utf-8")
    return server.url(name)


def _ranges(server: RecordingServer, path: str) -> list[str | None]:
    return [r["range"] for r in server.requests if r["path"] == path and r["method"] == "GET"]


@pytest.mark.parametrize("kind", ["cut", "stall"])
def test_a_transfer_cut_or_stalled_midway_resumes_from_where_it_stopped(tmp_path, server, media, kind):
    data = media["good"].read_bytes()
    shutil.copy(media["good"], server.root / "ep.mp4")
    half = len(data) // 2
    server.faults["ep.mp4"] = [(kind, half)]
    video = _video(tmp_path, _page_for(server, "ep.mp4"))
    result = _stage(socket_timeout_s=1.0).process(video)

    assert (video.dir / "source.mp4").read_bytes() == data
    assert result.metrics["attempts"] == 1  # resumed inside yt-dlp's own retry, not redone by the stage
    ranges = _ranges(server, "ep.mp4")
    assert len(ranges) == 2 and ranges[0] is None
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", ranges[1] or "").group(1))  # the rest only (whole blocks)
    assert half // 4 < resumed_at <= half


@pytest.mark.parametrize("kind", ["cut", "stall"])
def test_a_transfer_that_keeps_failing_ends_transient_exhausted(tmp_path, server, media, kind):
    shutil.copy(media["good"], server.root / "ep.mp4")
    server.faults["ep.mp4"] = [(kind, 1000)] * 20
    video = _video(tmp_path, _page_for(server, "ep.mp4"))
    started = time.monotonic()
    with pytest.raises(StageError) as failed:
        _stage(retries=1, socket_timeout_s=0.5).process(video)
    assert failed.value.error_class == "transient_exhausted", str(failed.value)
    assert "after 2 attempts" in str(failed.value)
    assert len(_ranges(server, "ep.mp4")) == 4  # 2 stage attempts x (1 try + 1 yt-dlp retry)
    assert time.monotonic() - started < 30
    assert not video.dir.exists() or not list(video.dir.iterdir())


# ---- network policy ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "allow_private", "refused"),
    [
        ("169.254.169.254", True, True), ("fe80::1", True, True), ("fe80::1%1", True, True),
        ("::ffff:169.254.169.254", True, True), ("0.0.0.0", True, True), ("224.0.0.1", True, True),
        ("127.0.0.1", False, True), ("127.0.0.1", True, False), ("::1", False, True), ("10.1.2.3", False, True),
        ("192.168.0.10", False, True), ("172.16.5.4", False, True), ("100.64.0.1", False, True),
        ("fd00::1", False, True), ("::ffff:127.0.0.1", False, True), ("64:ff9b::a9fe:a9fe", True, True),
        ("93.184.215.14", False, False), ("2606:4700::1111", False, False),
    ],
)
def test_address_policy(address, allow_private, refused):
    assert (address_refusal(address, allow_private) is not None) == refused


def test_private_addresses_are_refused_unless_allowed_after_name_resolution(tmp_path, server):
    port = server.httpd.server_address[1]
    for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433", "127.1"):
        with pytest.raises(StageError) as refused:
            _stage(allow_private_networks=False).process(_video(tmp_path, f"http://{host}:{port}/good.mp4"))
        assert refused.value.error_class == "blocked_address", host
        assert "loopback or private" in str(refused.value)
    assert server.requests == []  # not one request reached the server
    _stage(allow_private_networks=True).process(_video(tmp_path, f"http://localhost:{port}/good.mp4"))


def test_link_local_is_refused_always_also_behind_a_redirect(tmp_path, server):
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/x.mp4",
                "http://[::ffff:169.254.169.254]/x.mp4"):
        with pytest.raises(StageError) as refused:
            _stage().process(_video(tmp_path, url))
        assert refused.value.error_class == "blocked_address" and "link-local" in str(refused.value), url

    server.redirects["moved.mp4"] = "http://169.254.169.254/latest/meta-data/iam/x.mp4"
    video = _video(tmp_path, server.url("moved.mp4"), "v2")
    started = time.monotonic()
    with pytest.raises(StageError) as redirected:
        _stage(retries=3).process(video)
    assert redirected.value.error_class == "blocked_address", str(redirected.value)
    assert "169.254.169.254" in str(redirected.value) and "Traceback" not in str(redirected.value)
    assert server.paths().count("moved.mp4") >= 1 and time.monotonic() - started < 10  # refused, not retried
    assert not video.dir.exists() or not list(video.dir.iterdir())

    server.redirects["moved.mp4"] = server.url("good.mp4")  # a redirect within the allowed ranges is followed
    assert _stage().process(_video(tmp_path, server.url("moved.mp4"), "v3")).outputs["source"] == "source.mp4"


def test_blocked_addresses_are_recorded_failures_in_a_run(tmp_path, server):
    manifest = _manifest(tmp_path / "m.jsonl", [
        {"url": server.url("good.mp4"), "id": "local"},
        {"url": "http://169.254.169.254/latest/meta-data/", "id": "metadata"},
    ])
    work = tmp_path / "work"
    settings = {**FAST, "allow_private_networks": False}
    summary = pipeline.run(work, manifest=manifest, stages=["download"], overrides={"download": settings})
    assert summary.counts["download"]["failed"] == 2
    with Catalog(work) as catalog:
        for vid in ("local", "metadata"):
            item = catalog.item(vid, "download")
            assert item["error_class"] == "blocked_address" and "Traceback" not in item["error_message"]


# ---- the same content under two URLs -----------------------------------------------------------------------
def test_the_same_file_under_two_urls_is_downloaded_once(tmp_path, server, media):
    shutil.copy(media["good"], server.root / "copy.mp4")
    manifest = _manifest(tmp_path / "m.jsonl", [
        {"url": server.url("good.mp4"), "id": "first"},
        {"url": server.url("copy.mp4"), "id": "second"},
        {"url": server.url("voice.mp4"), "id": "other"},
    ])
    (server.root / "voice.mp4").write_bytes(media["good"].read_bytes() + b"\0")  # another file: not a duplicate
    work = tmp_path / "work"
    pipeline.run(work, manifest=manifest, stages=["download"], overrides={"download": FAST})

    digest = hashlib.sha256(media["good"].read_bytes()).hexdigest()
    assert read_json(work / "videos" / "first" / "info.json")["content_sha256"] == digest
    with Catalog(work) as catalog:
        first, second = catalog.item("first", "download"), catalog.item("second", "download")
        assert catalog.item("other", "download")["state"] == "done"
    assert first["state"] == "done" and first["metrics"]["content_sha256"] == digest
    assert (second["state"], second["error_class"]) == ("skipped", "duplicate_content")
    assert "'first'" in second["error_message"]
    assert not list((work / "videos" / "second").glob("source.*"))  # the copy is not kept

    # the earlier one keeps it when it is downloaded again
    assert pipeline.retry(work, "download") == 0
    again = _stage()
    again.process(Video(video_id="first", source_url=server.url("good.mp4"), dir=work / "videos" / "first"))
    with pytest.raises(SkipVideo) as dup:
        again.process(Video(video_id="second", source_url=server.url("copy.mp4"), dir=work / "videos" / "second"))
    assert dup.value.error_class == "duplicate_content"
