"""diarize + attribute on generated episodes (2 and 3 named speakers, and one uncast speaker never named).

Episodes: two and three named speakers, an uncast guest, and the two-speaker dialogue over a music bed.
Figures: the diarize stage's real-time factor (embeddings backend, model loaded once, 1 torch thread, best
of 2 runs per episode, audio decoding included; goal ≤ 0.06), cluster purity (goal ≥ 0.95), speaker-count accuracy (goal 1.0), attribution accuracy over lines
(goal ≥ 0.90; lines of the uncast speaker count as right only when null), wrong names given (goal 0), and the
real two-speaker recording's purity against its per-channel energy when ../shared/media is present.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from bench.bench_real_speech import read_stereo
from bench.common import Row, scratch, timed
from v60k.backends.diarization import SpeakerCountHint
from v60k.backends.diarization.metrics import cluster_purity, louder_channel_reference, speaker_at
from v60k.core.stage import StageContext, Video
from v60k.core.workdir import WorkDir, read_json
from v60k.stages.attribute import Attribute
from v60k.stages.diarize import Diarize
from v60k.stages.transcribe import Transcribe
from v60k.testing.sample_episodes import (
    EpisodeSpec,
    Line,
    Speaker,
    build_episode,
    three_speaker_spec,
    two_speaker_spec,
)

STEREO = Path(__file__).resolve().parent.parent.parent / "shared" / "media" / "stereo_diarization.wav"


def uncast_guest_spec() -> EpisodeSpec:
    lines = [
        Line("Monica", "Hi Ross, did you bring the chairs for the party tonight?"),
        Line("Ross", "Yes Monica, they are in the car. I also bought two bags of ice."),
        Line("Guest", "Excuse me, the delivery truck is blocking the whole street outside."),
        Line("Monica", "Oh no. Ross, can you move the car so the truck can get through?"),
        Line("Ross", "Sure, give me a minute. I will park it behind the bakery."),
        Line("Guest", "Thank you. The driver says he will be gone in ten minutes."),
    ]
    speakers = [Speaker("Monica", "en-us+f3", 70, 165), Speaker("Ross", "en-us+m3", 30, 145),
                Speaker("Guest", "en-gb+f4", 90, 180)]
    return EpisodeSpec(name="bench-guest", speakers=speakers, lines=lines, cast=["Monica", "Ross"])


def run() -> list[Row]:
    root = scratch("diarize")
    shutil.rmtree(root, ignore_errors=True)
    workdir = WorkDir(root / "work").create()
    transcribe = Transcribe(context=StageContext(workdir))
    transcribe.setup()
    diarize = Diarize(context=StageContext(workdir))
    diarize.setup()
    attribute = Attribute(context=StageContext(workdir))
    audio_s = diarize_s = 0.0
    purities, counts_right, lines_right, lines_total, wrong_names = [], 0, 0, 0, 0
    counts: list[str] = []
    music = two_speaker_spec("bench-music")
    music.music = True  # speech over a music bed: borderline for a test, a figure here
    specs = [two_speaker_spec("bench-two"), three_speaker_spec("bench-three"), uncast_guest_spec(), music]
    prepared = []
    for spec in specs:  # build and transcribe everything first: the timings below see diarize alone
        episode = build_episode(spec, root / "media")
        video = Video(video_id=spec.name, source_url=f"file://{episode.path}", dir=workdir.video_dir(spec.name),
                      characters=list(episode.truth["cast"]))
        video.dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(episode.path, video.dir / f"source{episode.path.suffix}")
        transcribe.process(video)
        prepared.append((spec, episode, video))
    for spec, episode, video in prepared:
        seconds, _ = timed(lambda video=video: diarize.process(video), repeat=2)
        diarize_s += seconds
        audio_s += episode.truth["duration_s"]
        document = read_json(video.paths.diarization_json)
        truth_lines = episode.truth["lines"]
        purities.append(cluster_purity(document["turns"], [(t["start_s"], t["end_s"], t["speaker"]) for t in truth_lines]))
        counts_right += document["num_speakers"] == len(spec.speakers)
        counts.append(f"{spec.name.removeprefix('bench-')} {document['num_speakers']}/{len(spec.speakers)}")
        attribute.process(video)
        cast = set(episode.truth["cast"])
        for line in read_json(video.paths.lines_json)["lines"]:
            spoken_by = speaker_at(truth_lines, line["start_s"], line["end_s"])
            expected = spoken_by if spoken_by in cast else None
            lines_total += 1
            lines_right += line["character"] == expected
            wrong_names += line["character"] is not None and line["character"] != spoken_by
    rows = [
        Row("diarize", f"diarize RTF (embeddings, {os.cpu_count()} cores)", round(diarize_s / audio_s, 4), "x",
            f"{audio_s:.0f} s of audio", "<= 0.06"),
        Row("diarize", "cluster purity (mean)", round(float(np.mean(purities)), 3), "", f"{len(specs)} episodes",
            ">= 0.95"),
        Row("diarize", "speaker count accuracy", round(counts_right / len(specs), 3), "", ", ".join(counts),
            "1.0"),
        Row("diarize", "attribution accuracy (lines)", round(lines_right / lines_total, 3), "",
            f"{lines_total} lines", ">= 0.90"),
        Row("diarize", "wrong names given", float(wrong_names), "lines", "", "0"),
    ]
    if STEREO.exists():
        stereo, rate = read_stereo(STEREO)
        result = diarize.backend.diarize(stereo.mean(axis=1), rate, SpeakerCountHint())
        reference = louder_channel_reference(stereo, rate)
        rows.append(Row("diarize", "real stereo recording purity", round(cluster_purity(
            [t.to_dict() for t in result.turns], reference), 3), "", f"{len(result.speakers)} speakers found",
            "2 speakers; overlapped"))
    return rows
