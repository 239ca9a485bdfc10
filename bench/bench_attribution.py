"""attribute: lines named right, named wrong (goal 0) and left null, on generated episodes and real recordings.

- generated episodes (espeak-ng, v60k.testing.sample_episodes): two and three named speakers, two named speakers plus an uncast
  guest, the two-speaker dialogue over a music bed; transcribe -> diarize -> attribute, scored against the truth
  (goal: >= 0.90 of lines right, a guest's lines right only when null; 0 wrong).
- real AMI meeting excerpts (../shared/media/real-speech), transcribed by faster-whisper tiny.en, oracle
  diarization from the RTTM (each line gets the reference speaker it overlaps most): as spoken (AMI says no cast
  names: every line should stay null); with a crafted self-introduction put into each speaker's first line
  (names expected); and the same with every speaker merged into one cluster (all null expected).
- a real three-voice call built from ../shared/media (the stereo recording's left channel, jfk.flac, its right
  channel; known turns), with crafted introductions ("Hello, this is Mary." "Hi Mary, it's John." "Hi, I'm
  Kate."): oracle clusters, one merged cluster, and the real diarize stage.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_diarize import uncast_guest_spec
from bench.bench_real_speech import read_stereo, write_wav
from bench.common import Row, scratch
from v60k.attribution.scoring import AttributionScore, introduce, oracle_lines, score_lines
from v60k.backends.diarization.metrics import read_rttm
from v60k.core.stage import StageContext, Video
from v60k.core.workdir import WorkDir, read_json, write_json
from v60k.media.streams import load_audio
from v60k.stages.attribute import Attribute, AttributeSettings
from v60k.stages.diarize import Diarize
from v60k.stages.transcribe import Transcribe
from v60k.testing.sample_episodes import build_episode, three_speaker_spec, two_speaker_spec

MEDIA = Path(__file__).resolve().parent.parent.parent / "shared" / "media"
REAL_SPEECH = MEDIA / "real-speech"
NAMES = ["Ross", "Monica", "Rachel", "Joey"]
RATE = 16000


class Pipeline:
    """transcribe -> diarize -> attribute in one work dir, models loaded once."""

    def __init__(self, root: Path):
        self.workdir = WorkDir(root / "work").create()
        self.transcribe = Transcribe(context=StageContext(self.workdir))
        self.transcribe.setup()
        self.diarize = Diarize(context=StageContext(self.workdir))
        self.diarize.setup()

    def video(self, video_id: str, source: Path, cast: list[str]) -> Video:
        video = Video(video_id=video_id, source_url=f"file://{source}", dir=self.workdir.video_dir(video_id),
                      characters=cast)
        video.dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, video.dir / f"source{source.suffix}")
        return video

    def attribute(self, video: Video, lines: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Attribution of the video's diarization.json, or of ``lines`` as its diarization (oracle or crafted)."""
        if lines is not None:
            speakers = sorted({str(ln["speaker"]) for ln in lines if ln["speaker"]})
            write_json(video.paths.diarization_json, {
                "backend": "oracle", "num_speakers": len(speakers), "lines": lines,
                "turns": [{"start_s": ln["start_s"], "end_s": ln["end_s"], "speaker": ln["speaker"]}
                          for ln in lines if ln["speaker"]],
                "speakers": {s: {"total_s": 0.0, "embedding": None} for s in speakers}})
        Attribute(AttributeSettings(voice_bank=False), StageContext(self.workdir)).process(video)
        return read_json(video.paths.lines_json)


def merged(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**ln, "speaker": "SPEAKER_00"} for ln in lines]


def generated(pipeline: Pipeline, root: Path) -> AttributionScore:
    music = two_speaker_spec("bench-attr-music")
    music.music = True
    total = AttributionScore()
    for spec in (two_speaker_spec("bench-attr-two"), three_speaker_spec("bench-attr-three"), uncast_guest_spec(),
                 music):
        episode = build_episode(spec, root / "media")
        video = pipeline.video(spec.name, episode.path, list(episode.truth["cast"]))
        pipeline.transcribe.process(video)
        pipeline.diarize.process(video)
        reference = [(t["start_s"], t["end_s"], t["speaker"]) for t in episode.truth["lines"]]
        score = score_lines(pipeline.attribute(video)["lines"], reference, {c: c for c in episode.truth["cast"]})
        print(f"  {spec.name}: {_fmt(score)}", flush=True)
        total += score
    return total


def ami(pipeline: Pipeline) -> tuple[AttributionScore, AttributionScore, AttributionScore]:
    """(as spoken, with introductions, with introductions and one merged cluster) over the AMI excerpts."""
    spoken = introduced = one_cluster = AttributionScore()
    rttm = read_rttm(REAL_SPEECH / "ami-train.rttm")
    for source in sorted(REAL_SPEECH.glob("ami-*.flac")):
        reference = rttm[source.stem.removeprefix("ami-")]
        video = pipeline.video(source.stem, source, NAMES)
        pipeline.transcribe.process(video)
        lines = oracle_lines(read_json(video.paths.transcript_json).get("segments") or [], reference)
        speakers = sorted({ln["speaker"] for ln in lines if ln["speaker"]})
        names = dict(zip(speakers, NAMES, strict=False))
        with_intros = introduce(lines, reference, {s: f"I'm {n}." for s, n in names.items()})
        scores = (score_lines(pipeline.attribute(video, lines)["lines"], reference, {}),
                  score_lines(pipeline.attribute(video, with_intros)["lines"], reference, names),
                  score_lines(pipeline.attribute(video, merged(with_intros))["lines"], reference, names))
        print(f"  {source.name}: {len(speakers)} speakers; " + " | ".join(_fmt(s) for s in scores), flush=True)
        spoken, introduced, one_cluster = spoken + scores[0], introduced + scores[1], one_cluster + scores[2]
    return spoken, introduced, one_cluster


def call(pipeline: Pipeline, root: Path) -> tuple[AttributionScore, AttributionScore, AttributionScore]:
    """(oracle clusters, one merged cluster, the real diarize stage) on the three-voice call."""
    stereo, _ = read_stereo(MEDIA / "stereo_diarization.wav")
    turns = [("mary", stereo[:, 0]), ("john", load_audio(MEDIA / "jfk.flac", RATE)), ("kate", stereo[:, 1])]
    pause = np.zeros(int(0.8 * RATE), np.float32)
    audio, reference, t = [], [], 0.0
    for who, samples in turns:
        audio += [samples, pause]
        reference.append((t, t + len(samples) / RATE, who))
        t += (len(samples) + len(pause)) / RATE
    path = root / "call.wav"
    write_wav(path, np.concatenate(audio))
    names = {"mary": "Mary", "john": "John", "kate": "Kate"}
    intros = {"mary": "Hello, this is Mary.", "john": "Hi Mary, it's John.", "kate": "Hi, I'm Kate."}
    video = pipeline.video("real-call", path, list(names.values()))
    pipeline.transcribe.process(video)
    lines = introduce(oracle_lines(read_json(video.paths.transcript_json).get("segments") or [], reference),
                      reference, intros)
    oracle = score_lines(pipeline.attribute(video, lines)["lines"], reference, names)
    one_cluster = score_lines(pipeline.attribute(video, merged(lines))["lines"], reference, names)
    pipeline.diarize.process(video)
    diarized = read_json(video.paths.diarization_json)["lines"]
    real = score_lines(pipeline.attribute(video, introduce(diarized, reference, intros))["lines"], reference, names)
    for label, score in (("oracle", oracle), ("one cluster", one_cluster), ("diarize stage", real)):
        print(f"  call, {label}: {_fmt(score)}", flush=True)
    return oracle, one_cluster, real


def _fmt(score: AttributionScore) -> str:
    return (f"{score.total} lines, right {score.named_right} named + {score.null_right} null, "
            f"wrong {score.wrong}, missed {score.missed}")


def _rows(label: str, score: AttributionScore, goal: str) -> list[Row]:
    return [Row("attribute", f"{label}: accuracy", round(score.accuracy, 3), "", f"{score.total} lines", goal),
            Row("attribute", f"{label}: wrong names", score.wrong, "lines", "", "0"),
            Row("attribute", f"{label}: null fraction", round(score.null_fraction, 3), "", "", "")]


def run() -> list[Row]:
    root = scratch("attribution")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    pipeline = Pipeline(root)
    rows = _rows("generated episodes", generated(pipeline, root), ">= 0.90")
    if REAL_SPEECH.exists():
        spoken, introduced, one_cluster = ami(pipeline)
        rows += _rows("AMI oracle, as spoken", spoken, "all null")
        rows += _rows("AMI oracle, introductions", introduced, "names right")
        rows += _rows("AMI one cluster, introductions", one_cluster, "0 wrong")
    if (MEDIA / "jfk.flac").exists() and (MEDIA / "stereo_diarization.wav").exists():
        oracle, one_cluster, real = call(pipeline, root)
        rows += _rows("real call, oracle", oracle, "names right")
        rows += _rows("real call, one cluster", one_cluster, "0 wrong")
        rows += _rows("real call, diarize stage", real, "no wrong name")
    return rows
