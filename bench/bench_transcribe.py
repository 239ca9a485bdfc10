"""transcribe on generated episodes (espeak-ng voices, known lines and cast).

Figures: the transcribe stage's wall time on the two-speaker episode (audio extraction, faster-whisper tiny.en
int8, re-decodes when any, repetition trimming, line splitting, guards, transcript.json; the scenes stage's
stream facts in place, as in the pipeline) against calling faster-whisper directly on the same extracted audio with the same
settings (each model loaded once; best of 5 runs, interleaved; goal ≤ 1.1×), the stage's real-time factor, and
the same ratio on a real meeting excerpt where the stage decodes a stretch again (ami-trn05) and on the seven
real excerpts joined (3.5 min; both when ../shared/media is present), the word error rate over three episodes (two speakers, three speakers, uncommon names) with the cast prompt
(the stage's default, fallback included) and without a cast list (goals ≤ 0.20 and ≤ 0.30); the real
jfk.flac's WER when ../shared/media is present.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import ffmpeg

from bench.common import Row, scratch, timed
from v60k.backends.asr import cast_prompt
from v60k.backends.asr.faster_whisper import FasterWhisperBackend
from v60k.backends.asr.guards import speech_regions
from v60k.backends.asr.metrics import word_error_rate
from v60k.core.stage import StageContext, Video
from v60k.core.workdir import WorkDir, read_json, write_json
from v60k.media.streams import extract_audio, probe
from v60k.stages.transcribe import Transcribe, TranscribeSettings, read_wav
from v60k.testing.sample_episodes import (
    EpisodeSpec,
    Line,
    Speaker,
    build_episode,
    three_speaker_spec,
    two_speaker_spec,
)

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "media"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def uncommon_names_spec() -> EpisodeSpec:
    """Names tiny.en has little reason to spell right unprompted."""
    lines = [Line("Phoebe", "Chandler, did you see my guitar anywhere in the kitchen?"),
             Line("Chandler", "No Phoebe, but Gunther might know. He cleaned up after the party."),
             Line("Phoebe", "I will ask Gunther later. Chandler, you look pale today."),
             Line("Chandler", "Thanks Phoebe. I did not sleep, my neighbour played drums all night."),
             Line("Phoebe", "Poor Chandler. Come with me, I will make you some tea.")]
    speakers = [Speaker("Phoebe", "en-us+f3", 70, 165), Speaker("Chandler", "en-us+m3", 30, 145)]
    return EpisodeSpec(name="bench-uncommon", speakers=speakers, lines=lines, cast=["Phoebe", "Chandler", "Gunther"])


def _video(workdir: WorkDir, video_id: str, source: Path, cast: list[str]) -> Video:
    """A video dir as download and scenes leave it (the stage reads scenes.json's stream facts)."""
    video = Video(video_id=video_id, source_url=f"file://{source}", dir=workdir.video_dir(video_id), characters=cast)
    video.dir.mkdir(parents=True, exist_ok=True)
    target = video.dir / f"source{source.suffix}"
    shutil.copy(source, target)
    write_json(video.paths.scenes_json, {"stream": probe(target).to_dict(), "scenes": []})
    return video


def _stage_text(video: Video) -> str:
    return " ".join(s["text"] for s in read_json(video.paths.transcript_json)["segments"])


def _stage_against_direct(stage: Transcribe, direct: FasterWhisperBackend, video: Video,
                          runs: int) -> tuple[float, float, float]:
    """Best-of-``runs`` wall times of the stage and of faster-whisper called directly on the stage's audio
    (interleaved, no cast), and the seconds the stage decoded again."""
    stage.process(video)
    options = direct.transcribe_options(None, None, None)
    wav = str(video.paths.audio_wav)

    def directly() -> int:
        segments, _ = direct.model.transcribe(wav, **options)
        return sum(len(s.words or []) for s in segments)

    took_stage = took_direct = float("inf")
    redecoded = 0.0
    for _ in range(runs):
        took, result = timed(lambda: stage.process(video))
        took_stage, redecoded = min(took_stage, took), result.metrics["totals"]["redecoded_s"]
        took_direct = min(took_direct, timed(directly)[0])
    return took_stage, took_direct, redecoded


def run() -> list[Row]:
    root = scratch("transcribe")
    shutil.rmtree(root, ignore_errors=True)
    workdir = WorkDir(root / "work").create()
    episode = build_episode(two_speaker_spec("bench-transcribe"), root / "media")
    cast = list(episode.truth["cast"])
    audio_s = episode.truth["duration_s"]

    settings = TranscribeSettings(cpu_threads=2)
    stage = Transcribe(settings, StageContext(workdir))
    stage.setup()
    video = _video(workdir, "ep", episode.path, cast)
    stage.process(video)  # warm-up: first-call allocations on both sides
    direct = FasterWhisperBackend(cpu_threads=2)  # the same settings, its own model, loaded once
    direct.load()
    options = direct.transcribe_options(None, cast_prompt(cast), None)
    wav = str(video.paths.audio_wav)

    def call_directly() -> int:
        segments, _ = direct.model.transcribe(wav, **options)
        return sum(len(s.words or []) for s in segments)

    call_directly()
    stage_s = direct_s = float("inf")
    for _ in range(5):
        stage_s = min(stage_s, timed(lambda: stage.process(video))[0])
        direct_s = min(direct_s, timed(call_directly)[0])
    extract_s = timed(lambda: extract_audio(episode.path, root / "extract.wav"), repeat=3)[0]
    samples = read_wav(video.paths.audio_wav)
    vad_s = timed(lambda: speech_regions(samples), repeat=3)[0]

    no_cast = Transcribe(settings.model_copy(update={"cast_prompt": False}), StageContext(workdir))
    no_cast._backend = stage.backend  # the same loaded model
    errors: dict[str, list[float]] = {"cast": [], "plain": []}
    fallbacks = 0
    others = [(spec, build_episode(spec, root / "media")) for spec in (three_speaker_spec("bench-three"),
                                                                        uncommon_names_spec())]
    for spec, other in [(None, episode), *others]:
        truth_text = " ".join(line["text"] for line in other.truth["lines"])
        name = other.path.stem
        prompted = video if spec is None else _video(workdir, name, other.path, list(other.truth["cast"]))
        if spec is not None:
            fallbacks += bool(stage.process(prompted).metrics["cast_prompt_fallback"])
        plain = _video(workdir, f"{name}-no-cast", other.path, [])
        no_cast.process(plain)
        errors["cast"].append(word_error_rate(truth_text, _stage_text(prompted)))
        errors["plain"].append(word_error_rate(truth_text, _stage_text(plain)))

    rows = [
        Row("transcribe", "stage wall time / direct faster-whisper", round(stage_s / direct_s, 3), "x",
            f"direct {direct_s:.2f} s, stage {stage_s:.2f} s", "<= 1.1"),
        Row("transcribe", "stage overhead: audio extraction + guard VAD", round(extract_s + vad_s, 3), "s",
            f"extract {extract_s:.2f} s, VAD {vad_s:.2f} s", ""),
        Row("transcribe", "stage RTF (tiny.en int8, 2 threads)", round(stage_s / audio_s, 4), "x",
            f"{audio_s:.0f} s of audio", ""),
        Row("transcribe", "WER with the cast prompt (mean)", round(sum(errors["cast"]) / 3, 3), "",
            "/".join(f"{e:.3f}" for e in errors["cast"]) + f", {fallbacks} fallback", "<= 0.20"),
        Row("transcribe", "WER without a cast list (mean)", round(sum(errors["plain"]) / 3, 3), "",
            "/".join(f"{e:.3f}" for e in errors["plain"]), "<= 0.30"),
    ]
    meetings = sorted((SHARED / "real-speech").glob("ami-*.flac"))
    if meetings:  # real recordings: one excerpt on which the stage decodes a stretch again, then all of them joined
        joined = root / "media" / "ami-joined.flac"
        ffmpeg.concat(*(ffmpeg.input(str(m)).audio for m in meetings), v=0, a=1).output(str(joined)).run(
            quiet=True, overwrite_output=True)
        for source, what, runs in ((SHARED / "real-speech" / "ami-trn05.flac", "ami-trn05", 3),
                                   (joined, f"the {len(meetings)} AMI excerpts joined", 3)):
            took_stage, took_direct, redecoded = _stage_against_direct(stage, direct, _video(workdir, source.stem, source, []), runs)
            rows.append(Row("transcribe", f"stage / direct on {what} (re-decodes counted)",
                            round(took_stage / took_direct, 3), "x",
                            f"{probe(source).duration_s:.0f} s, direct {took_direct:.2f} s, stage {took_stage:.2f} s, "
                            f"{redecoded:.1f} s re-decoded", "<= 1.1"))
    jfk = SHARED / "jfk.flac"
    if jfk.exists():
        real = _video(workdir, "jfk", jfk, [])
        stage.process(real)
        rows.append(Row("transcribe", "WER on jfk.flac (real speech)", round(word_error_rate(JFK_TEXT, _stage_text(real)), 3),
                        "", "11 s, one speaker", ""))
    return rows
