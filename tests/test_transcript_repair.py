"""Transcripts keep real speech: repetition trimming, one-speaker lines, re-decoding of suspicious or skipped
stretches (real faster-whisper tiny.en on a generated espeak-ng episode), and the coverage measure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from v60k.backends.asr import Segment, Transcript, Word
from v60k.backends.asr.faster_whisper import FasterWhisperBackend
from v60k.backends.asr.guards import apply_guards, speech_regions, trim_repeats, trim_repetitions
from v60k.backends.asr.metrics import normalize_words, speech_coverage, speech_totals, word_error_rate
from v60k.backends.asr.redecode import redecode
from v60k.backends.asr.splitting import SplitSettings, split_segment, split_segments
from v60k.core.executors.base import run_one
from v60k.core.stage import Video
from v60k.core.workdir import read_json, write_json
from v60k.media.streams import extract_audio, probe
from v60k.stages.transcribe import Transcribe, TranscribeSettings, read_wav
from v60k.testing.sample_episodes import build_episode, two_speaker_spec


def _words(tokens: list[str] | str, start: float = 0.0, step: float = 0.4) -> list[Word]:
    """Back-to-back words of ``step`` seconds each (a string: its space-separated words)."""
    tokens = tokens.split() if isinstance(tokens, str) else tokens
    return [Word(t, start + i * step, start + (i + 1) * step, 0.9) for i, t in enumerate(tokens)]


def _texts(words: list[Word]) -> list[str]:
    return [w.text for w in words]


# --- repetition trimming (crafted words) ---------------------------------------------------------------------

def test_trim_cuts_loops_to_plausible_repeats() -> None:
    words = _words("Hello. Hello. Hello. Hello. Hello. Oh, hello. How are you?")
    kept, removed = trim_repeats(words)
    assert _texts(kept) == ["Hello.", "Hello.", "Hello.", "Oh,", "hello.", "How", "are", "you?"]
    assert len(removed) == 1 and (removed[0].phrase, removed[0].count, removed[0].kept) == ("hello", 5, 3)
    assert removed[0].words == words[3:5]  # the surplus copies, with their times
    kept, removed = trim_repeats(_words("thank you thank you thank you thank you so much"))
    assert _texts(kept) == ["thank", "you", "thank", "you", "so", "much"] and removed[0].count == 4
    kept, removed = trim_repeats(_words("I will go home now " * 3 + "then"))
    assert " ".join(_texts(kept)) == "I will go home now I will go home now then"


@pytest.mark.parametrize("text", ["No, no, no, I did not say that.", "very very good", "bye bye then",
                                  "Hello? Hello? Oh, hello.", "that that is what I said"])
def test_trim_leaves_ordinary_speech_alone(text: str) -> None:
    words = _words(text)
    kept, removed = trim_repeats(words)
    assert kept == words and removed == []


def test_a_long_looped_segment_is_trimmed_and_kept_not_dropped(media: dict[str, Any]) -> None:
    """A 20 s+ segment over real speech starting with a loop: the surplus words go, the segment stays."""
    audio = read_wav(media["wav"])
    lines = media["truth"]["lines"]
    words: list[Word] = []
    for i, line in enumerate(lines[:4]):
        tokens = (["Hello."] * 6 if i == 0 else []) + line["text"].split()
        step = (line["end_s"] - line["start_s"]) / len(tokens)
        words += _words(tokens, line["start_s"], step)
    text = " ".join(_texts(words))
    segment = Segment(words[0].start_s, words[-1].end_s, text, words, avg_logprob=-0.4, no_speech_prob=0.05,
                      compression_ratio=2.6)
    assert segment.end_s - segment.start_s > 15
    transcript = Transcript("faster-whisper", "tiny.en", "en", 1.0, len(audio) / 16000, segments=[segment])
    speech = speech_regions(audio, pad_ms=0)
    trim_repetitions(transcript)
    transcript.segments = split_segments(transcript.segments, speech)
    apply_guards(transcript, audio)
    kept = [w for s in transcript.segments for w in s.words]
    assert len(kept) == len(words) - 3
    assert [d["reason"] for d in transcript.dropped] == ["repetition"]
    assert transcript.dropped[0]["text"] == "Hello. Hello. Hello."
    assert len(transcript.segments) >= 4  # split at the pauses between the lines
    totals = speech_totals(speech, [(w.start_s, w.end_s) for w in kept],
                           [(d["start_s"], d["end_s"]) for d in transcript.dropped])
    assert totals["dropped_speech_s"] < 0.5 * (lines[0]["end_s"] - lines[0]["start_s"])


# --- lines short enough for one speaker ----------------------------------------------------------------------

def test_split_at_word_gaps_vad_pauses_and_max_length() -> None:
    first = _words(["Hi", "there."], 0.0, 0.4)  # ends at 0.8
    second = _words(["How", "are", "you?"], 1.8, 0.3)  # after a 1.0 s silence; ends at 2.7
    third = _words(["Fine."], 2.8, 0.4)  # 0.1 s later, but a VAD pause lies between: another voice
    long = _words([f"w{i}" for i in range(30)], 3.9, 0.45)  # after 0.7 s; then 13.5 s without a gap...
    long[15:] = [Word(w.text, w.start_s + 0.3, w.end_s + 0.3, w.probability) for w in long[15:]]  # ...but one
    words = first + second + third + long
    segment = Segment(0.0, words[-1].end_s, " ".join(_texts(words)), words, avg_logprob=-0.3, no_speech_prob=0.1,
                      compression_ratio=1.4)
    pauses = [(2.65, 3.25)]
    lines = split_segment(segment, pauses, SplitSettings(max_word_gap_s=0.6, min_pause_s=0.5, max_segment_s=8.0))
    assert [len(line.words) for line in lines] == [2, 3, 1, 15, 15]
    assert [w for line in lines for w in line.words] == words  # nothing lost, order kept
    for line in lines:
        assert line.end_s - line.start_s <= 8.0
        assert (line.start_s, line.end_s) == (line.words[0].start_s, line.words[-1].end_s)
        assert line.text == " ".join(_texts(line.words)) and line.avg_logprob == -0.3
    untimed = Segment(0.0, 20.0, "no word times here", [])
    assert split_segment(untimed, pauses) == [untimed]


# --- the coverage measure -------------------------------------------------------------------------------------

def test_speech_coverage_and_totals() -> None:
    speech = [(0.0, 4.0), (4.0, 10.0)]  # touching regions count once
    words = [(0.0, 4.0), (6.0, 10.0)]
    assert speech_coverage(speech, words, tolerance_s=0.0) == pytest.approx(0.8)
    assert speech_coverage(speech, words, tolerance_s=0.2) == pytest.approx(0.84)
    assert speech_coverage([], words) == 1.0 and speech_coverage(speech, []) == 0.0
    totals = speech_totals(speech, words, dropped=[(3.0, 6.5), (20.0, 21.0)], tolerance_s=0.2)
    assert totals == {"vad_speech_s": 10.0, "kept_speech_s": pytest.approx(8.4), "dropped_speech_s": pytest.approx(1.6)}


# --- re-decoding with the real model ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("repair-media")
    spec = two_speaker_spec("repair")
    spec.lines = spec.lines[:4]
    episode = build_episode(spec, root)
    return {"root": root, "episode": episode, "wav": extract_audio(episode.path, root / "episode.wav"),
            "truth": episode.truth}


@pytest.fixture(scope="module")
def backend() -> FasterWhisperBackend:
    model = FasterWhisperBackend(cpu_threads=2)
    model.load()
    return model


def _recording(backend: FasterWhisperBackend, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record each ``transcribe`` call's prompt and audio length, calling the real model."""
    calls: list[dict[str, Any]] = []
    real = backend.transcribe

    def transcribe(audio_path: str, language: str | None = None, initial_prompt: str | None = None,
                   hotwords: str | None = None, audio: Any = None) -> Transcript:
        calls.append({"prompt": initial_prompt, "seconds": None if audio is None else len(audio) / 16000})
        return real(audio_path, language=language, initial_prompt=initial_prompt, hotwords=hotwords, audio=audio)

    monkeypatch.setattr(backend, "transcribe", transcribe)
    return calls


def test_a_suspicious_stretch_is_decoded_again_alone(media: dict[str, Any], backend: FasterWhisperBackend,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    audio = read_wav(media["wav"])
    first, second = media["truth"]["lines"][:2]
    loop = _words(["Hello."] * 6, first["start_s"], (first["end_s"] - first["start_s"]) / 6)
    looped = Segment(first["start_s"], first["end_s"], " ".join(_texts(loop)), loop, avg_logprob=-1.3,
                     no_speech_prob=0.1, compression_ratio=3.0)
    good_words = _words(second["text"].split(), second["start_s"],
                        (second["end_s"] - second["start_s"]) / len(second["text"].split()))
    good = Segment(second["start_s"], second["end_s"], second["text"], good_words, avg_logprob=-0.2,
                   no_speech_prob=0.05, compression_ratio=1.3)
    transcript = Transcript("faster-whisper", "tiny.en", "en", 1.0, len(audio) / 16000, segments=[looped, good])
    speech = [(first["start_s"], first["end_s"]), (second["start_s"], second["end_s"])]
    calls = _recording(backend, monkeypatch)
    records = redecode(transcript, audio, backend, str(media["wav"]), speech)
    assert len(calls) == 1 and calls[0]["prompt"] is None
    assert calls[0]["seconds"] == pytest.approx(first["end_s"] - first["start_s"] + 0.6, abs=0.1)  # the stretch
    assert len(records) == 1 and records[0]["outcome"] == "replaced"
    assert set(records[0]["reason"].split(", ")) >= {"repetition", "avg_logprob", "compression_ratio"}
    assert transcript.segments[-1] is good
    heard = [w for s in transcript.segments[:-1] for w in s.words]
    assert all(first["start_s"] - 0.31 <= w.start_s <= w.end_s <= first["end_s"] + 0.31 for w in heard)
    assert word_error_rate(first["text"], " ".join(_texts(heard))) <= 0.4, _texts(heard)


def test_speech_left_without_words_is_decoded_again(media: dict[str, Any], backend: FasterWhisperBackend,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    audio = read_wav(media["wav"])
    first, second = media["truth"]["lines"][:2]
    words = _words(second["text"].split(), second["start_s"],
                   (second["end_s"] - second["start_s"]) / len(second["text"].split()))
    transcript = Transcript("faster-whisper", "tiny.en", "en", 1.0, len(audio) / 16000,
                            segments=[Segment(second["start_s"], second["end_s"], second["text"], words,
                                              avg_logprob=-0.2, no_speech_prob=0.05, compression_ratio=1.3)])
    speech = [(first["start_s"], first["end_s"]), (second["start_s"], second["end_s"])]
    calls = _recording(backend, monkeypatch)
    records = redecode(transcript, audio, backend, str(media["wav"]), speech)
    assert len(calls) == 1 and [r["reason"] for r in records] == ["no_words"]
    added = [w for s in transcript.segments if s.start_s < first["end_s"] for w in s.words]
    assert records[0]["outcome"] == f"added {len(added)} words"
    assert len(added) >= 0.6 * len(first["text"].split())
    assert word_error_rate(first["text"], " ".join(_texts(added))) <= 0.4, _texts(added)


def test_stage_replaces_a_decoded_loop_and_counts_the_seconds(media: dict[str, Any], backend: FasterWhisperBackend,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first decoding loops on the first line (as tiny.en does on real calls); the stage decodes that
    stretch again with the real model and keeps the line."""
    real = backend.transcribe
    first = media["truth"]["lines"][0]

    def looping_once(audio_path: str, language: str | None = None, initial_prompt: str | None = None,
                     hotwords: str | None = None, audio: Any = None) -> Transcript:
        transcript = real(audio_path, language=language, initial_prompt=initial_prompt, hotwords=hotwords,
                          audio=audio)
        if audio is None or len(audio) / 16000 >= 0.9 * media["truth"]["duration_s"]:  # a whole-video decoding
            segment = transcript.segments[0]
            loop = _words(["Hello."] * 6, segment.start_s, (segment.end_s - segment.start_s) / 6)
            transcript.segments[0] = Segment(segment.start_s, segment.end_s, " ".join(_texts(loop)), loop,
                                             avg_logprob=-1.2, no_speech_prob=0.1, compression_ratio=2.9)
        return transcript

    monkeypatch.setattr(backend, "transcribe", looping_once)
    stage = Transcribe(TranscribeSettings(cpu_threads=2))
    stage._backend = backend
    video_dir = tmp_path / "videos" / "ep"
    video_dir.mkdir(parents=True)
    source = video_dir / f"source{media['episode'].path.suffix}"
    source.write_bytes(media["episode"].path.read_bytes())
    write_json(video_dir / "scenes.json", {"stream": probe(source).to_dict(), "scenes": []})
    outcome = run_one(stage, Video(video_id="ep", source_url="x", dir=video_dir,
                                   characters=media["truth"]["cast"]))
    assert outcome.state == "done", outcome.error_message
    doc = read_json(video_dir / "transcript.json")
    assert any(r["outcome"] == "replaced" for r in doc["redecoded"]), (doc["redecoded"], doc["segments"][:2])
    text = " ".join(s["text"] for s in doc["segments"])
    assert "hello" not in normalize_words(text)
    heard = [w for s in doc["segments"] for w in s["words"] if w["start_s"] < first["end_s"]]
    assert len(heard) >= 0.6 * len(first["text"].split())
    totals = outcome.metrics["totals"]
    assert totals["redecoded_s"] > 0 and totals["kept_speech_s"] >= 0.9 * totals["vad_speech_s"]


def test_three_short_lines_with_the_same_words_are_kept_and_a_fourth_is_dropped() -> None:
    """A real greeting ("Hello?" "Hello?" "Hello.") is three lines after splitting: all kept; a fourth copy in a
    row is a loop."""
    import numpy as np

    from v60k.backends.asr import Segment, Transcript, Word
    from v60k.backends.asr.guards import GuardSettings, apply_guards

    segments = []
    for i, text in enumerate(["Hello?", "Hello?", "Hello.", "Hello."]):
        start = 1.0 + 1.5 * i
        segments.append(Segment(start_s=start, end_s=start + 0.6, text=text, avg_logprob=-0.2, no_speech_prob=0.01,
                                words=[Word(text, start, start + 0.6, 0.95)]))
    transcript = Transcript(backend="test", model="none", language="en", language_probability=1.0, duration_s=8.0,
                            segments=segments)
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal(16000 * 8)).astype(np.float32)  # loud everywhere: no silence guard
    kept = apply_guards(transcript, audio, GuardSettings(), regions=[(0.0, 8.0)])
    assert [s.text for s in kept.segments] == ["Hello?", "Hello?", "Hello."]
    assert [d["reason"] for d in kept.dropped] == ["repetition"]


def test_a_line_the_decoder_gave_no_duration_gets_a_short_one() -> None:
    """faster-whisper can time a lone word start == end; as its own line it would be an utterance that ends
    where it starts (the shard validator refuses those)."""
    from v60k.backends.asr import Segment, Word
    from v60k.backends.asr.splitting import split_segments

    words = [Word("Go", 1.0, 1.3, 0.9), Word("to", 1.35, 1.5, 0.9), Word("town.", 17.85, 17.85, 0.9)]
    segment = Segment(start_s=1.0, end_s=17.85, text="Go to town.", words=words)
    lines = split_segments([segment], speech=[(0.9, 1.6), (17.7, 18.0)])
    assert [line.text.strip() for line in lines] == ["Go to", "town."]
    assert all(line.end_s > line.start_s for line in lines)
    assert all(w.end_s >= w.start_s for line in lines for w in line.words)
