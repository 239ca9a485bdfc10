"""The whisperx adapter against a stand-in ``whisperx`` module with whisperx 3.8.x's call signatures.

whisperx needs a CUDA torch and Hub weights, so the library itself is replaced at its module boundary (as
whisperX's own tests mock the alignment model): ``load_model`` / ``FasterWhisperPipeline.transcribe`` /
``load_align_model`` / ``align`` / ``load_audio`` keep their real parameters, so a wrong keyword fails here,
and return the real result shapes, including aligned words without times (numerals). The audio, the
guards and the stage around it are real. ``make gpu-smoke`` runs the real library (tests/gpu/).
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from faster_whisper.transcribe import TranscriptionOptions

from v60k.backends.asr.whisperx import WhisperXBackend, words_with_times
from v60k.core.executors.base import run_one
from v60k.core.stage import StageError, Video
from v60k.core.workdir import read_json, write_json
from v60k.media.streams import load_audio as decode_audio
from v60k.media.streams import probe
from v60k.stages.transcribe import Transcribe, TranscribeSettings
from v60k.testing.sample_episodes import EpisodeSpec, Line, build_episode

_DEFAULT_ASR_OPTIONS = {  # whisperx.asr.load_model's defaults, as it builds TranscriptionOptions
    "beam_size": 5, "best_of": 5, "patience": 1, "length_penalty": 1, "repetition_penalty": 1,
    "no_repeat_ngram_size": 0, "temperatures": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
    "compression_ratio_threshold": 2.4, "log_prob_threshold": -1.0, "no_speech_threshold": 0.6,
    "condition_on_previous_text": False, "prompt_reset_on_temperature": 0.5, "initial_prompt": None,
    "prefix": None, "suppress_blank": True, "suppress_tokens": [-1], "without_timestamps": True,
    "max_initial_timestamp": 0.0, "word_timestamps": False, "prepend_punctuations": "\"'“¿([{-",
    "append_punctuations": "\"'.。,，!！?？:：”)]}、", "multilingual": False, "max_new_tokens": None,
    "clip_timestamps": None, "hallucination_silence_threshold": None, "hotwords": None,
}


def fake_whisperx(calls: list[tuple[str, dict[str, Any]]], segments: list[dict[str, Any]],
                  aligned: list[dict[str, Any]], language: str = "en") -> types.ModuleType:
    """A ``whisperx`` module whose functions have 3.8.x's signatures and record how they were called."""
    module = types.ModuleType("whisperx")

    class FasterWhisperPipeline:
        def __init__(self, options: TranscriptionOptions):
            self.options = options

        def transcribe(self, audio, batch_size=None, num_workers=0, language=None, task=None, chunk_size=30,
                       print_progress=False, combined_progress=False, verbose=False):
            calls.append(("transcribe", {"samples": len(audio), "batch_size": batch_size, "language": language,
                                         "initial_prompt": self.options.initial_prompt,
                                         "hotwords": self.options.hotwords}))
            return {"segments": [dict(s) for s in segments], "language": language or fake_language}

        def detect_language(self, audio):
            calls.append(("detect_language", {"samples": len(audio)}))
            return fake_language

    fake_language = language

    def load_model(whisper_arch, device, device_index=0, compute_type="float16", asr_options=None, language=None,
                   vad_model=None, vad_method="pyannote", vad_options=None, model=None, task="transcribe",
                   download_root=None, local_files_only=False, threads=4):
        calls.append(("load_model", {"whisper_arch": whisper_arch, "device": device, "compute_type": compute_type,
                                     "asr_options": asr_options, "vad_method": vad_method,
                                     "download_root": download_root, "local_files_only": local_files_only}))
        return FasterWhisperPipeline(TranscriptionOptions(**{**_DEFAULT_ASR_OPTIONS, **(asr_options or {})}))

    def load_align_model(language_code, device, model_name=None, model_dir=None, model_cache_only=False):
        calls.append(("load_align_model", {"language_code": language_code, "device": device,
                                           "model_name": model_name, "model_dir": model_dir,
                                           "model_cache_only": model_cache_only}))
        if language_code not in ("en", "de"):
            raise ValueError(f"No default align-model for language: {language_code}")
        return object(), {"language": language_code, "dictionary": {}, "type": "torchaudio"}

    def align(transcript, model, align_model_metadata, audio, device, interpolate_method="nearest",
              return_char_alignments=False, print_progress=False, combined_progress=False):
        calls.append(("align", {"segments": len(transcript), "device": device,
                                "return_char_alignments": return_char_alignments}))
        return {"segments": aligned, "word_segments": [w for s in aligned for w in s["words"]]}

    def load_audio(file, sr=16000):
        calls.append(("load_audio", {"file": file, "sr": sr}))
        return decode_audio(file, sr)

    module.load_model = load_model
    module.load_align_model = load_align_model
    module.align = align
    module.load_audio = load_audio
    return module


@pytest.fixture(scope="module")
def episode(tmp_path_factory: pytest.TempPathFactory) -> Any:
    spec = EpisodeSpec(name="numbers", lines=[Line("Ross", "I counted 3 dinosaurs today."),
                                              Line("Ross", "Then I went home.")])
    from v60k.testing.sample_episodes import ROSS

    spec.speakers = [ROSS]
    return build_episode(spec, tmp_path_factory.mktemp("whisperx-media"))


def _whisperx_output(truth: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What whisperx returns for the episode: VAD-chunk segments, then aligned ones (the numeral untimed),
    plus an invented segment in the silent tail."""
    first, second = truth["lines"]
    tail = truth["duration_s"] - 0.6
    segments = [{"text": " I counted 3 dinosaurs today. Then I went home.", "start": first["start_s"],
                 "end": second["end_s"], "avg_logprob": -0.2},
                {"text": " Thanks for watching!", "start": tail - 0.5, "end": tail, "avg_logprob": -0.9}]
    a, b = first["start_s"], first["end_s"]
    step = (b - a) / 5
    aligned = [
        {"start": a, "end": b, "text": "I counted 3 dinosaurs today.", "avg_logprob": -0.2, "chars": None,
         "words": [{"word": "I", "start": a, "end": a + step, "score": 0.9},
                   {"word": "counted", "start": a + step, "end": a + 2 * step, "score": 0.8},
                   {"word": "3"},  # no character of "3" is in the alignment dictionary: no times, no score
                   {"word": "dinosaurs", "start": a + 3 * step, "end": a + 4 * step, "score": 0.95},
                   {"word": "today.", "start": a + 4 * step, "end": b, "score": 0.9}]},
        {"start": second["start_s"], "end": second["end_s"], "text": "Then I went home.", "avg_logprob": -0.2,
         "chars": None, "words": [{"word": w, "start": second["start_s"] + i * 0.3,
                                   "end": second["start_s"] + i * 0.3 + 0.25, "score": 0.9}
                                  for i, w in enumerate(["Then", "I", "went", "home."])]},
        {"start": tail - 0.5, "end": tail, "text": "Thanks for watching!", "avg_logprob": -0.9, "chars": None,
         "words": [{"word": "Thanks", "start": tail - 0.5, "end": tail - 0.3, "score": 0.4},
                   {"word": "for", "start": tail - 0.3, "end": tail - 0.2, "score": 0.4},
                   {"word": "watching!", "start": tail - 0.2, "end": tail, "score": 0.4}]},
    ]
    return segments, aligned


def _install(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType) -> None:
    monkeypatch.setitem(sys.modules, "whisperx", module)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def test_words_without_times_share_the_gap_between_their_neighbours() -> None:
    words = words_with_times([{"word": "in", "start": 1.0, "end": 1.2, "score": 0.9}, {"word": "1999"},
                              {"word": "%"}, {"word": "ok", "start": 2.0, "end": 2.2, "score": 0.8},
                              {"word": "42", "start": float("nan"), "end": float("nan")}], 0.5, 3.0)
    assert [(w.text, round(w.start_s, 3), round(w.end_s, 3), w.probability) for w in words] == [
        ("in", 1.0, 1.2, 0.9), ("1999", 1.2, 1.6, None), ("%", 1.6, 2.0, None), ("ok", 2.0, 2.2, 0.8),
        ("42", 2.2, 3.0, None)]


def test_stage_with_whisperx_calls_it_right_and_writes_the_transcript(
        episode: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    segments, aligned = _whisperx_output(episode.truth)
    _install(monkeypatch, fake_whisperx(calls, segments, aligned))
    settings = TranscribeSettings(backend="whisperx", model="/models/faster-whisper-large-v3", device="cuda",
                                  batch_size=8, align_model="WAV2VEC2_ASR_BASE_960H", align_model_dir="/models/align",
                                  download_root="/models/whisper", local_files_only=True)
    stage = Transcribe(settings)
    stage.setup()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    videos = []
    for video_id in ("v1", "v2"):
        video_dir = tmp_path / video_id
        video_dir.mkdir()
        (video_dir / "source.mp4").write_bytes(episode.path.read_bytes())
        write_json(video_dir / "scenes.json", {"stream": probe(video_dir / "source.mp4").to_dict()})
        videos.append(Video(video_id=video_id, source_url="x", dir=video_dir, characters=["Ross", "Monica"]))
        outcome = run_one(stage, videos[-1])
        assert outcome.state == "done", outcome.error_message

    names = [name for name, _ in calls]
    assert names.count("load_model") == 1 and names.count("load_align_model") == 1  # once per worker / language
    assert names.count("transcribe") == 2 and names.count("align") == 2
    load = dict(calls[names.index("load_model")][1])
    assert load == {"whisper_arch": "/models/faster-whisper-large-v3", "device": "cuda", "compute_type": "float16",
                    "asr_options": {"beam_size": 5, "condition_on_previous_text": False}, "vad_method": "pyannote",
                    "download_root": "/models/whisper", "local_files_only": True}
    assert calls[names.index("load_align_model")][1] == {
        "language_code": "en", "device": "cuda", "model_name": "WAV2VEC2_ASR_BASE_960H",
        "model_dir": "/models/align", "model_cache_only": True}
    transcribe = calls[names.index("transcribe")][1]
    assert transcribe["batch_size"] == 8 and transcribe["language"] is None
    assert transcribe["initial_prompt"] == "Ross, Monica." and transcribe["hotwords"] is None
    assert transcribe["samples"] == pytest.approx(episode.truth["duration_s"] * 16000, abs=1600)
    assert calls[names.index("align")][1] == {"segments": 2, "device": "cuda", "return_char_alignments": False}

    doc = read_json(videos[0].paths.transcript_json)
    assert (doc["backend"], doc["model"], doc["language"], doc["language_probability"]) == (
        "whisperx", "faster-whisper-large-v3", "en", None)
    assert [s["text"] for s in doc["segments"]] == ["I counted 3 dinosaurs today.", "Then I went home."]
    words = doc["segments"][0]["words"]
    assert [w["text"] for w in words] == ["I", "counted", "3", "dinosaurs", "today."]
    numeral = words[2]
    assert numeral["probability"] is None
    assert numeral["start_s"] == words[1]["end_s"] and numeral["end_s"] == words[3]["start_s"]
    assert all(w["start_s"] <= w["end_s"] for s in doc["segments"] for w in s["words"])
    assert doc["segments"][0]["compression_ratio"] > 0
    # the invented line in the silent tail is removed by the shared guards
    assert [(d["text"], d["reason"]) for d in doc["dropped"]] == [("Thanks for watching!", "silence")]


def test_language_without_an_alignment_model_keeps_segment_times(
        episode: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    segments, aligned = _whisperx_output(episode.truth)
    _install(monkeypatch, fake_whisperx(calls, segments[:1], aligned, language="sw"))
    backend = WhisperXBackend(model="large-v3", device="cuda")
    transcript = backend.transcribe(str(episode.path))
    assert transcript.language == "sw" and "align" not in [name for name, _ in calls]
    assert [(s.start_s, s.end_s, s.words) for s in transcript.segments] == [
        (segments[0]["start"], segments[0]["end"], [])]
    assert "HF_HUB_OFFLINE" not in os.environ  # only local_files_only switches the Hub off


def test_language_filter_detects_before_transcribing(episode: Any, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    segments, aligned = _whisperx_output(episode.truth)
    _install(monkeypatch, fake_whisperx(calls, segments, aligned, language="de"))
    stage = Transcribe(TranscribeSettings(backend="whisperx", device="cuda", languages=["en"]))
    (tmp_path / "source.mp4").write_bytes(episode.path.read_bytes())
    outcome = run_one(stage, Video(video_id="v", source_url="x", dir=tmp_path))
    assert (outcome.state, outcome.error_class, outcome.error_message) == (
        "skipped", "language_filtered", "language de not in en")
    assert [name for name, _ in calls] == ["load_model", "detect_language"]


def test_missing_whisperx_is_a_classified_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "whisperx", None)  # import whisperx → ImportError
    with pytest.raises(StageError) as caught:
        Transcribe(TranscribeSettings(backend="whisperx")).setup()
    assert caught.value.error_class == "backend_missing" and "v60k[gpu]" in str(caught.value)
