"""attribute on a real meeting (AMI excerpt of ../shared/media/real-speech), transcribed by the real transcribe
stage (faster-whisper tiny.en), with oracle diarization from the RTTM. Skips when the media is absent."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import shared_media

from v60k.attribution.scoring import introduce, oracle_lines, score_lines
from v60k.backends.diarization.metrics import read_rttm
from v60k.core.stage import StageContext, Video
from v60k.core.workdir import WorkDir, read_json, write_json
from v60k.stages.attribute import Attribute, AttributeSettings
from v60k.stages.transcribe import Transcribe

CAST = ["Ross", "Monica", "Rachel", "Joey"]


def test_real_meeting_with_oracle_speakers(tmp_path: Path) -> None:
    rttm = shared_media("real-speech/ami-train.rttm")
    source = shared_media("real-speech/ami-trn06.flac")
    reference = read_rttm(rttm)["trn06"]
    workdir = WorkDir(tmp_path / "work").create()
    video = Video(video_id="trn06", source_url=f"file://{source}", dir=workdir.video_dir("trn06"), characters=CAST)
    video.dir.mkdir(parents=True)
    shutil.copy(source, video.dir / "source.flac")
    transcribe = Transcribe(context=StageContext(workdir))
    transcribe.setup()
    transcribe.process(video)
    lines = oracle_lines(read_json(video.paths.transcript_json)["segments"], reference)
    speakers = sorted({ln["speaker"] for ln in lines if ln["speaker"]})
    assert len(lines) >= 3 and len(speakers) >= 2

    def attribute(diarized: list[dict]) -> dict:
        names = sorted({str(ln["speaker"]) for ln in diarized if ln["speaker"]})
        write_json(video.paths.diarization_json, {"backend": "oracle", "num_speakers": len(names), "lines": diarized,
                                                  "turns": [], "speakers": {s: {"embedding": None} for s in names}})
        Attribute(AttributeSettings(voice_bank=False), StageContext(workdir)).process(video)
        return read_json(video.paths.lines_json)

    # as spoken: nobody of the cast is named in a meeting, so nobody gets a name
    assert all(ln["character"] is None for ln in attribute(lines)["lines"])
    # each speaker introduces themself in their first line: names only where that speaker talks
    names = dict(zip(speakers, CAST, strict=False))
    introduced = introduce(lines, reference, {who: f"I'm {name}." for who, name in names.items()})
    document = attribute(introduced)
    assert score_lines(document["lines"], reference, names).wrong == 0
    assert any(ln["character"] for ln in document["lines"])
    # every speaker merged into one cluster: two introductions in one cluster, so nobody is named
    document = attribute([{**ln, "speaker": "SPEAKER_00"} for ln in introduced])
    assert document["speakers"]["SPEAKER_00"]["status"] == "conflict"
    assert all(ln["character"] is None for ln in document["lines"])
