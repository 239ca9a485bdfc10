"""The generated sample media are deterministic: the quality tests and benchmarks measure the same episode
every time, whatever HOME the run has."""

from __future__ import annotations

import numpy as np

from v60k.testing.sample_episodes import MONICA, _speak


def test_the_same_line_sounds_the_same_under_any_home(tmp_path, monkeypatch):
    takes = []
    for n in range(3):
        home = tmp_path / f"home{n}"  # a fresh HOME each time: no PulseAudio cookie yet
        home.mkdir()
        monkeypatch.setenv("HOME", str(home))
        takes.append(_speak(MONICA, "Hi Ross, you look tired this morning.", tmp_path, n))
    assert len(takes[0]) > 22050  # over a second of speech
    for take in takes[1:]:
        assert np.array_equal(take, takes[0])
