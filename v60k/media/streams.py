"""Media helpers on ffmpeg / ffprobe through ffmpeg-python: stream facts, audio extraction, frame grabs, cuts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np

from v60k.core.errors import BAD_MEDIA, NOT_A_VIDEO
from v60k.core.stage import StageError
from v60k.core.workdir import atomic_path


class MediaError(StageError):
    """A file ffmpeg cannot use; ``error_class`` says why (corrupt_media, not_a_video, empty_file, ...)."""

    error_class = BAD_MEDIA


@dataclass
class StreamInfo:
    duration_s: float
    fps: float
    width: int
    height: int
    frame_count: int
    has_video: bool
    has_audio: bool
    video_codec: str | None
    audio_codec: str | None
    format_name: str
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rate(text: str | None) -> float:
    try:
        value = float(Fraction(text)) if text and text != "0/0" else 0.0
    except (ValueError, ZeroDivisionError):
        value = 0.0
    return value


def probe(path: str | Path) -> StreamInfo:
    """Stream facts of a media file; ``MediaError`` with a clear class when it is unusable."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path.name}: file not found", "missing_file")
    size = path.stat().st_size
    if size == 0:
        raise MediaError(f"{path.name}: zero-byte file", "empty_file")
    try:
        info = ffmpeg.probe(str(path))
    except ffmpeg.Error as exc:
        detail = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        reason = detail[-1] if detail else "ffprobe failed"
        head = path.read_bytes()[:512].lstrip().lower()
        if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"{")):
            raise MediaError(f"{path.name}: not a media file (looks like a web page/text): {reason}", NOT_A_VIDEO) from exc
        raise MediaError(f"{path.name}: unreadable or corrupt media: {reason}", "corrupt_media") from exc
    streams = info.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    fmt = info.get("format", {})
    duration = float(fmt.get("duration") or (video or audio or {}).get("duration") or 0.0)
    fps = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate")) if video else 0.0
    frames = int(video.get("nb_frames") or 0) if video else 0
    if video and not frames and fps and duration:
        frames = int(round(duration * fps))
    if video is None and audio is None:
        raise MediaError(f"{path.name}: no audio or video stream", NOT_A_VIDEO)
    return StreamInfo(
        duration_s=duration,
        fps=fps,
        width=int(video.get("width") or 0) if video else 0,
        height=int(video.get("height") or 0) if video else 0,
        frame_count=frames,
        has_video=video is not None,
        has_audio=audio is not None,
        video_codec=video.get("codec_name") if video else None,
        audio_codec=audio.get("codec_name") if audio else None,
        format_name=str(fmt.get("format_name", "")),
        size_bytes=size,
    )


def _run(stream: Any, what: str) -> bytes:
    try:
        out, _ = stream.run(capture_stdout=True, capture_stderr=True, quiet=True)
    except ffmpeg.Error as exc:
        tail = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()[-3:]
        raise MediaError(f"ffmpeg {what} failed: {' | '.join(tail)}", "ffmpeg_failed") from exc
    return out


def extract_audio(src: str | Path, dst: str | Path, sample_rate: int = 16000) -> Path:
    """The first audio stream as mono PCM s16 WAV at ``sample_rate``, written atomically."""
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        stream = ffmpeg.input(str(src)).output(
            str(tmp), format="wav", acodec="pcm_s16le", ac=1, ar=sample_rate, map="0:a:0", vn=None
        ).overwrite_output()
        _run(stream, "audio extraction")
    return dst


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Decode any audio (or a video's first audio stream) to mono float32 in [-1, 1]."""
    stream = ffmpeg.input(str(path)).output("pipe:", format="s16le", acodec="pcm_s16le", ac=1, ar=sample_rate)
    raw = _run(stream, "audio decoding")
    return np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0


def grab_frame(path: str | Path, time_s: float, width: int | None = None, quality: int = 3) -> bytes:
    """One JPEG frame at ``time_s`` (input-side seek: fast), scaled to ``width`` keeping the aspect ratio."""
    stream = ffmpeg.input(str(path), ss=max(0.0, float(time_s)))
    if width:
        stream = stream.filter("scale", int(width), -2)
    data = _run(stream.output("pipe:", vframes=1, format="image2", vcodec="mjpeg", **{"q:v": quality}), "frame grab")
    if not data:
        raise MediaError(f"no frame at {time_s:.3f}s", "no_frame")
    return data


def cut(src: str | Path, dst: str | Path, start_s: float, end_s: float, reencode: bool = True) -> Path:
    """Cut [start_s, end_s) into ``dst`` (re-encoded by default for frame-exact cuts)."""
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        stream = ffmpeg.input(str(src), ss=start_s, t=max(0.0, end_s - start_s))
        opts: dict[str, Any] = {"c": "copy"} if not reencode else {"vcodec": "libx264", "preset": "veryfast", "acodec": "aac"}
        _run(stream.output(str(tmp), format=dst.suffix.lstrip(".") or "mp4", **opts).overwrite_output(), "cut")
    return dst


@dataclass
class VideoTiming:
    """Timing facts of the first video stream that ``probe`` does not keep (for frame-exact work)."""

    rate: Fraction  # average frame rate, exact (0 when unknown)
    nb_frames: int | None  # frames, from the container header or (``count_frames``) counted packets
    duration_s: float | None  # the video stream's own duration
    start_time_s: float  # the file's start time: what "0 s" means for times in the work dir


def video_timing(path: str | Path, count_frames: bool = False) -> VideoTiming:
    """Frame rate, frame count and start time of the first video stream.

    ``count_frames`` counts packets (demuxing only, no decoding) when the header gives no frame count.
    """
    try:
        info = ffmpeg.probe(str(path), select_streams="v:0")
        stream = (info.get("streams") or [{}])[0]
        nb_frames = int(stream.get("nb_frames") or 0) or None
        if nb_frames is None and count_frames:
            counted = ffmpeg.probe(str(path), select_streams="v:0", count_packets=None)
            nb_frames = int((counted.get("streams") or [{}])[0].get("nb_read_packets") or 0) or None
    except ffmpeg.Error as exc:
        tail = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()[-1:]
        raise MediaError(f"{Path(path).name}: unreadable or corrupt media: {' '.join(tail)}", "corrupt_media") from exc
    rate = Fraction(0)
    for key in ("avg_frame_rate", "r_frame_rate"):
        text = stream.get(key) or "0/0"
        if text != "0/0":
            try:
                rate = Fraction(text)
            except (ValueError, ZeroDivisionError):
                continue
            if rate > 0:
                break
    duration = stream.get("duration")
    return VideoTiming(
        rate=rate,
        nb_frames=nb_frames,
        duration_s=float(duration) if duration not in (None, "N/A") else None,
        start_time_s=float(info.get("format", {}).get("start_time") or 0.0),
    )


def check_complete(path: str | Path) -> None:
    """Raise ``MediaError`` (corrupt_media) when a file holds fewer packets than its header announces.

    A truncated mp4 whose index (moov) comes first still probes fine; demuxing every packet (no decoding)
    and comparing with the header's per-stream frame counts finds it. Streams without a count pass.
    """
    try:
        info = ffmpeg.probe(str(path), count_packets=None)
    except ffmpeg.Error as exc:
        tail = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()[-1:]
        raise MediaError(f"{Path(path).name}: unreadable or corrupt media: {' '.join(tail)}", "corrupt_media") from exc
    for stream in info.get("streams", []):
        announced = int(stream.get("nb_frames") or 0)
        read = int(stream.get("nb_read_packets") or 0)
        if announced and read < announced:
            kind = stream.get("codec_type", "stream")
            raise MediaError(
                f"{Path(path).name}: truncated file: {kind} stream {stream.get('index')} has {read} of the "
                f"{announced} packets its header announces",
                "corrupt_media",
            )
