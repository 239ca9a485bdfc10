"""Synthetic episodes with known truth: hard scene cuts (ffmpeg lavfi sources), lines spoken by distinct
espeak-ng voices, and a cast that names each other. The demo, the tests and the benchmarks use them.

    spec = two_speaker_spec()
    episode = build_episode(spec, Path("media"))
    episode.path        # media/<name>.mp4
    episode.truth       # {"duration_s", "cuts_s", "scenes", "lines", "cast", "has_audio", "has_video"}
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 22050
# Moving, visually distinct lavfi sources: consecutive scenes never look alike, so every cut is a hard cut.
# The ones that draw at random are seeded: the same arguments build the same pictures on every run.
SCENE_SOURCES = (
    "testsrc2=size={w}x{h}:rate={fps}",
    "life=size={w}x{h}:rate={fps}:mold=10:ratio=0.3:death_color=#2040a0:life_color=#f0d020:seed=3",
    "gradients=size={w}x{h}:rate={fps}:speed=0.03:c0=#ff2020:c1=#2020ff:seed=3",
    "cellauto=size={w}x{h}:rate={fps}:rule=110:seed=3",
    "sierpinski=size={w}x{h}:rate={fps}:seed=3",
    "smptehdbars=size={w}x{h}:rate={fps}",
    "gradients=size={w}x{h}:rate={fps}:speed=0.05:c0=#10e010:c1=#f0f0f0:type=radial:seed=3",
    "colorchart=rate={fps}:patch_size=64x64",
)


@dataclass
class Speaker:
    """A character's voice: an espeak-ng voice+variant, pitch (0-99) and speed (words per minute)."""

    name: str
    voice: str = "en-us+m3"
    pitch: int = 50
    speed: int = 160


@dataclass
class Line:
    speaker: str
    text: str


@dataclass
class EpisodeSpec:
    """What to build. ``scene_lengths_s`` None: a cut after every ``lines_per_scene`` lines (in the gap)."""

    name: str
    speakers: list[Speaker] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    cast: list[str] | None = None  # the manifest's cast list; default: every speaker
    scene_lengths_s: list[float] | None = None
    lines_per_scene: int = 3
    width: int = 640
    height: int = 360
    fps: int = 25
    lead_s: float = 1.0
    gap_s: float = 0.7
    tail_s: float = 1.0
    audio: bool = True
    video: bool = True
    music: bool = False
    duration_s: float | None = None  # only for episodes without lines

    def speaker(self, name: str) -> Speaker:
        for sp in self.speakers:
            if sp.name == name:
                return sp
        raise KeyError(f"episode {self.name}: unknown speaker {name!r}")


@dataclass
class Episode:
    path: Path
    truth_path: Path
    truth: dict[str, Any]


def _speak(speaker: Speaker, text: str, workdir: Path, index: int) -> np.ndarray:
    """espeak-ng → int16 samples at SAMPLE_RATE, with leading/trailing silence trimmed."""
    out = workdir / f"line{index:03d}.wav"
    subprocess.run(
        ["espeak-ng", "-v", speaker.voice, "-p", str(speaker.pitch), "-s", str(speaker.speed), "-w", str(out), text],
        check=True,
        capture_output=True,
        # espeak-ng opens a PulseAudio client even when writing a file; in a HOME without a pulse cookie that
        # client's set-up shifts espeak's random voice jitter, so the same line would sound different per run
        env={**os.environ, "PULSE_SERVER": "none"},
    )
    with wave.open(str(out)) as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    if rate != SAMPLE_RATE:  # espeak-ng speaks at 22050 Hz; resample defensively
        x = np.linspace(0, len(samples), int(len(samples) * SAMPLE_RATE / rate), endpoint=False)
        samples = np.interp(x, np.arange(len(samples)), samples).astype(np.int16)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 300)
    return samples[loud[0] : loud[-1] + 1] if loud.size else samples


def _music_bed(n: int, seed: int = 7) -> np.ndarray:
    """A chord with tremolo and a beat: music-like, speech-free."""
    t = np.arange(n) / SAMPLE_RATE
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6, 440.0))
    tremolo = 0.6 + 0.4 * np.sin(2 * np.pi * 2.0 * t)
    beat = (np.sin(2 * np.pi * 60 * t) * np.exp(-((t * 2) % 1.0) * 12)) * 1.5
    rng = np.random.default_rng(seed)
    signal = (chord / 4 * tremolo + beat) * 3000 + rng.normal(0, 30, n)
    return np.clip(signal, -32767, 32767).astype(np.int16)


def _frames(seconds: float, fps: int) -> int:
    return max(1, int(round(seconds * fps)))


def _layout(spec: EpisodeSpec, clips: list[np.ndarray]) -> tuple[list[dict[str, Any]], float, list[float]]:
    """Place lines on the timeline; return (lines with times, total duration, scene lengths)."""
    placed, t = [], spec.lead_s
    for line, clip in zip(spec.lines, clips):
        start = round(t, 3)
        end = round(t + len(clip) / SAMPLE_RATE, 3)
        placed.append({"speaker": line.speaker, "text": line.text, "start_s": start, "end_s": end})
        t = end + spec.gap_s
    total = placed[-1]["end_s"] + spec.tail_s if placed else spec.duration_s or 10.0
    if spec.scene_lengths_s:
        lengths = list(spec.scene_lengths_s)
    elif placed:
        cuts = []
        for i in range(spec.lines_per_scene, len(placed), spec.lines_per_scene):
            cuts.append((placed[i - 1]["end_s"] + placed[i]["start_s"]) / 2)  # in the gap: never inside a line
        bounds = [0.0, *cuts, total]
        lengths = [b - a for a, b in zip(bounds, bounds[1:])]
    else:
        n = max(1, int(total // 4))
        lengths = [total / n] * n
    # whole frames, so that every cut falls exactly on a frame boundary
    frames = [_frames(length, spec.fps) for length in lengths]
    lengths = [f / spec.fps for f in frames]
    return placed, sum(lengths), lengths


def build_scene_video(
    path: str | Path,
    scene_lengths_s: list[float],
    width: int = 640,
    height: int = 360,
    fps: int = 25,
    audio: bool = True,
    audio_track: Path | None = None,
    crf: int = 23,
) -> dict[str, Any]:
    """An H.264 mp4 whose scenes are distinct moving lavfi sources with hard cuts at known times.

    Returns {"duration_s", "cuts_s", "scenes"}. ``audio`` without ``audio_track`` adds a quiet tone.
    """
    import ffmpeg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [_frames(length, fps) for length in scene_lengths_s]
    streams = []
    for i, n in enumerate(frames):
        source = SCENE_SOURCES[i % len(SCENE_SOURCES)].format(w=width, h=height, fps=fps)
        stream = ffmpeg.input(source, f="lavfi", t=n / fps)
        stream = stream.filter("scale", width, height).filter("setsar", 1).filter("fps", fps).filter("format", "yuv420p")
        if i >= len(SCENE_SOURCES):  # repeated sources get a different hue so neighbours still differ
            stream = stream.filter("hue", h=(i // len(SCENE_SOURCES)) * 97)
        streams.append(stream.trim(end_frame=n).setpts("PTS-STARTPTS"))
    video = ffmpeg.concat(*streams, v=1, a=0) if len(streams) > 1 else streams[0]
    total = sum(frames) / fps
    outputs = [video]
    if audio_track is not None:
        outputs.append(ffmpeg.input(str(audio_track)).audio)
    elif audio:
        outputs.append(ffmpeg.input(f"sine=frequency=330:sample_rate={SAMPLE_RATE}", f="lavfi", t=total).audio.filter("volume", 0.05))
    tmp = path.with_name(path.name + ".tmp.mp4")
    options: dict[str, Any] = {"vcodec": "libx264", "preset": "ultrafast", "crf": crf, "pix_fmt": "yuv420p",
                               "r": fps, "t": total, "movflags": "+faststart"}
    if len(outputs) > 1:
        options.update(acodec="aac", audio_bitrate="96k", ac=1)
    ffmpeg.output(*outputs, str(tmp), **options).overwrite_output().run(quiet=True)
    tmp.replace(path)
    cuts, scenes, t = [], [], 0.0
    for n in frames:
        scenes.append({"start_s": round(t, 6), "end_s": round(t + n / fps, 6), "frames": n})
        t += n / fps
        cuts.append(round(t, 6))
    return {"duration_s": round(total, 6), "cuts_s": cuts[:-1], "scenes": scenes, "fps": fps}


def build_episode(spec: EpisodeSpec, out_dir: str | Path) -> Episode:
    """Render ``spec`` to ``out_dir/<name>.mp4`` (or .m4a without video) plus ``<name>.truth.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="v60k-episode-") as tmp_name:
        tmp = Path(tmp_name)
        clips = [_speak(spec.speaker(line.speaker), line.text, tmp, i) for i, line in enumerate(spec.lines)]
        lines, total, lengths = _layout(spec, clips)
        track = np.zeros(int(round(total * SAMPLE_RATE)) + 1, dtype=np.int32)
        for line, clip in zip(lines, clips):
            start = int(round(line["start_s"] * SAMPLE_RATE))
            track[start : start + len(clip)] += clip[: len(track) - start]
        if spec.music:
            track += _music_bed(len(track))
        audio_path = tmp / "track.wav"
        with wave.open(str(audio_path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(SAMPLE_RATE)
            wav.writeframes(np.clip(track, -32767, 32767).astype(np.int16).tobytes())
        if spec.video:
            path = out_dir / f"{spec.name}.mp4"
            facts = build_scene_video(
                path, lengths, spec.width, spec.height, spec.fps, audio=spec.audio,
                audio_track=audio_path if spec.audio else None,
            )
        else:
            import ffmpeg

            path = out_dir / f"{spec.name}.m4a"
            ffmpeg.input(str(audio_path)).output(str(path), acodec="aac", t=total).overwrite_output().run(quiet=True)
            facts = {"duration_s": total, "cuts_s": [], "scenes": []}
    truth = {
        "name": spec.name,
        "duration_s": facts["duration_s"],
        "fps": spec.fps if spec.video else None,
        "cuts_s": facts["cuts_s"],
        "scenes": [{"start_s": s["start_s"], "end_s": s["end_s"]} for s in facts["scenes"]],
        "lines": lines if spec.audio else [],
        "cast": list(spec.cast if spec.cast is not None else [s.name for s in spec.speakers]),
        "speakers": [vars(s) for s in spec.speakers],
        "has_audio": spec.audio,
        "has_video": spec.video,
        "music": spec.music,
    }
    truth_path = out_dir / f"{spec.name}.truth.json"
    truth_path.write_text(json.dumps(truth, indent=1), encoding="utf-8")
    return Episode(path=path, truth_path=truth_path, truth=truth)


MONICA = Speaker("Monica", voice="en-us+f3", pitch=70, speed=165)
ROSS = Speaker("Ross", voice="en-us+m3", pitch=30, speed=145)
RACHEL = Speaker("Rachel", voice="en-gb+f4", pitch=90, speed=180)
JOEY = Speaker("Joey", voice="en+m7", pitch=55, speed=135)


def two_speaker_spec(name: str = "central-perk") -> EpisodeSpec:
    """Monica and Ross; each is named by the other at least once."""
    lines = [
        Line("Monica", "Hi Ross, you look tired this morning. Did you sleep at all?"),
        Line("Ross", "Not really, Monica. The museum called me three times about the new dinosaur bones."),
        Line("Monica", "You should take a day off. I can make you pancakes with blueberries."),
        Line("Ross", "Thanks. I will eat anything right now, as long as it comes with coffee."),
        Line("Monica", "Then sit down. The coffee is fresh and the kitchen is finally clean."),
        Line("Ross", "I have to say, this apartment always smells like cinnamon and lemons."),
        Line("Monica", "That is because I bake every Sunday. Tell me more about the museum."),
        Line("Ross", "They want me to give a lecture to a room full of children on Friday."),
        Line("Monica", "You will be great. Children love dinosaurs more than anything."),
    ]
    return EpisodeSpec(name=name, speakers=[MONICA, ROSS], lines=lines)


def three_speaker_spec(name: str = "apartment") -> EpisodeSpec:
    """Monica, Ross and Rachel; each is named at least once by someone else."""
    lines = [
        Line("Rachel", "Monica, have you seen my green scarf? I cannot find it anywhere."),
        Line("Monica", "It is on the chair by the window, right where you left it yesterday."),
        Line("Ross", "Rachel, are you going out tonight? It is supposed to rain."),
        Line("Rachel", "Yes Ross, I am meeting my friends from work for dinner downtown."),
        Line("Monica", "Take an umbrella. The weather report said there could be thunder."),
        Line("Ross", "I can drive you if you want. My car is parked just across the street."),
        Line("Rachel", "That would be wonderful. Let me grab my coat and my keys."),
        Line("Monica", "Do not forget to bring back my umbrella this time, please."),
        Line("Ross", "We will be careful, Monica. We should be back before midnight."),
    ]
    return EpisodeSpec(name=name, speakers=[MONICA, ROSS, RACHEL], lines=lines)


def demo_specs() -> list[EpisodeSpec]:
    """The episodes `make demo` builds: two dialogues, and one video without any audio stream."""
    silent = EpisodeSpec(name="silent-walk", audio=False, duration_s=12.0, scene_lengths_s=[4.0, 4.0, 4.0])
    return [two_speaker_spec(), three_speaker_spec(), silent]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up mid-file (yt-dlp probing, a killed run) is normal here; other errors print."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class MediaServer:
    """A real HTTP server on 127.0.0.1 serving a directory: the demo and the tests download from it."""

    def __init__(self, root: str | Path, port: int = 0):
        self.root = Path(root)
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        self.httpd = _QuietServer(("127.0.0.1", port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def __enter__(self) -> MediaServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def telephone_band(audio: np.ndarray) -> np.ndarray:
    """16 kHz audio as a phone line carries it: down to 8 kHz, 300-3400 Hz, back up to 16 kHz (float32)."""
    from scipy.signal import butter, resample_poly, sosfiltfilt

    narrow = resample_poly(audio, 1, 2)
    narrow = sosfiltfilt(butter(6, [300, 3400], btype="bandpass", fs=8000, output="sos"), narrow)
    return resample_poly(narrow, 2, 1).astype(np.float32)
