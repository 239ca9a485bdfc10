"""transcribe: speech → segments with word timestamps (``audio.wav`` + ``transcript.json``).

Reads the source file (download) and the stream facts of ``scenes.json`` (scenes), extracts the audio as
16 kHz mono PCM, transcribes it with the configured backend (faster-whisper on CPU, whisperx on GPU) with the
cast names as a decoding prompt, decodes suspicious or skipped stretches again (``v60k.backends.asr.redecode``),
trims repetitions, splits segments into lines of one speaker (``v60k.backends.asr.splitting``), drops
hallucinated lines (``v60k.backends.asr.guards``) and writes ``transcript.json`` (docs/architecture.md,
docs/speech.md). Explained skips: ``no_audio``, ``too_short``, ``language_filtered``, ``no_speech``.
"""

from __future__ import annotations

import time
import wave
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from v60k.backends.asr import ASRBackend, cast_prompt, make_asr_backend
from v60k.backends.asr.guards import (
    GuardSettings,
    apply_guards,
    pad_regions,
    speech_regions,
    trim_repetitions,
    undertranscribed_speech_s,
)
from v60k.backends.asr.metrics import speech_totals
from v60k.backends.asr.redecode import RedecodeSettings, redecode, redecoded_s
from v60k.backends.asr.splitting import SplitSettings, split_segments
from v60k.core import documents
from v60k.core.errors import MISSING_INPUT, NO_AUDIO
from v60k.core.stage import Resources, SkipVideo, Stage, StageError, StageResult, StageSettings, Video
from v60k.media.streams import extract_audio, probe

SAMPLE_RATE = 16000


class TranscribeSettings(StageSettings):
    backend: Literal["faster-whisper", "whisperx"] = "faster-whisper"
    model: str | None = Field(None, description="a model name or local directory; None: bundled tiny.en "
                                                "(faster-whisper) or large-v3 (whisperx)")
    device: str = "cpu"
    compute_type: str | None = Field(None, description="None: int8 (faster-whisper), float16 (whisperx)")
    cpu_threads: int = Field(0, ge=0, description="faster-whisper CPU threads; 0: CTranslate2's default")
    beam_size: int = Field(5, ge=1)
    batch_size: int = Field(16, ge=1, description="whisperx batched inference")
    vad_filter: bool = True
    vad_min_silence_ms: int = Field(500, ge=0)
    language: str | None = Field(None, description="force a language; None: the manifest's, else detected")
    languages: list[str] | None = Field(None, description="keep only these detected languages (others skip)")
    cast_prompt: bool = Field(True, description="the cast names as the decoder's initial prompt")
    cast_hotwords: bool = Field(False, description="the cast names as faster-whisper hotwords as well")
    prompt_fallback_s: float = Field(2.0, ge=0, description="re-decode without the cast prompt when the prompted "
                                                            "transcript leaves this much VAD speech (nearly) "
                                                            "without words; the fuller transcript is kept")
    min_audio_s: float = Field(1.0, ge=0)
    redecode: bool = Field(True, description="decode suspicious stretches (loops, low confidence) and VAD speech "
                                             "left without words again, alone and without the prompt")
    min_hole_s: float = Field(1.0, gt=0, description="VAD speech this long without a word is decoded again")
    # lines short enough for one speaker
    line_gap_s: float = Field(0.6, gt=0, description="a silence this long between words ends a line")
    max_line_s: float = Field(8.0, gt=0, description="a longer line is cut at its widest gap between words")
    # guards against hallucinated text
    keep_word_repeats: int = Field(3, ge=1, description="a word said more often back to back is trimmed to this")
    keep_phrase_repeats: int = Field(2, ge=1, description="a phrase said more often back to back is trimmed to this")
    max_no_speech_prob: float = Field(0.6, ge=0, le=1)
    max_compression_ratio: float = Field(2.4, gt=0)
    min_speech_fraction: float = Field(0.5, ge=0, le=1)
    silence_dbfs: float = -50.0
    # offline weights (whisperx; faster-whisper honours download_root / local_files_only too)
    align_model: str | None = Field(None, description="whisperx alignment model name or local dir")
    align_model_dir: str | None = Field(None, description="cache dir of the alignment models")
    download_root: str | None = Field(None, description="cache dir of the Whisper models")
    local_files_only: bool = Field(False, description="never reach the Hub (also sets HF_HUB_OFFLINE=1)")
    whisperx_vad_method: Literal["pyannote", "silero"] = "pyannote"

    def guard_settings(self) -> GuardSettings:
        return GuardSettings(max_no_speech_prob=self.max_no_speech_prob,
                             max_compression_ratio=self.max_compression_ratio,
                             min_speech_fraction=self.min_speech_fraction, silence_dbfs=self.silence_dbfs,
                             keep_word_repeats=self.keep_word_repeats, keep_phrase_repeats=self.keep_phrase_repeats)

    def split_settings(self) -> SplitSettings:
        return SplitSettings(max_word_gap_s=self.line_gap_s, max_segment_s=self.max_line_s)


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit mono WAV (what ``extract_audio`` writes) as float32 in [-1, 1]."""
    with wave.open(str(path)) as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise StageError(f"{path.name}: expected 16-bit mono PCM", "bad_audio")
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0


class Transcribe(Stage):
    name = "transcribe"
    version = "2"
    reads = ("source", "scenes")
    writes = ("audio", "transcript")
    Settings = TranscribeSettings
    resources = Resources(cpus=1)

    settings: TranscribeSettings

    def __init__(self, settings: StageSettings | None = None, context: Any = None):
        super().__init__(settings, context)
        self._backend: ASRBackend | None = None

    @property
    def backend(self) -> ASRBackend:
        if self._backend is None:
            self._backend = make_asr_backend(self.settings)
        return self._backend

    def fingerprint_extra(self) -> Any:
        return make_asr_backend(self.settings).identity()

    def worker_resources(self) -> Resources:
        return Resources.on_device(self.settings.device)

    def setup(self) -> None:
        self.backend.load()

    def stream_facts(self, video: Video) -> dict[str, Any]:
        """The scenes stage's stream facts, or a fresh probe when scenes.json is absent (scenes skipped)."""
        paths = video.paths
        if documents.Scenes.exists(paths):
            stream = documents.Scenes.load(paths).stream.model_dump(exclude_unset=True)
            if stream:
                return stream
        source = paths.source
        if source is None:
            raise StageError("no downloaded source file", MISSING_INPUT)
        return probe(source).to_dict()

    def process(self, video: Video) -> StageResult:
        paths = video.paths
        source = paths.source
        if source is None:
            raise StageError("no downloaded source file", MISSING_INPUT)
        if not self.stream_facts(video).get("has_audio"):
            raise SkipVideo("no audio stream", NO_AUDIO)
        extract_audio(source, paths.audio_wav, SAMPLE_RATE)
        audio = read_wav(paths.audio_wav)
        duration_s = len(audio) / SAMPLE_RATE
        if duration_s < self.settings.min_audio_s:
            raise SkipVideo(f"audio too short to transcribe ({duration_s:.2f} s < {self.settings.min_audio_s} s)",
                            "too_short")

        s = self.settings
        names = cast_prompt(video.characters)
        language_hint = s.language or video.language
        detected_probability = None
        if s.languages:  # decide before transcribing: a filtered video costs one detection pass only
            language, detected_probability = (language_hint, None) if language_hint else self.backend.detect_language(audio)
            if language not in s.languages:
                prob_text = f" (p={detected_probability:.2f})" if detected_probability is not None else ""
                raise SkipVideo(f"language {language}{prob_text} not in {', '.join(s.languages)}", "language_filtered")
            language_hint = language
        started = time.perf_counter()
        transcript = self.backend.transcribe(
            str(paths.audio_wav), language=language_hint,
            initial_prompt=names if s.cast_prompt else None, hotwords=names if s.cast_hotwords else None, audio=audio,
        )
        speech = speech_regions(audio, pad_ms=0)  # the speech itself; the guards allow Silero's usual margin
        regions = pad_regions(speech, 0.4, duration_s)
        fallback = False
        if transcript.prompted_with_cast and undertranscribed_speech_s(transcript, regions) >= max(s.prompt_fallback_s, 1e-9):
            plain = self.backend.transcribe(str(paths.audio_wav), language=language_hint, audio=audio)
            fallback = undertranscribed_speech_s(plain, regions) < undertranscribed_speech_s(transcript, regions)
            transcript = plain if fallback else transcript
        guards = s.guard_settings()
        transcript.redecoded = redecode(transcript, audio, self.backend, str(paths.audio_wav), speech, guards,
                                        RedecodeSettings(enabled=s.redecode, min_hole_s=s.min_hole_s))
        elapsed = time.perf_counter() - started
        if detected_probability is not None:
            transcript.language_probability = detected_probability
        language, probability = transcript.language, transcript.language_probability

        trim_repetitions(transcript, guards)
        transcript.segments = split_segments(transcript.segments, speech, s.split_settings())
        apply_guards(transcript, audio, guards, regions)
        documents.Transcript.model_validate(transcript.to_document()).save(paths, exclude_unset=True)
        totals = speech_totals(speech, [(w.start_s, w.end_s) for x in transcript.segments for w in x.words],
                               [(d["start_s"], d["end_s"]) for d in transcript.dropped])
        totals["redecoded_s"] = round(redecoded_s(transcript.redecoded), 3)
        if not transcript.segments:
            reasons = sorted({d["reason"] for d in transcript.dropped})
            detail = f"; dropped as hallucinated: {', '.join(reasons)}" if reasons else ""
            raise SkipVideo(f"no speech{detail}", "no_speech")
        return StageResult(
            outputs={"audio": paths.audio_wav.name, "transcript": paths.transcript_json.name},
            metrics={"language": language, "language_probability": probability, "audio_s": round(duration_s, 3),
                     "segments": len(transcript.segments), "words": sum(len(x.words) for x in transcript.segments),
                     "dropped": len(transcript.dropped), "rtf": round(elapsed / max(duration_s, 1e-9), 4),
                     "prompted_with_cast": transcript.prompted_with_cast, "cast_prompt_fallback": fallback,
                     "redecoded": len(transcript.redecoded), "totals": totals},
        )
