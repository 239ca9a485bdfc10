"""transcribe on real recordings (../shared/media): does the transcript keep the real speech?

Per file: the fraction of the Silero VAD's speech (unpadded) covered by the kept words' time spans (each word
widened by 0.2 s, ``v60k.backends.asr.metrics.speech_coverage``; goal >= 0.90 on every file with speech), the
seconds of VAD speech the guards dropped, and the seconds decoded again. Files: jfk.flac, multilingual.mp3
(English, then German: tiny.en hears the German as English-like sounds), stereo_diarization.wav, the seven AMI
meeting excerpts, and a phone call built from real voices: jfk.flac cut at its pause and the stereo file's two
channels (two other speakers), each band-limited to the telephone band (300-3400 Hz, 8 kHz) and back to
16 kHz, alternating with 0.8 s pauses. bigbuckbunny.mp4 (music and effects) must yield no word.
Skipped (no rows) without ../shared/media.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from bench.bench_real_speech import write_wav
from bench.common import Row, scratch
from v60k.backends.asr.guards import speech_regions
from v60k.backends.asr.metrics import speech_coverage
from v60k.core.executors.base import run_one
from v60k.core.stage import StageContext, Video
from v60k.core.workdir import WorkDir, read_json
from v60k.stages.transcribe import Transcribe, TranscribeSettings, read_wav

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "media"
SPEECH_FILES = ["jfk.flac", "multilingual.mp3", "stereo_diarization.wav",
                *(f"real-speech/ami-trn{n:02d}.flac" for n in (0, 3, 4, 5, 6, 8, 9))]
RATE = 16000


def telephone(source: Path, channel: int | None = None) -> np.ndarray:
    """One channel (None: the mono mix) of ``source`` through the telephone band: 300-3400 Hz at 8 kHz, then
    back to 16 kHz mono float32."""
    pan = [f"pan=mono|c0=c{channel}"] if channel is not None else []
    chain = ",".join([*pan, "highpass=f=300", "lowpass=f=3400", "aresample=8000", f"aresample={RATE}"])
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(source), "-af", chain, "-ac", "1", "-ar", str(RATE),
                          "-f", "s16le", "-acodec", "pcm_s16le", "pipe:"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0


def phone_call(shared: Path, target: Path, pause_s: float = 0.8) -> Path:
    """A two-sided call from real voices: jfk's first half, the stereo file's left speaker, jfk's second half,
    its right speaker (each cut at a VAD pause), telephone band, ``pause_s`` between turns; a 16 kHz mono WAV."""
    jfk = telephone(shared / "jfk.flac")
    regions = speech_regions(jfk, pad_ms=0)
    middle = len(jfk) / RATE / 2
    cut_s = min(((end + start) / 2 for (_, end), (start, _) in zip(regions, regions[1:])),
                key=lambda t: abs(t - middle))
    cut = int(cut_s * RATE)
    stereo = shared / "stereo_diarization.wav"
    pause = np.zeros(int(pause_s * RATE), dtype=np.float32)
    turns = [jfk[:cut], telephone(stereo, 0), jfk[cut:], telephone(stereo, 1)]
    samples = np.concatenate([part for turn in turns for part in (turn, pause)])
    target.parent.mkdir(parents=True, exist_ok=True)
    write_wav(target, samples)
    return target


def _video(workdir: WorkDir, name: str, source: Path) -> Video:
    video = Video(video_id=name, source_url=f"file://{source}", dir=workdir.video_dir(name))
    video.dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, video.dir / f"source{source.suffix}")
    return video


def run() -> list[Row]:
    if not (SHARED / "jfk.flac").exists():
        print(f"   no real media at {SHARED}: skipped")
        return []
    root = scratch("real-transcripts")
    shutil.rmtree(root, ignore_errors=True)
    workdir = WorkDir(root / "work").create()
    stage = Transcribe(TranscribeSettings(cpu_threads=2), StageContext(workdir))
    stage.setup()
    sources = {Path(name).stem: SHARED / name for name in SPEECH_FILES}
    sources["phone-call"] = phone_call(SHARED, root / "phone-call.wav")
    rows: list[Row] = []
    coverages: list[float] = []
    dropped_total = redecoded_total = 0.0
    for name, source in sources.items():
        video = _video(workdir, name, source)
        outcome = run_one(stage, video)
        doc = read_json(video.paths.transcript_json) if video.paths.transcript_json.exists() else {"segments": []}
        speech = speech_regions(read_wav(video.paths.audio_wav), pad_ms=0)
        coverage = speech_coverage(speech, [(w["start_s"], w["end_s"]) for s in doc["segments"] for w in s["words"]])
        totals = (outcome.metrics or {}).get("totals", {})
        dropped, redecoded = totals.get("dropped_speech_s", 0.0), totals.get("redecoded_s", 0.0)
        coverages.append(coverage)
        dropped_total += dropped
        redecoded_total += redecoded
        vad_s = sum(end - start for start, end in speech)
        rows.append(Row("real-asr", f"{name}: VAD speech covered by kept words", round(coverage, 3), "",
                        f"{outcome.state}, VAD {vad_s:.1f} s, dropped {dropped:.2f} s, re-decoded {redecoded:.1f} s",
                        ">= 0.90"))
    rows.append(Row("real-asr", "mean coverage of VAD speech", round(float(np.mean(coverages)), 3), "",
                    f"min {min(coverages):.3f} over {len(coverages)} files", ">= 0.90 each"))
    rows.append(Row("real-asr", "VAD speech dropped by the guards (all files)", round(dropped_total, 2), "s",
                    f"re-decoded {redecoded_total:.1f} s", ""))
    bunny = _video(workdir, "bigbuckbunny", SHARED / "bigbuckbunny.mp4")
    outcome = run_one(stage, bunny)
    doc = read_json(bunny.paths.transcript_json) if bunny.paths.transcript_json.exists() else {"segments": []}
    words = sum(len(s["words"]) for s in doc["segments"])
    rows.append(Row("real-asr", "bigbuckbunny.mp4 (music, effects): words kept", words, "",
                    f"{outcome.state} {outcome.error_class or ''}".strip(), "0"))
    return rows
