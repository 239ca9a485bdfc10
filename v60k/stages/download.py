"""The download stage: fetch each manifest URL with yt-dlp's Python API into ``source.<ext>``, ``info.json``
and ``subs/`` (see docs/architecture.md and docs/download.md).

Everything is fetched into a staging dir inside the video dir and moved into place only once the file has
been checked (``v60k.media.streams.probe`` + ``check_complete``), so a killed run never leaves a half ``source.*``.
A playlist or channel URL downloads nothing: its entries come back as new videos for the catalog.
Every connection goes through the network policy (``v60k.core.netguard``), and a file whose content another video
of the work dir already holds is skipped as ``duplicate_content``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from v60k.core.errors import NOT_A_VIDEO
from v60k.core.manifest import derive_id
from v60k.core.netguard import BlockedAddress, Policy, check_host, guarded
from v60k.core.stage import (
    Resources,
    SkipVideo,
    Stage,
    StageError,
    StageResult,
    StageSettings,
    Video,
    fingerprint_of,
)
from v60k.core.workdir import VideoPaths, read_json, sanitize_id, write_json
from v60k.media import streams

log = logging.getLogger(__name__)

# ≤ 720p video + best audio; then a single file with both; then video alone (recorded as has_audio false);
# when nothing of 720p or less exists, the best by format_sort, whose "res:720" makes it the smallest above.
DEFAULT_FORMAT = "bv*[height<=?720]+ba/b[height<=?720]/bv*[height<=?720]/bv*+ba/b/bv*"
# Among what the format string allows: the largest up to 720p, then H.264 (plays and cuts everywhere), AAC, mp4.
DEFAULT_FORMAT_SORT = ["res:720", "vcodec:h264", "acodec:aac", "ext:mp4:m4a"]
STAGING_DIR = ".download.partial"  # inside the video dir; yt-dlp resumes its .part files from here
CONTENT_INDEX_DIR = ".content"  # in the work dir: <sha256> -> the id of the video that has this content
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_rate(text: str | int | float | None) -> int | None:
    """Bytes per second from ``500K``, ``2M``, ``1.5MiB`` or a plain number (None: unlimited)."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        return int(text)
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"not a rate: {text!r} (use e.g. 500K, 2M or a number of bytes per second)")
    return int(float(match.group(1)) * 1024 ** "_kmgt".index((match.group(2) or "_").lower()))


# ---- error classes --------------------------------------------------------------------------------------
# (pattern on yt-dlp's error message, error_class, transient). First match wins: the specific reasons
# (private, geo) come before the generic ones their messages also contain ("unavailable", "sign in").
_ERROR_RULES: list[tuple[re.Pattern[str], str, bool]] = [
    (re.compile(p, re.IGNORECASE), cls, transient)
    for p, cls, transient in [
        (r"blocked address", "blocked_address", False),
        (r"larger than max-filesize", "too_large", False),
        (r"did not get any data blocks", "empty_file", False),
        (r"private video|video is private|this playlist is private", "private", False),
        (r"geo.?restrict|not (?:made this video )?available in your (?:country|region)|from your location"
         r"|not available in your country", "geo_blocked", False),
        (r"sign in to confirm|login required|log in to|logged-in|members[- ]only|requires authentication"
         r"|account cookies|age.?restricted", "login_required", False),
        (r"unsupported url", "unsupported_url", False),
        (r"requested format is not available", "no_suitable_format", False),
        (r"http error (?:404|410)\b|video unavailable|has been removed|no longer available|does not exist"
         r"|account .*terminated", "unavailable", False),
        (r"http error 429\b|too many requests", "transient_exhausted", True),
        (r"http error 5\d\d\b", "transient_exhausted", True),
        (r"connection refused|name or service not known|nodename nor servname|temporary failure in name resolution"
         r"|no route to host|network is unreachable|getaddrinfo failed|failed to resolve|no address associated",
         "unreachable", True),
        (r"timed out|timeout|connection reset|broken pipe|remote end closed|connection aborted|incompleteread"
         r"|bytes read, \d+ more expected|connection broken|eof occurred", "transient_exhausted", True),
        (r"http error 4\d\d\b", "http_error", False),
    ]
]

_CLASS_MESSAGES = {
    "blocked_address": "refused by the network policy",
    "too_large": "file larger than max_filesize_mb",
    "empty_file": "the server sent an empty file",
    "private": "private video",
    "geo_blocked": "not available from this location (geo-blocked)",
    "login_required": "needs a logged-in account (see cookies_file)",
    "unsupported_url": "no extractor understands this URL",
    "no_suitable_format": "no format matches the format setting",
    "unavailable": "video unavailable (removed or not found)",
    "transient_exhausted": "transient error, still failing after retries",
    "unreachable": "host unreachable (connection refused or name not resolved) after retries",
    "http_error": "HTTP error",
    "download_error": "download failed",
}


def classify_download_error(message: str) -> tuple[str, bool]:
    """``(error_class, transient)`` for a yt-dlp error message; unknown messages are permanent ``download_error``.

    Transient classes name what the failure becomes once the retries are spent (``transient_exhausted``,
    ``unreachable``).
    """
    for pattern, error_class, transient in _ERROR_RULES:
        if pattern.search(message):
            return error_class, transient
    return "download_error", False


def _clean(message: str) -> str:
    return " ".join(message.replace("\r", " ").replace("ERROR:", " ").split())[:600]


# ---- yt-dlp plumbing ------------------------------------------------------------------------------------
class _YtdlpLog:
    """yt-dlp's logger: everything goes to ``logging`` at debug level; the lines are kept to explain outcomes."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def debug(self, message: str) -> None:
        self.lines.append(message)
        log.debug("yt-dlp: %s", message.strip())

    info = warning = error = debug

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)


@dataclass
class _Gate:
    """yt-dlp's ``match_filter``: refuses, before any byte of media is fetched, what would fail later anyway."""

    max_duration_s: float | None
    refusal: tuple[str, str] | None = field(default=None)

    def __call__(self, info: dict[str, Any], *, incomplete: bool = False) -> str | None:
        formats = info.get("formats") or []
        live = info.get("live_status") in ("is_live", "is_upcoming", "post_live") or info.get("is_live")
        duration = info.get("duration")
        if live:
            self.refusal = ("live", f"live or upcoming stream ({info.get('live_status') or 'is_live'})")
        elif formats and all(f.get("vcodec") == "none" for f in formats):
            self.refusal = (NOT_A_VIDEO, "audio only: the source offers no video format")
        elif self.max_duration_s and duration and float(duration) > self.max_duration_s:
            self.refusal = ("too_long", f"duration {float(duration):.0f} s exceeds max_duration_s {self.max_duration_s:g}")
        else:
            return None
        return self.refusal[1]


def _backoff(base_s: float, max_s: float) -> Callable[..., float]:
    """Seconds to wait before retry ``n + 1``; yt-dlp calls its ``retry_sleep_functions`` as ``func(n=...)``."""

    def wait(n: int) -> float:
        return min(max_s, base_s * 2**n)

    return wait


def content_hash(path: Path) -> str:
    """sha256 of a file, read in 1 MiB chunks (``hashlib.file_digest`` needs Python 3.11; 3.10 is supported)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ---- the stage -------------------------------------------------------------------------------------------
class Download(Stage):
    """Download one URL (format cap, caps on duration and size, creator subtitles) or expand a playlist."""

    name = "download"
    version = "1"
    reads = ()
    writes = ("source", "info")
    resources = Resources(cpus=1)

    class Settings(StageSettings):
        format: str = DEFAULT_FORMAT
        format_sort: list[str] = Field(default_factory=lambda: list(DEFAULT_FORMAT_SORT))
        merge_output_format: str = "mp4"
        max_duration_s: float | None = Field(3 * 3600.0, gt=0)
        max_filesize_mb: float | None = Field(4096.0, gt=0)
        sleep_interval_s: float = Field(0.0, ge=0)  # before each media download
        sleep_requests_s: float = Field(0.0, ge=0)  # between the extractor's requests
        rate_limit: str | None = None  # bytes per second: "2M", "500K"
        cookies_file: Path | None = None  # Netscape cookies.txt; read, never copied, logged or written back
        retries: int = Field(3, ge=0)  # extra attempts on transient errors
        backoff_base_s: float = Field(2.0, ge=0)  # wait base * 2**attempt between attempts ...
        backoff_max_s: float = Field(60.0, ge=0)  # ... never longer than this
        socket_timeout_s: float = Field(30.0, gt=0)
        write_subtitles: bool = True  # creator subtitles only, never automatic captions
        subtitle_languages: list[str] = Field(default_factory=lambda: ["all", "-live_chat"])
        allow_schemes: list[str] = Field(default_factory=lambda: ["http", "https"])
        playlist_limit: int | None = Field(None, ge=1)  # at most this many entries per playlist
        allow_private_networks: bool = False  # loopback / private ranges; link-local is refused always

        @field_validator("cookies_file", mode="before")
        @classmethod
        def _blank_is_none(cls, value: object) -> object:
            return None if value is None or str(value).strip() == "" else value  # ${COOKIES:-} left unset

        @field_validator("rate_limit")
        @classmethod
        def _valid_rate(cls, value: str | None) -> str | None:
            parse_rate(value)
            return value

        @field_validator("allow_schemes")
        @classmethod
        def _web_schemes_only(cls, value: list[str]) -> list[str]:
            schemes = [s.lower().rstrip(":/") for s in value]
            if not schemes or set(schemes) - {"http", "https"}:
                raise ValueError("allow_schemes may only hold http and https")
            return schemes

    def fingerprint(self) -> str:
        """Only what shapes the files: cookies, pacing, retries and caps change no finished download."""
        s = self.settings
        return fingerprint_of(self.version, s.format, s.format_sort, s.merge_output_format, s.write_subtitles,
                              s.subtitle_languages)

    # ---- process ----------------------------------------------------------------------------------------
    def process(self, video: Video) -> StageResult:
        if video.video_id != sanitize_id(video.video_id) or video.dir.name != video.video_id:
            raise StageError(f"unsafe video id {video.video_id!r}", "unsafe_id")
        self._check_url(video.source_url)
        video.dir.mkdir(parents=True, exist_ok=True)
        staging = video.dir / STAGING_DIR
        staging.mkdir(exist_ok=True)
        try:
            info, ytlog, attempts, subtitles_note = self._fetch(video.source_url, staging)
            if info.get("_type") in ("playlist", "multi_video"):
                shutil.rmtree(staging, ignore_errors=True)
                return self._expand(video, info)
            source = self._downloaded_file(info, ytlog)
            facts = self._check_media(source)
            digest = content_hash(source)
            self._claim_content(video, digest)
            result = self._publish(video, info, source, staging, facts, digest)
        except Exception:
            shutil.rmtree(staging, ignore_errors=True)  # a failure is final; an interrupt keeps .part files to resume
            raise
        shutil.rmtree(staging, ignore_errors=True)
        result.metrics.update(attempts=attempts)
        if subtitles_note:
            result.metrics["subtitles_error"] = subtitles_note
        return result

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in self.settings.allow_schemes:
            raise StageError(
                f"unsupported URL scheme {scheme + '://' if scheme else '(none)'}; allowed: "
                f"{', '.join(self.settings.allow_schemes)}",
                "unsupported_scheme",
            )
        if not parts.hostname:
            raise StageError(f"URL has no host: {url!r}", "invalid_url")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number in 0-65535
        except ValueError:
            raise StageError(f"URL has an invalid port: {url!r}", "invalid_url") from None
        self._check_host(url, self._policy())

    def _policy(self) -> Policy:
        return Policy(allow_private=self.settings.allow_private_networks)

    @staticmethod
    def _check_host(url: str, policy: Policy) -> None:
        """The URL's host must resolve to an address the network policy allows (docs/download.md)."""
        parts = urlsplit(url)
        if not parts.hostname:
            return
        try:
            port = parts.port
        except ValueError:
            port = None
        try:
            check_host(parts.hostname, port, policy)
        except BlockedAddress as exc:
            raise StageError(str(exc), "blocked_address") from None

    def _check_info_urls(self, info: dict[str, Any], policy: Policy) -> None:
        """Before any media byte: the final page URL and the chosen formats' URLs pass the policy too (a
        redirect, or an extractor pointing elsewhere; also covers ffmpeg, which resolves names itself)."""
        urls = [info.get("webpage_url"), info.get("url")]
        urls += [f.get("url") for f in info.get("requested_formats") or [] if isinstance(f, dict)]
        for url in urls:
            if isinstance(url, str) and urlsplit(url).scheme.lower() in ("http", "https"):
                self._check_host(url, policy)

    def _options(self, staging: Path, ytlog: _YtdlpLog, gate: _Gate, subtitles: bool) -> dict[str, Any]:
        s = self.settings
        backoff = _backoff(s.backoff_base_s, s.backoff_max_s)
        options: dict[str, Any] = {
            "logger": ytlog,
            "quiet": True,
            "noprogress": True,
            "color": {"stdout": "no_color", "stderr": "no_color"},
            "format": s.format,
            "format_sort": list(s.format_sort),
            "merge_output_format": s.merge_output_format,
            "outtmpl": {"default": str(staging / "source.%(ext)s")},  # subtitles: source.<lang>.<ext>
            "extract_flat": "in_playlist",
            "playlistend": s.playlist_limit,
            "match_filter": gate,
            "max_filesize": int(s.max_filesize_mb * 1024 * 1024) if s.max_filesize_mb else None,
            "ratelimit": parse_rate(s.rate_limit),
            "socket_timeout": s.socket_timeout_s,
            "retries": s.retries,
            "fragment_retries": s.retries,
            "extractor_retries": s.retries,
            "retry_sleep_functions": {"http": backoff, "fragment": backoff, "extractor": backoff},
            "writesubtitles": subtitles,
            "writeautomaticsub": False,
            "subtitleslangs": list(s.subtitle_languages),
            "continuedl": True,
            "updatetime": False,
            "noplaylist": False,
        }
        if s.sleep_interval_s:
            options["sleep_interval"] = s.sleep_interval_s
        if s.sleep_requests_s:
            options["sleep_interval_requests"] = s.sleep_requests_s
        if s.cookies_file is not None:
            # a text stream, not the path: yt-dlp writes its jar back to a cookie *file* on exit
            options["cookiefile"] = io.StringIO(self._read_cookies())
        return options

    def _read_cookies(self) -> str:
        path = Path(self.settings.cookies_file).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise StageError(f"cookies file not readable: {path} ({exc.strerror})", "cookies_unreadable") from exc

    def _fetch(self, url: str, staging: Path) -> tuple[dict[str, Any], _YtdlpLog, int, str | None]:
        """Extract (and download, unless it is a playlist) with retries on transient errors only."""
        from yt_dlp import YoutubeDL
        from yt_dlp.utils import DownloadError

        s = self.settings
        subtitles = s.write_subtitles
        subtitles_note: str | None = None
        attempt = 0
        while True:
            attempt += 1
            ytlog, gate, policy = _YtdlpLog(), _Gate(s.max_duration_s), self._policy()
            try:
                with guarded(policy), YoutubeDL(self._options(staging, ytlog, gate, subtitles)) as ydl:
                    info = ydl.extract_info(url, download=False)
                    if info is not None and gate.refusal is None and info.get("_type") not in ("playlist", "multi_video"):
                        self._check_info_urls(info, policy)
                        info = ydl.process_ie_result(info, download=True)
                    if gate.refusal is not None:
                        raise StageError(gate.refusal[1], gate.refusal[0])
                    if info is None:
                        raise StageError("yt-dlp returned no information", "download_error")
                    return ydl.sanitize_info(info), ytlog, attempt, subtitles_note
            except DownloadError as exc:
                if policy.refusals:  # a redirect or a later request to a refused address
                    raise StageError(policy.refusals[0], "blocked_address") from None
                message = _clean(str(exc))
                if subtitles and "unable to download video subtitles" in message.lower():
                    subtitles, subtitles_note = False, message  # subtitles are optional: go on without them
                    attempt -= 1
                    continue
                error_class, transient = classify_download_error(message)
                if transient and attempt <= s.retries:
                    time.sleep(_backoff(s.backoff_base_s, s.backoff_max_s)(attempt - 1))
                    continue
                tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise StageError(f"{_CLASS_MESSAGES[error_class]}: {message}{tries}", error_class) from None

    def _downloaded_file(self, info: dict[str, Any], ytlog: _YtdlpLog) -> Path:
        paths = [d.get("filepath") for d in info.get("requested_downloads") or [] if d.get("filepath")]
        existing = [Path(p) for p in paths if Path(p).is_file()]
        if existing:
            return existing[0]
        if ytlog.saw("larger than max-filesize"):
            raise StageError(f"{_CLASS_MESSAGES['too_large']} ({self.settings.max_filesize_mb:g} MB)", "too_large")
        raise StageError("yt-dlp finished without producing a file", "download_error")

    def _check_media(self, path: Path) -> streams.StreamInfo:
        """The downloaded file is a whole, playable video within the caps; anything else is a classified failure."""
        try:
            facts = streams.probe(path)  # empty_file, not_a_video (a web page, no streams), corrupt_media
            if facts.has_video:
                streams.check_complete(path)  # truncated files whose index still probes
        except streams.MediaError as exc:
            raise StageError(str(exc).replace(str(path), path.name), exc.error_class) from None
        if not facts.has_video:
            raise StageError(f"{path.name}: audio only, no video stream", NOT_A_VIDEO)
        s = self.settings
        if s.max_duration_s and facts.duration_s > s.max_duration_s:
            raise StageError(f"duration {facts.duration_s:.0f} s exceeds max_duration_s {s.max_duration_s:g}", "too_long")
        if s.max_filesize_mb and facts.size_bytes > s.max_filesize_mb * 1024 * 1024:
            raise StageError(f"{facts.size_bytes} bytes exceed max_filesize_mb {s.max_filesize_mb:g}", "too_large")
        return facts

    @staticmethod
    def _claim_content(video: Video, digest: str) -> None:
        """Record that ``video`` holds this content, unless another video of the work dir already does.

        The index is ``<workdir>/.content/<sha256>`` holding the owner's id, created atomically (the first
        to finish keeps it). A claim whose owner neither holds that content (info.json) nor is downloading
        (staging dir) is stale — that video failed, or was redone with other content — and is taken over.
        """
        index = video.dir.parent.parent / CONTENT_INDEX_DIR
        index.mkdir(exist_ok=True)
        claim = index / digest
        try:
            with open(claim, "x", encoding="utf-8") as handle:
                handle.write(video.video_id)
            return
        except FileExistsError:
            owner = claim.read_text(encoding="utf-8").strip()
        if owner == video.video_id:
            return
        owner_dir = video.dir.parent / sanitize_id(owner or "_")
        try:
            holds = read_json(VideoPaths(owner_dir).info_json).get("content_sha256") == digest
        except (OSError, ValueError, AttributeError):
            holds = False
        if holds or (owner_dir / STAGING_DIR).is_dir():
            raise SkipVideo(f"same content as video {owner!r} (sha256 {digest[:12]}…)", "duplicate_content")
        temporary = claim.with_name(f"{digest}.{video.video_id}.tmp")
        temporary.write_text(video.video_id, encoding="utf-8")
        os.replace(temporary, claim)

    def _publish(self, video: Video, info: dict[str, Any], source: Path, staging: Path,
                 facts: streams.StreamInfo, digest: str) -> StageResult:
        """Move the checked file and subtitles into place, then write info.json (last: it marks completion)."""
        paths = video.paths
        subtitles = self._collect_subtitles(info, staging)
        paths.info_json.unlink(missing_ok=True)
        for old in video.dir.glob("source.*"):
            if old.is_file():
                old.unlink()
        shutil.rmtree(paths.subs_dir, ignore_errors=True)
        target = video.dir / f"source{source.suffix.lower() or '.mp4'}"
        os.replace(source, target)
        if subtitles:
            os.replace(staging / "subs.final", paths.subs_dir)
        document = self.info_document(video, info, facts, subtitles, digest)
        write_json(paths.info_json, document)
        outputs = {"source": target.name, "info": paths.info_json.name}
        if subtitles:
            outputs["subs"] = paths.subs_dir.name
        return StageResult(
            outputs=outputs,
            metrics={
                "has_video": facts.has_video,
                "has_audio": facts.has_audio,
                "duration_s": round(facts.duration_s, 3),
                "width": facts.width,
                "height": facts.height,
                "filesize": facts.size_bytes,
                "format_id": info.get("format_id"),
                "subtitles": sorted(subtitles),
                "title": document["title"],
                "content_sha256": digest,
            },
        )

    @staticmethod
    def _collect_subtitles(info: dict[str, Any], staging: Path) -> dict[str, str]:
        """Rename the fetched subtitle files to ``subs/<lang>.<ext>`` (in staging); return {lang: relative path}."""
        final = staging / "subs.final"
        shutil.rmtree(final, ignore_errors=True)
        found: dict[str, str] = {}
        for lang, sub in sorted((info.get("requested_subtitles") or {}).items()):
            ext = str(sub.get("ext") or "vtt")
            path = Path(sub.get("filepath") or staging / f"source.{lang}.{ext}")
            if not path.is_file() or path.stat().st_size == 0:
                continue
            name = f"{sanitize_id(lang)}.{sanitize_id(ext)}"
            final.mkdir(exist_ok=True)
            os.replace(path, final / name)
            found[lang] = f"subs/{name}"
        return found

    @staticmethod
    def info_document(video: Video, info: dict[str, Any], facts: streams.StreamInfo,
                      subtitles: dict[str, str], digest: str) -> dict[str, Any]:
        """The info.json subset (docs/architecture.md): the source's metadata, the file's measured facts.

        A title or license given in the manifest wins over the extractor's (a direct link's title is its file name).
        """
        tags = info.get("tags") or []
        return {
            "id": video.video_id,
            "title": video.title or info.get("title"),
            "channel": info.get("channel") or info.get("uploader"),
            "uploader": info.get("uploader"),
            "duration": round(facts.duration_s, 3) if facts.duration_s else info.get("duration"),
            "license": video.license or info.get("license"),
            "upload_date": info.get("upload_date"),
            "tags": [str(t) for t in tags] if isinstance(tags, list) else [],
            "description": info.get("description"),
            "webpage_url": info.get("webpage_url") or video.source_url,
            "extractor": info.get("extractor_key") or info.get("extractor"),
            "width": facts.width,
            "height": facts.height,
            "fps": round(facts.fps, 3),
            "vcodec": facts.video_codec,
            "acodec": facts.audio_codec,
            "filesize": facts.size_bytes,
            "subtitles": subtitles,
            "content_sha256": digest,
        }

    # ---- playlists ----------------------------------------------------------------------------------------
    def _expand(self, video: Video, info: dict[str, Any]) -> StageResult:
        """A playlist/channel: its entries become manifest rows that inherit the parent's series and cast."""
        from yt_dlp.utils import unsmuggle_url

        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        for index, entry in enumerate(info.get("entries") or [], start=1):
            if not isinstance(entry, dict):
                continue
            raw_url = entry.get("url") or entry.get("webpage_url")
            if not raw_url and entry.get("formats"):
                raw_url = entry["formats"][-1].get("url")
            if not raw_url:
                continue
            url, smuggled = unsmuggle_url(raw_url, {})
            if url in seen or url == video.source_url:
                continue
            seen.add(url)
            specific = entry.get("ie_key") not in (None, "Generic") and entry.get("id")
            video_id = sanitize_id(str(entry["id"])) if specific else derive_id(url)
            extra = {"playlist": video.video_id, "playlist_index": index}
            if smuggled.get("force_videoid"):
                extra["entry_guid"] = str(smuggled["force_videoid"])
            rows.append({
                "video_id": video_id,
                "source_url": url,
                "series": video.series or info.get("title"),
                "characters": list(video.characters),
                "language": video.language,
                "license": video.license,
                "title": entry.get("title"),
                "extra": extra,
            })
        if not rows:
            raise SkipVideo(f"playlist {info.get('title') or video.source_url!r} has no entries", "empty_playlist")
        return StageResult(
            new_videos=rows,
            metrics={"playlist_title": info.get("title"), "entries": len(rows)},
            skip_reason=f"playlist expanded into {len(rows)} video{'s' if len(rows) != 1 else ''}",
        )
