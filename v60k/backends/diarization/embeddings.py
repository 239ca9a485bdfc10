"""Offline CPU diarization: webrtcvad speech regions → resemblyzer embeddings + pitch → clustering.

Why more than one cosine threshold: voices of one synthesizer embed close together (espeak-ng voices reach 0.86
across speakers), real voices spread wider (LibriSpeech: 0.64 across, 0.82 within). So two clusters are called
the same speaker when their mean embeddings are very close, or close *and* of similar median pitch; the speaker
count is the largest one for which every pair of clusters is distinct under that test (a BIC-like stopping
rule on an average-linkage dendrogram), within the num/min/max bounds. The cast size is a soft lower bound:
it only relaxes the test (``cast_hint_cosine``), it never forces a count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from v60k.backends.diarization import DiarizationResult, SpeakerCountHint, Turn, speaker_label

SAMPLE_RATE = 16000
MEL_HOP_S = 0.01  # resemblyzer: 10 ms mel frames
WINDOW_FRAMES = 160  # resemblyzer's partial utterance: 1.6 s
VAD_FRAME_S = 0.03
MAX_UNITS = 3000  # long films get longer units: the clustering's distance matrices stay ~70 MB each
BLOCK_S = 120.0  # spectral features are computed block by block: a feature film never needs GBs at once
ENCODER_BATCH = 256


@dataclass
class Unit:
    """A piece of speech that gets one speaker: a VAD region, or a part of a long one."""

    start_s: float
    end_s: float
    region: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


class EmbeddingDiarizer:
    """The ``embeddings`` backend (see the module docstring)."""

    name = "embeddings"

    def __init__(
        self,
        vad_aggressiveness: int = 2,
        min_gap_s: float = 0.3,
        min_region_s: float = 0.25,
        chunk_s: float = 0.75,
        window_hop_frames: int = 40,
        same_speaker_cosine: float = 0.80,
        same_voice_cosine: float = 0.90,
        same_speaker_pitch_st: float = 3.0,
        cast_hint_cosine: float = 0.88,
        pitch_weight: float = 0.04,
        min_speaker_s: float = 1.5,
        max_speakers: int = 8,
        threads: int = 1,
    ):
        self.vad_aggressiveness = vad_aggressiveness
        self.min_gap_s = min_gap_s
        self.min_region_s = min_region_s
        self.chunk_s = chunk_s
        self.window_hop_frames = window_hop_frames
        self.same_speaker_cosine = same_speaker_cosine
        self.same_voice_cosine = same_voice_cosine
        self.same_speaker_pitch_st = same_speaker_pitch_st
        self.cast_hint_cosine = cast_hint_cosine
        self.pitch_weight = pitch_weight
        self.min_speaker_s = min_speaker_s
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
        # the first mel spectrogram and pitch track compile librosa's kernels: pay it here, not per video
        warm = np.random.default_rng(0).normal(0, 0.05, SAMPLE_RATE * 2).astype(np.float32)
        self._embed_windows(self._mel(warm), [0])
        pitch_track(warm)

    def identity(self) -> dict[str, Any]:
        return {"encoder": "resemblyzer-0.1.4 bundled VoiceEncoder", "algorithm": "1"}

    # ---- the pipeline -------------------------------------------------------------------------
    def diarize(self, audio: np.ndarray, sample_rate: int, hint: SpeakerCountHint,
                speech_spans: list[tuple[float, float]] | None = None) -> DiarizationResult:
        """``speech_spans`` (the transcript's words, padded) restrict the VAD regions: music or noise between
        lines that webrtcvad takes for speech does not become a speaker."""
        self.load()
        audio = np.asarray(audio, dtype=np.float32)
        if sample_rate != SAMPLE_RATE:
            import librosa

            audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=SAMPLE_RATE).astype(np.float32)
        regions = speech_regions(audio, self.vad_aggressiveness, self.min_gap_s, self.min_region_s)
        if speech_spans is not None:
            regions = [r for r in intersect_spans(regions, speech_spans) if r[1] - r[0] >= self.min_region_s]
        speech_s = sum(b - a for a, b in regions)
        units = split_regions(regions, max(self.chunk_s, speech_s / MAX_UNITS))
        details: dict[str, Any] = {"speech_s": round(sum(b - a for a, b in regions), 3), "units": len(units)}
        if not units:
            return DiarizationResult([], {}, self.name, "resemblyzer", {**details, "count_rule": "no_speech"})
        embeddings = self._unit_embeddings(audio, units, regions)
        pitch = unit_pitch(pitch_track(audio), units)
        labels, rule = self._cluster(embeddings, pitch, np.array([u.duration_s for u in units]), hint)
        turns = merge_turns(units, labels)
        centroids = {}
        for label in sorted(set(labels)):
            mean = embeddings[labels == label].mean(axis=0)
            centroids[speaker_label(int(label))] = [round(float(v), 5) for v in mean / np.linalg.norm(mean)]
        details.update(count_rule=rule, pitch_median_st={
            speaker_label(int(k)): _round(_nanmedian(pitch[labels == k])) for k in sorted(set(labels))})
        return DiarizationResult(turns, centroids, self.name, "resemblyzer", details)

    def _mel(self, audio: np.ndarray) -> np.ndarray:
        from resemblyzer.audio import normalize_volume, wav_to_mel_spectrogram

        return in_blocks(normalize_volume(audio, -30, increase_only=True), wav_to_mel_spectrogram)

    def _embed_windows(self, mel: np.ndarray, starts: list[int]) -> np.ndarray:
        import torch

        if len(mel) < WINDOW_FRAMES:
            mel = np.pad(mel, ((0, WINDOW_FRAMES - len(mel)), (0, 0)))
        out = []
        for first in range(0, len(starts), ENCODER_BATCH):
            batch = np.stack([mel[s : s + WINDOW_FRAMES] for s in starts[first : first + ENCODER_BATCH]])
            with torch.no_grad():
                out.append(self._encoder(torch.from_numpy(batch)).cpu().numpy())
        return np.concatenate(out)

    def _unit_embeddings(self, audio: np.ndarray, units: list[Unit], regions: list[tuple[float, float]]) -> np.ndarray:
        """One L2-normalised embedding per unit: the mean of 1.6 s windows inside it (a short unit gets one
        window centred on it, kept inside its VAD region where the region is long enough)."""
        mel = self._mel(audio)
        last_start = max(0, len(mel) - WINDOW_FRAMES)
        starts: list[int] = []
        owners: list[int] = []
        for index, unit in enumerate(units):
            first, end = int(unit.start_s / MEL_HOP_S), int(unit.end_s / MEL_HOP_S)
            if end - first >= WINDOW_FRAMES:
                positions = list(range(first, end - WINDOW_FRAMES + 1, self.window_hop_frames))
            else:
                region_start, region_end = (int(t / MEL_HOP_S) for t in regions[unit.region])
                centre = (first + end) // 2 - WINDOW_FRAMES // 2
                low, high = (region_start, region_end - WINDOW_FRAMES) if region_end - region_start >= WINDOW_FRAMES else (0, last_start)
                positions = [min(max(centre, low), high)]
            positions = [min(max(0, p), last_start) for p in positions]
            starts += positions
            owners += [index] * len(positions)
        windows = self._embed_windows(mel, starts)
        owner = np.array(owners)
        means = np.stack([windows[owner == i].mean(axis=0) for i in range(len(units))])
        return means / np.linalg.norm(means, axis=1, keepdims=True)

    # ---- clustering ---------------------------------------------------------------------------
    def _cluster(self, emb: np.ndarray, pitch: np.ndarray, durations: np.ndarray,
                 hint: SpeakerCountHint) -> tuple[np.ndarray, str]:
        """Labels 0..k-1 per unit, and which rule chose k."""
        n = len(emb)
        if n == 1:
            return np.zeros(1, dtype=int), "single_unit"
        from scipy.cluster.hierarchy import fcluster, linkage
        from scipy.spatial.distance import squareform

        pitch_gap = np.abs(pitch[:, None] - pitch[None, :])
        pitch_gap = np.where(np.isnan(pitch_gap), 0.0, np.minimum(pitch_gap, 12.0))
        distance = np.clip(1.0 - emb @ emb.T, 0.0, 2.0) + self.pitch_weight * pitch_gap
        np.fill_diagonal(distance, 0.0)
        tree = linkage(squareform((distance + distance.T) / 2, checks=False), method="average")

        top = min(n, hint.max or self.max_speakers, self.max_speakers if not hint.num else n)
        low = max(1, min(hint.min or 1, top))
        candidates: dict[int, np.ndarray] = {}
        for k in range(top, 0, -1):
            labels = self._absorb_small(fcluster(tree, t=k, criterion="maxclust") - 1, emb, durations)
            candidates.setdefault(len(set(labels)), labels)
        if hint.num:
            exact = min(candidates, key=lambda c: (abs(c - hint.num), -c))
            return self._refine(candidates[exact], emb, pitch), "num_speakers"
        allowed = sorted((c for c in candidates if low <= c <= top), reverse=True) or sorted(candidates, reverse=True)
        chosen, rule = allowed[-1], "minimum"
        for count in allowed:
            if self._all_distinct(candidates[count], emb, pitch, self.same_speaker_cosine, self.same_speaker_pitch_st):
                chosen, rule = count, "distinct_clusters"
                break
        if hint.cast_size and hint.cast_size > chosen:
            for count in allowed:
                if chosen < count <= hint.cast_size and self._all_distinct(
                    candidates[count], emb, pitch, self.cast_hint_cosine, self.same_speaker_pitch_st / 2
                ):
                    chosen, rule = count, "cast_hint"
                    break
        return self._refine(candidates[chosen], emb, pitch), rule

    def _absorb_small(self, labels: np.ndarray, emb: np.ndarray, durations: np.ndarray) -> np.ndarray:
        """Clusters with less than ``min_speaker_s`` of speech join the nearest big one (a cough is no speaker)."""
        totals = {k: durations[labels == k].sum() for k in set(labels)}
        big = [k for k, total in totals.items() if total >= self.min_speaker_s]
        if not big:
            return np.zeros_like(labels)
        centroids = np.stack([_unit(emb[labels == k].mean(axis=0)) for k in big])
        out = labels.copy()
        for i, label in enumerate(labels):
            if label not in big:
                out[i] = big[int(np.argmax(centroids @ emb[i]))]
        return _dense(out)

    def _all_distinct(self, labels: np.ndarray, emb: np.ndarray, pitch: np.ndarray,
                      cosine: float, pitch_st: float) -> bool:
        """True when no two clusters look like one speaker: mean embeddings at least ``same_voice_cosine`` alike
        (whatever the pitch: YIN's octave errors move a short unit's median), or at least ``cosine`` alike with
        median pitches within ``pitch_st`` semitones."""
        keys = sorted(set(labels))
        centroids = [_unit(emb[labels == k].mean(axis=0)) for k in keys]
        medians = [_nanmedian(pitch[labels == k]) for k in keys]
        for a in range(len(keys)):
            for b in range(a + 1, len(keys)):
                similarity = float(centroids[a] @ centroids[b])
                gap = abs(medians[a] - medians[b]) if not (np.isnan(medians[a]) or np.isnan(medians[b])) else 0.0
                if similarity >= max(cosine, self.same_voice_cosine) or (similarity >= cosine and gap <= pitch_st):
                    return False
        return True

    def _refine(self, labels: np.ndarray, emb: np.ndarray, pitch: np.ndarray, rounds: int = 3) -> np.ndarray:
        """A few nearest-centroid passes (embedding and pitch), keeping the count: fixes chaining errors."""
        for _ in range(rounds):
            keys = sorted(set(labels))
            if len(keys) < 2:
                return labels
            centroids = np.stack([_unit(emb[labels == k].mean(axis=0)) for k in keys])
            medians = np.array([_nanmedian(pitch[labels == k]) for k in keys])
            gap = np.abs(pitch[:, None] - medians[None, :])
            gap = np.where(np.isnan(gap), 0.0, np.minimum(gap, 12.0))
            score = (1.0 - emb @ centroids.T) + self.pitch_weight * gap
            new = np.array([keys[j] for j in np.argmin(score, axis=1)])
            if len(set(new)) < len(keys) or np.array_equal(new, labels):
                break
            labels = new
        return _dense(labels)


# ---- signal helpers (module level: the benchmarks and tests use them) ----------------------------
def speech_regions(audio: np.ndarray, aggressiveness: int = 2, min_gap_s: float = 0.3,
                   min_region_s: float = 0.25) -> list[tuple[float, float]]:
    """webrtcvad over 30 ms frames → speech regions, gaps shorter than ``min_gap_s`` bridged."""
    import webrtcvad

    vad = webrtcvad.Vad(int(aggressiveness))
    step = int(SAMPLE_RATE * VAD_FRAME_S)
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    flags = [vad.is_speech(pcm[i : i + step].tobytes(), SAMPLE_RATE) for i in range(0, len(pcm) - step + 1, step)]
    regions: list[list[float]] = []
    start = None
    for index, speech in enumerate([*flags, False]):
        if speech and start is None:
            start = index
        elif not speech and start is not None:
            a, b = start * VAD_FRAME_S, index * VAD_FRAME_S
            if regions and a - regions[-1][1] < min_gap_s:
                regions[-1][1] = b
            else:
                regions.append([a, b])
            start = None
    return [(round(a, 3), round(b, 3)) for a, b in regions if b - a >= min_region_s]


def intersect_spans(regions: list[tuple[float, float]], spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The parts of ``regions`` inside the union of ``spans``."""
    merged: list[list[float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out = []
    for a, b in regions:
        for start, end in merged:
            low, high = max(a, start), min(b, end)
            if high > low:
                out.append((round(low, 3), round(high, 3)))
    return out


def split_regions(regions: list[tuple[float, float]], chunk_s: float) -> list[Unit]:
    """Each region cut into equal parts no longer than ``chunk_s`` (so a speaker change inside is caught)."""
    units = []
    for index, (start, end) in enumerate(regions):
        parts = max(1, int(np.ceil((end - start) / chunk_s - 1e-9)))
        edges = np.linspace(start, end, parts + 1)
        units += [Unit(float(a), float(b), index) for a, b in zip(edges, edges[1:])]
    return units


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


def pitch_track(audio: np.ndarray) -> tuple[np.ndarray, float]:
    """F0 in semitones relative to 100 Hz per 10 ms frame (NaN where unvoiced or quiet): YIN plus an energy gate."""
    import librosa

    hop = int(SAMPLE_RATE * MEL_HOP_S)
    if len(audio) < 2048:
        return np.full(max(1, len(audio) // hop), np.nan), MEL_HOP_S

    def f0_and_rms(piece: np.ndarray) -> np.ndarray:
        if len(piece) < 2048:
            piece = np.pad(piece, (0, 2048 - len(piece)))
        f0 = librosa.yin(piece, fmin=65, fmax=500, sr=SAMPLE_RATE, frame_length=1024, hop_length=hop)
        rms = librosa.feature.rms(y=piece, frame_length=1024, hop_length=hop)[0]
        size = min(len(f0), len(rms))
        return np.stack([f0[:size], rms[:size]], axis=1)

    track = in_blocks(audio, f0_and_rms)
    f0, rms = track[:, 0], track[:, 1]
    loud = rms > max(1e-4, 0.3 * float(np.median(rms[rms > 1e-4])) if np.any(rms > 1e-4) else 1e-4)
    voiced = loud & (f0 > 70) & (f0 < 480)
    return np.where(voiced, 12.0 * np.log2(np.maximum(f0, 1.0) / 100.0), np.nan), MEL_HOP_S


def unit_pitch(track: tuple[np.ndarray, float], units: list[Unit]) -> np.ndarray:
    """Median pitch (semitones) of each unit; NaN with fewer than 5 voiced frames."""
    values, hop = track
    out = np.full(len(units), np.nan)
    for i, unit in enumerate(units):
        part = values[int(unit.start_s / hop) : int(unit.end_s / hop)]
        part = part[~np.isnan(part)]
        if len(part) >= 5:
            out[i] = float(np.median(part))
    return out


def merge_turns(units: list[Unit], labels: np.ndarray) -> list[Turn]:
    """Consecutive units of one speaker inside one region become one turn."""
    turns: list[Turn] = []
    for unit, label in zip(units, labels):
        speaker = speaker_label(int(label))
        if turns and turns[-1].speaker == speaker and unit.start_s - turns[-1].end_s < 1e-6:
            turns[-1].end_s = unit.end_s
        else:
            turns.append(Turn(unit.start_s, unit.end_s, speaker))
    return turns


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-9)


def _nanmedian(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(np.median(values)) if len(values) else float("nan")


def _round(value: float) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 2)


def _dense(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..k-1 in order of first appearance."""
    order: dict[int, int] = {}
    for label in labels:
        order.setdefault(int(label), len(order))
    return np.array([order[int(label)] for label in labels])
