"""Diarization of real speech through the transcribe and diarize stages, scored by diarization error rate.

Sets, each run as videos of one work dir (source file → transcribe → diarize, default settings):
- ``ami-*``: the 7 real AMI meeting excerpts of ../shared/media/real-speech (2-4 speakers, overlap, laughter)
  against their RTTM. Goals: mean DER <= 0.30, none worse than 0.45, speaker count within ±1.
- ``built-*``: conversations cut and joined from the real single-speaker recordings of ../shared/media
  (jfk.flac, each channel of stereo_diarization.wav, multilingual.mp3) with known turns: the reference of a
  piece is its source's speech (Silero VAD on the clean source), labelled with the source's speaker. A
  telephone-band copy (8 kHz and back, 300-3400 Hz) of two of them, and one real speaker alone (goal: 1): the
  MIT licence read in English then German, and Kennedy's sentence cut in two by 8 s silences.
- the generated episodes stay in ``bench_diarize`` (their count goal: exact).

DER: ``pyannote.metrics`` (no collar, overlapped speech scored, over the whole file). Also printed: speakers
found vs true per file and the diarize stage's real-time factor (model loaded once, audio decoding included).

The diarize stage runs with its default backend (``embeddings``, CPU). On a machine with pyannote.audio and its
weights, ``V60K_BENCH_DIARIZE_BACKEND=pyannote`` scores the production backend on the same files
(``V60K_PYANNOTE_MODEL``: a local pipeline directory or a Hub id, default community-1; ``device`` cuda, falling
back to cpu).
"""

from __future__ import annotations

import os
import shutil
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import Row, scratch
from v60k.backends.asr.guards import speech_regions
from v60k.backends.diarization.metrics import Span, diarization_error, read_rttm
from v60k.core.stage import StageContext, Video
from v60k.core.workdir import WorkDir, read_json
from v60k.media.streams import load_audio
from v60k.stages.diarize import Diarize
from v60k.stages.transcribe import Transcribe
from v60k.testing.sample_episodes import telephone_band

MEDIA = Path(__file__).resolve().parent.parent.parent / "shared" / "media"
REAL_SPEECH = MEDIA / "real-speech"
RATE = 16000
BACKEND = os.environ.get("V60K_BENCH_DIARIZE_BACKEND", "embeddings")


@dataclass
class Recording:
    """One file to diarize and what is true about it."""

    name: str
    audio: np.ndarray | None  # None: use ``source`` as it is
    reference: list[Span]
    source: Path | None = None
    speakers: int = 0
    group: str = "ami"
    scores: dict[str, float] = field(default_factory=dict)
    detector: str = ""  # the diarizer's overlapped-speech detector


def ami_recordings() -> list[Recording]:
    rttm = REAL_SPEECH / "ami-train.rttm"
    if not rttm.exists():
        return []
    out = []
    for file_id, spans in sorted(read_rttm(rttm).items()):
        source = REAL_SPEECH / f"ami-{file_id}.flac"
        if source.exists():
            out.append(Recording(f"ami-{file_id}", None, spans, source, len({s for _, _, s in spans})))
    return out


def speech_pieces(audio: np.ndarray, longest_s: float = 5.0) -> list[list[tuple[float, float]]]:
    """The recording's speech (Silero VAD) grouped into pieces of at most ``longest_s``: each piece is the list
    of its speech regions (seconds from the recording's start)."""
    regions = speech_regions(audio, RATE, min_silence_ms=250, pad_ms=30)
    pieces: list[list[tuple[float, float]]] = []
    for start, end in regions:
        if pieces and end - pieces[-1][0][0] <= longest_s:
            pieces[-1].append((start, end))
        else:
            pieces.append([(start, end)])
    return pieces


def converse(voices: dict[str, np.ndarray], order: list[str], seed: int) -> tuple[np.ndarray, list[Span]]:
    """Pieces of each voice joined in ``order`` (each voice's pieces in turn, cycling) with 0.3-0.9 s of
    silence between turns; the reference is each piece's speech regions at their new place."""
    rng = np.random.default_rng(seed)
    pieces = {name: speech_pieces(audio) for name, audio in voices.items()}
    used = dict.fromkeys(voices, 0)
    chunks, reference, now = [], [], 0.0
    for name in order:
        piece = pieces[name][used[name] % len(pieces[name])]
        used[name] += 1
        start, end = max(0.0, piece[0][0] - 0.05), piece[-1][1] + 0.05
        gap = np.zeros(int(rng.uniform(0.3, 0.9) * RATE), np.float32)
        now += len(gap) / RATE
        chunks += [gap, voices[name][int(start * RATE) : int(end * RATE)]]
        reference += [(now + a - start, now + b - start, name) for a, b in piece]
        now += (int(end * RATE) - int(start * RATE)) / RATE
    chunks.append(np.zeros(RATE // 2, np.float32))
    return np.concatenate(chunks), reference


def built_recordings() -> list[Recording]:
    """Conversations of real voices with known turns (see the module docstring)."""
    needed = [MEDIA / n for n in ("jfk.flac", "stereo_diarization.wav", "multilingual.mp3")]
    if not all(p.exists() for p in needed):
        return []
    stereo, _ = read_stereo(MEDIA / "stereo_diarization.wav")
    voices = {"kennedy": load_audio(MEDIA / "jfk.flac", RATE), "reader_left": stereo[:, 0].copy(),
              "reader_right": stereo[:, 1].copy(), "mit_reader": load_audio(MEDIA / "multilingual.mp3", RATE)[: 30 * RATE]}
    four, four_ref = converse(voices, ["kennedy", "reader_left", "mit_reader", "reader_right", "kennedy",
                                       "mit_reader", "reader_left", "kennedy", "mit_reader", "reader_right",
                                       "mit_reader", "kennedy"], seed=1)
    two_voices = {k: voices[k] for k in ("kennedy", "mit_reader")}
    call, call_ref = converse(two_voices, ["mit_reader", "kennedy"] * 5, seed=2)
    one = load_audio(MEDIA / "multilingual.mp3", RATE)
    quiet = np.zeros(8 * RATE, np.float32)
    kennedy = voices["kennedy"]
    split = np.concatenate([quiet, kennedy[: 5 * RATE], quiet, kennedy[5 * RATE :], quiet])
    split_ref = [(a + (8 if a < 5 else 16), b + (8 if b <= 5 else 16), "kennedy")
                 for piece in speech_pieces(kennedy) for a, b in _split_at(piece, 5.0)]
    return [
        Recording("built-4voices", four, four_ref, speakers=4, group="built"),
        Recording("built-4voices-phone", telephone_band(four), four_ref, speakers=4, group="built"),
        Recording("built-call-phone", telephone_band(call), call_ref, speakers=2, group="built"),
        Recording("built-one-reader-en-de", one, [(0.0, len(one) / RATE, "mit_reader")], speakers=1, group="built"),
        Recording("built-kennedy-silences", split, split_ref, speakers=1, group="built"),
    ]


def _split_at(piece: list[tuple[float, float]], cut_s: float) -> list[tuple[float, float]]:
    """The regions of ``piece`` with any region across ``cut_s`` cut in two there."""
    out = []
    for a, b in piece:
        out += [(a, cut_s), (cut_s, b)] if a < cut_s < b else [(a, b)]
    return out


def read_stereo(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit stereo WAV file as floats in [-1, 1] (samples x 2), and its sample rate."""
    with wave.open(str(path)) as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), np.int16).reshape(-1, 2).astype(np.float32) / 32768
        return samples, wav.getframerate()


def write_wav(path: Path, audio: np.ndarray) -> None:
    """``audio`` (floats in [-1, 1], 16 kHz mono) as a 16-bit WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())


def diarize_all(recordings: list[Recording], root: Path) -> tuple[float, float]:
    """Each recording through transcribe + diarize; scores stored on it. Returns diarize seconds, audio seconds."""
    workdir = WorkDir(root / "work").create()
    transcribe, diarize = Transcribe(context=StageContext(workdir)), Diarize(diarize_settings(), StageContext(workdir))
    transcribe.setup()
    diarize.setup()
    videos = []
    for rec in recordings:  # transcribe everything first: the timings below see diarize alone
        video = Video(video_id=rec.name, source_url=f"file://{rec.source or rec.name}", dir=workdir.video_dir(rec.name))
        video.dir.mkdir(parents=True, exist_ok=True)
        if rec.source is not None:
            shutil.copy(rec.source, video.dir / f"source{rec.source.suffix}")
        else:
            write_wav(video.dir / "source.wav", rec.audio)
        transcribe.process(video)
        videos.append(video)
    diarize_s = audio_s = 0.0
    for rec, video in zip(recordings, videos):
        started = time.perf_counter()
        diarize.process(video)
        diarize_s += time.perf_counter() - started
        with wave.open(str(video.paths.audio_wav)) as wav:
            duration = wav.getnframes() / wav.getframerate()
        audio_s += duration
        document = read_json(video.paths.diarization_json)
        rec.scores = diarization_error(document["turns"], rec.reference, (0.0, duration))
        rec.scores["found"] = document["num_speakers"]
        rec.scores["overlap_s"] = float(document["details"].get("overlap_s", 0.0))
        rec.detector = str(document["details"].get("overlap_detector", ""))
    return diarize_s, audio_s


def diarize_settings() -> Diarize.Settings:
    """The diarize stage's defaults, or the backend ``V60K_BENCH_DIARIZE_BACKEND`` names."""
    model = os.environ.get("V60K_PYANNOTE_MODEL")
    return Diarize.Settings(backend=BACKEND, **({"model": model} if BACKEND == "pyannote" and model else {}))


def run() -> list[Row]:
    recordings = ami_recordings() + built_recordings()
    if not recordings:
        return [Row("real", "real speech (../shared/media absent)", 0.0, "", "skipped", "")]
    root = scratch("real-speech")
    shutil.rmtree(root, ignore_errors=True)
    diarize_s, audio_s = diarize_all(recordings, root)
    rows = []
    for rec in recordings:
        s = rec.scores
        rows.append(Row("real", f"{rec.name} DER", round(s["der"], 3), "",
                        f"miss {s['missed']:.2f} fa {s['false_alarm']:.2f} conf {s['confusion']:.2f}",
                        "<= 0.45" if rec.group == "ami" else ""))
        rows.append(Row("real", f"{rec.name} speakers found", float(s["found"]), "", f"true {rec.speakers}",
                        "true ±1" if rec.speakers > 1 else "1"))
    for group in ("ami", "built"):
        chosen = [r for r in recordings if r.group == group]
        if chosen:
            rows.append(Row("real", f"{group} mean DER", round(float(np.mean([r.scores["der"] for r in chosen])), 3),
                            "", f"{len(chosen)} files", "<= 0.30" if group == "ami" else ""))
            rows.append(Row("real", f"{group} overlapped speech found", round(sum(
                r.scores["overlap_s"] for r in chosen), 1), "s", f"detector {chosen[0].detector}", ""))
            rows.append(Row("real", f"{group} count off by >1", float(sum(
                abs(r.scores["found"] - r.speakers) > 1 for r in chosen)), "files", "", "0"))
    rows.append(Row("real", f"diarize RTF ({BACKEND}, {os.cpu_count()} cores)", round(diarize_s / audio_s, 4), "x",
                    f"{audio_s:.0f} s of audio", "<= 0.06"))
    return rows
