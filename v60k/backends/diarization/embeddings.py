"""Offline CPU diarization: Silero speech regions → resemblyzer embeddings of overlapping windows →
average-linkage clustering cut at a cosine distance → frame-level resegmentation to the speaker centroids →
a second speaker where pyannote's segmentation model hears two at once (``overlap.py``).

The speaker count comes from the data: the dendrogram is cut where clusters are on average more than
``cluster_distance`` (cosine) apart, and clusters of fewer than ``min_speaker_windows`` windows (a cough, a
laugh, a word) join the nearest big one. ``num`` fixes the count; ``min``/``max`` bound it; a cast larger than
the count found allows the closer cut ``cast_hint_distance`` when that stays within the cast size. Then every 0.1 s
of speech takes the speaker whose centroid its covering windows resemble most, so turns change at the
right place rather than at window edges. Where the segmentation model hears overlapped speech, the runner-up
speaker of those frames speaks too (``overlap_detector: margin`` instead guesses overlap from scores that tie
next to a change of speaker; it is the fallback when the segmentation model is not installed).
docs/diarization.md has the figures behind the defaults.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

import numpy as np

from v60k.backends.diarization import DiarizationResult, SpeakerCountHint, Turn, speaker_label
from v60k.backends.diarization.overlap import MODEL_NAME as SEGMENTATION_MODEL
from v60k.backends.diarization.overlap import OverlapDetector, missing_parts

SAMPLE_RATE = 16000
MEL_HOP_S = 0.01  # resemblyzer: 10 ms mel frames
MAX_WINDOWS = 3000  # long films get a longer hop: the clustering's distance matrix stays ~36 MB
BLOCK_S = 120.0  # the mel spectrogram is computed block by block: a feature film never needs GBs at once
ENCODER_BATCH = 256
MIN_WINDOW_FRAMES = 50  # a shorter piece of speech says little about its speaker


class EmbeddingDiarizer:
    """The ``embeddings`` backend (see the module docstring)."""

    name = "embeddings"

    def __init__(
        self,
        vad_threshold: float = 0.2,
        min_silence_s: float = 0.1,
        min_speech_s: float = 0.15,
        speech_pad_s: float = 0.1,
        window_s: float = 1.5,
        hop_s: float = 0.75,
        cluster_distance: float = 0.35,
        cast_hint_distance: float = 0.30,
        min_speaker_windows: int = 3,
        frame_s: float = 0.1,
        overlap_margin: float = 0.1,
        overlap_detector: str = "segmentation",
        max_speakers: int = 8,
        threads: int = 1,
    ):
        self.vad_threshold = vad_threshold
        self.min_silence_s = min_silence_s
        self.min_speech_s = min_speech_s
        self.speech_pad_s = speech_pad_s
        self.window_frames = int(round(window_s / MEL_HOP_S))
        self.hop_s = hop_s
        self.cluster_distance = cluster_distance
        self.cast_hint_distance = cast_hint_distance
        self.min_speaker_windows = min_speaker_windows
        self.frame_s = frame_s
        self.overlap_margin = overlap_margin
        if overlap_detector not in ("segmentation", "margin", "none"):
            raise ValueError(f"overlap_detector must be segmentation, margin or none, not {overlap_detector!r}")
        missing = missing_parts() if overlap_detector == "segmentation" else []
        self.overlap_detector = "margin" if missing else overlap_detector
        self.overlap_note = f"segmentation model not installed (missing {', '.join(missing)}): margin" if missing else ""
        self._overlap: OverlapDetector | None = None
        self.max_speakers = max_speakers
        self.threads = threads
        self._encoder: Any = None

    # ---- models -------------------------------------------------------------------------------
    def load(self) -> None:
        if self._encoder is not None:
            return
        import torch
        from resemblyzer import VoiceEncoder

        torch.set_num_threads(max(1, self.threads))
        self._encoder = VoiceEncoder("cpu", verbose=False)
        # the first mel spectrogram compiles librosa's kernels and Silero loads its ONNX model: pay it here
        warm = np.random.default_rng(0).normal(0, 0.05, SAMPLE_RATE * 2).astype(np.float32)
        self._embed_windows(self._mel(warm), [(0, self.window_frames)])
        speech_regions(warm, self.vad_threshold)
        if self.overlap_detector == "segmentation":
            self._overlap = OverlapDetector()
            self._overlap.load()

    def identity(self) -> dict[str, Any]:
        overlap = SEGMENTATION_MODEL if self.overlap_detector == "segmentation" else self.overlap_detector
        return {"encoder": "resemblyzer-0.1.4 bundled VoiceEncoder", "vad": "silero (faster-whisper)",
                "overlap": overlap, "algorithm": "5"}

    # ---- the pipeline -------------------------------------------------------------------------
    def diarize(self, audio: np.ndarray, sample_rate: int, hint: SpeakerCountHint,
                speech_spans: list[tuple[float, float]] | None = None) -> DiarizationResult:
        """Turns for ``audio``. ``speech_spans`` (the transcript's words) are not used to cut speech: a small
        ASR model leaves much real speech without words, and Silero does not take music for speech."""
        self.load()
        audio = np.asarray(audio, dtype=np.float32)
        if sample_rate != SAMPLE_RATE:
            import librosa

            audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=SAMPLE_RATE).astype(np.float32)
        regions = speech_regions(audio, self.vad_threshold, self.min_silence_s, self.min_speech_s, self.speech_pad_s)
        speech_s = sum(b - a for a, b in regions)
        details: dict[str, Any] = {"speech_s": round(speech_s, 3), "overlap_detector": self.overlap_detector}
        if self.overlap_note:
            details["overlap_note"] = self.overlap_note
        if not regions:
            return DiarizationResult([], {}, self.name, "resemblyzer", {**details, "count_rule": "no_speech"})
        mel = self._mel(audio)
        hop_frames = max(1, int(round(max(self.hop_s, speech_s / MAX_WINDOWS) / MEL_HOP_S)))
        windows = speech_windows(regions, self.window_frames, hop_frames, len(mel))
        embeddings = self._embed_windows(mel, windows)
        labels, rule = self._cluster(embeddings, hint)
        centroids = _centroids(embeddings, labels)
        centres_s = np.array([start + size / 2 for start, size in windows]) * MEL_HOP_S
        spans = self._overlap.spans(audio) if self._overlap is not None and len(centroids) > 1 else None
        margin = self.overlap_margin if self.overlap_detector == "margin" else 0.0
        turns, overlap = resegment(regions, centres_s, self.window_frames * MEL_HOP_S, embeddings @ centroids.T,
                                   self.frame_s, margin, overlap_spans=spans)
        used = sorted({int(t.speaker.removeprefix("SPEAKER_")) for t in turns})
        found = {speaker_label(k) for k in used}  # a centroid that wins no frame is no speaker, even as runner-up
        overlap = [t for t in overlap if t.speaker in found]
        details.update(windows=len(windows), count_rule=rule,
                       overlap_s=round(sum(t.end_s - t.start_s for t in overlap), 3))
        return DiarizationResult(turns, {speaker_label(k): [round(float(v), 5) for v in centroids[k]] for k in used},
                                 self.name, "resemblyzer", details, overlap)

    def _mel(self, audio: np.ndarray) -> np.ndarray:
        from resemblyzer.audio import normalize_volume, wav_to_mel_spectrogram

        return in_blocks(normalize_volume(audio, -30, increase_only=True), wav_to_mel_spectrogram)

    def _embed_windows(self, mel: np.ndarray, windows: list[tuple[int, int]]) -> np.ndarray:
        """One L2-normalised embedding per ``(first mel frame, frames)`` window; windows of one size are batched."""
        import torch

        longest = max(size for _, size in windows)
        if len(mel) < longest:
            mel = np.pad(mel, ((0, longest - len(mel)), (0, 0)))
        out = np.zeros((len(windows), 256), np.float32)
        for size in sorted({size for _, size in windows}):
            chosen = [i for i, (_, n) in enumerate(windows) if n == size]
            for first in range(0, len(chosen), ENCODER_BATCH):
                part = chosen[first : first + ENCODER_BATCH]
                batch = np.stack([mel[windows[i][0] : windows[i][0] + size] for i in part])
                with torch.no_grad():
                    out[part] = self._encoder(torch.from_numpy(batch)).cpu().numpy()
        return out

    # ---- clustering ---------------------------------------------------------------------------
    def _cluster(self, emb: np.ndarray, hint: SpeakerCountHint) -> tuple[np.ndarray, str]:
        """Labels 0..k-1 per window, and which rule chose k."""
        n = len(emb)
        if n < 2:
            return np.zeros(n, dtype=int), "single_window"
        from scipy.cluster.hierarchy import linkage

        tree = linkage(emb, method="average", metric="cosine")
        if hint.num:
            return self._cut(tree, n, min(hint.num, n), emb, absorb=False), "num_speakers"
        labels = self._cut_at(tree, self.cluster_distance, emb)
        count, rule = len(set(labels)), "distance"
        if hint.cast_size and count < hint.cast_size:  # a soft lower bound: a slightly closer cut may do
            closer = self._cut_at(tree, self.cast_hint_distance, emb)
            if count < len(set(closer)) <= hint.cast_size:
                labels, count, rule = closer, len(set(closer)), "cast_hint"
        top = min(hint.max or self.max_speakers, self.max_speakers)
        if count > top:
            return self._cut(tree, n, top, emb), "max_speakers"
        if hint.min and count < hint.min:
            return self._cut(tree, n, min(hint.min, n), emb), "min_speakers"
        return labels, rule

    def _cut_at(self, tree: np.ndarray, distance: float, emb: np.ndarray) -> np.ndarray:
        """The dendrogram cut at ``distance`` (average cosine distance), small clusters absorbed."""
        from scipy.cluster.hierarchy import fcluster

        return absorb_small(fcluster(tree, t=distance, criterion="distance") - 1, emb, self.min_speaker_windows)

    def _cut(self, tree: np.ndarray, n: int, count: int, emb: np.ndarray, absorb: bool = True) -> np.ndarray:
        """The dendrogram cut into ``count`` clusters (small ones absorbed unless that changes the count)."""
        from scipy.cluster.hierarchy import fcluster

        labels = _dense(fcluster(tree, t=count, criterion="maxclust") - 1)
        if absorb:
            absorbed = absorb_small(labels, emb, self.min_speaker_windows)
            if len(set(absorbed)) == len(set(labels)):
                return absorbed
        return labels


# ---- signal helpers (module level: the benchmarks and tests use them) ----------------------------
def speech_regions(audio: np.ndarray, threshold: float = 0.2, min_silence_s: float = 0.1,
                   min_speech_s: float = 0.15, pad_s: float = 0.1) -> list[tuple[float, float]]:
    """Silero VAD (the ONNX model faster-whisper ships) → speech regions in seconds, each widened by ``pad_s``.
    A low ``threshold`` keeps far-field and telephone-band speech that the usual 0.5 misses (a quarter of AMI's
    speech); 0.1 s of padding keeps the soft starts and ends of words that Silero cuts off."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(threshold=threshold, min_silence_duration_ms=int(min_silence_s * 1000),
                         min_speech_duration_ms=int(min_speech_s * 1000), speech_pad_ms=int(pad_s * 1000))
    return [(round(r["start"] / SAMPLE_RATE, 3), round(r["end"] / SAMPLE_RATE, 3))
            for r in get_speech_timestamps(audio, options, sampling_rate=SAMPLE_RATE)]


def speech_windows(regions: list[tuple[float, float]], size: int, hop: int, frames: int,
                   shortest: int = MIN_WINDOW_FRAMES) -> list[tuple[int, int]]:
    """Embedding windows ``(first mel frame, frames)``: ``size`` frames every ``hop`` inside a region (the last
    one flush with its end); a region shorter than ``size`` gets one window of just its speech (at least
    ``shortest`` frames, centred on it), so that no window mixes in the silence or the noise around it."""
    windows: list[tuple[int, int]] = []
    for a, b in regions:
        first, end = int(a / MEL_HOP_S), int(b / MEL_HOP_S)
        if end - first <= size:
            length = min(max(end - first, shortest), max(frames, shortest))
            windows.append((min(max(0, (first + end - length) // 2), max(0, frames - length)), length))
            continue
        positions = list(range(first, end - size + 1, hop))
        if end - size - positions[-1] > hop // 3:
            positions.append(end - size)
        windows += [(min(max(0, p), max(0, frames - size)), size) for p in positions]
    return windows


def absorb_small(labels: np.ndarray, emb: np.ndarray, min_windows: int) -> np.ndarray:
    """Clusters of fewer than ``min_windows`` windows join the nearest big one (a cough is no speaker)."""
    counts = {k: int(np.sum(labels == k)) for k in set(labels)}
    big = [k for k, c in counts.items() if c >= min_windows]
    if not big:
        return np.zeros_like(labels)
    centroids = np.stack([_unit(emb[labels == k].mean(axis=0)) for k in big])
    out = np.array([label if label in big else big[int(np.argmax(centroids @ emb[i]))]
                    for i, label in enumerate(labels)])
    return _dense(out)


def resegment(regions: list[tuple[float, float]], centres_s: np.ndarray, window_s: float,
              similarity: np.ndarray, frame_s: float, overlap_margin: float = 0.0,
              overlap_reach_s: float = 1.0,
              overlap_spans: list[tuple[float, float]] | None = None) -> tuple[list[Turn], list[Turn]]:
    """Every ``frame_s`` of each region takes the speaker whose centroid the windows covering it resemble most
    on average (``similarity``: windows x speakers; the nearest window where none covers it); runs of one
    speaker become turns. Overlapped speech: a frame whose second-best speaker scores within ``overlap_margin``
    of the best, and is the best speaker of a frame within ``overlap_reach_s`` in the same region (a change of
    speaker nearby), has that speaker too. ``overlap_spans`` (overlapped speech heard by a segmentation model)
    replace that guess: a frame whose middle lies in one has its runner-up speaker too. Returns the exclusive
    turns and those second-speaker turns."""
    order = np.argsort(centres_s)
    centres_sorted = centres_s[order]
    frames: list[tuple[int, float, float]] = []
    scores = []
    for index, (a, b) in enumerate(regions):
        edges = np.append(np.arange(a, b, frame_s), b)
        for start, end in zip(edges[:-1], edges[1:]):
            if end - start < 1e-6:
                continue
            middle = (start + end) / 2
            low, high = np.searchsorted(centres_sorted, [middle - window_s / 2, middle + window_s / 2])
            covering = order[low:high] if high > low else [order[int(np.argmin(np.abs(centres_sorted - middle)))]]
            weights = 1.0 - np.abs(centres_s[covering] - middle) / window_s  # nearer windows count more
            frames.append((index, float(start), float(end)))
            scores.append(weights @ similarity[covering] / max(float(weights.sum()), 1e-9))
    if not frames:
        return [], []
    score = np.stack(scores)
    best = score.argmax(axis=1)
    second: list[int | None] = [None] * len(frames)
    runner_up = np.argsort(score, axis=1)[:, -2] if score.shape[1] > 1 else None
    if overlap_spans is not None and runner_up is not None:
        starts = [start for start, _ in overlap_spans]
        for i, (_, start, end) in enumerate(frames):
            if _inside((start + end) / 2, overlap_spans, starts):
                second[i] = int(runner_up[i])
    elif overlap_margin > 0 and runner_up is not None:
        reach = max(1, int(round(overlap_reach_s / frame_s)))
        for i, (region, _, _) in enumerate(frames):
            other = int(runner_up[i])
            if score[i, best[i]] - score[i, other] >= overlap_margin:
                continue
            near = range(max(0, i - reach), min(len(frames), i + reach + 1))
            if any(frames[j][0] == region and best[j] == other for j in near):
                second[i] = other
    return _runs(frames, list(best)), _runs(frames, second)


def _inside(moment: float, spans: list[tuple[float, float]], starts: list[float]) -> bool:
    """Whether ``moment`` lies in one of the ordered ``spans`` (``starts``: their start times)."""
    index = bisect_right(starts, moment) - 1
    return index >= 0 and moment < spans[index][1]


def _runs(frames: list[tuple[int, float, float]], speakers: list[Any]) -> list[Turn]:
    """Adjacent frames of one speaker joined into turns (frames whose speaker is None are skipped)."""
    turns: list[Turn] = []
    for (_, start, end), index in zip(frames, speakers):
        if index is None:
            continue
        speaker = speaker_label(int(index))
        if turns and turns[-1].speaker == speaker and abs(turns[-1].end_s - start) < 1e-6:
            turns[-1].end_s = end
        else:
            turns.append(Turn(start, end, speaker))
    return turns


def in_blocks(audio: np.ndarray, features: Any, block_s: float = BLOCK_S) -> np.ndarray:
    """``features(audio)`` (frames on axis 0, 10 ms hop, centred) computed on blocks of ``block_s`` and joined
    so that frame i still sits at i × 10 ms."""
    hop = int(SAMPLE_RATE * MEL_HOP_S)
    block = int(block_s * SAMPLE_RATE) // hop * hop
    if len(audio) <= block:
        return features(audio)
    parts = []
    for start in range(0, len(audio), block):
        out = features(audio[start : start + block])
        parts.append(out[: block // hop] if start + block < len(audio) else out)
    return np.concatenate(parts)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-9)


def _centroids(emb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Row k: the normalised mean embedding of cluster k (labels 0..k-1)."""
    return np.stack([_unit(emb[labels == k].mean(axis=0)) for k in range(int(labels.max()) + 1)])


def _dense(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..k-1 in order of first appearance."""
    order: dict[int, int] = {}
    for label in labels:
        order.setdefault(int(label), len(order))
    return np.array([order[int(label)] for label in labels])
