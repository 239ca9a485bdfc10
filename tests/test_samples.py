"""The generated sample media are deterministic: the quality tests and benchmarks measure the same episode
every time, whatever HOME the run has."""

from __future__ import annotations

import subprocess

import numpy as np

from v60k.testing.sample_episodes import MONICA, _speak, build_scene_video


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


def _frame_digests(path) -> list[str]:
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v", "-f", "framemd5", "-"],
                         capture_output=True, text=True, check=True).stdout
    return [line.rsplit(",", 1)[-1].strip() for line in out.splitlines() if line and not line.startswith("#")]


def test_the_same_scene_list_builds_the_same_pictures(tmp_path):
    """The moving sources that draw at random (life, cellauto, gradients, sierpinski) are seeded."""
    lengths = [0.4] * 8  # every source in the table
    digests = []
    for n in range(2):
        build_scene_video(tmp_path / f"v{n}.mp4", lengths, 160, 90, audio=False)
        digests.append(_frame_digests(tmp_path / f"v{n}.mp4"))
    assert len(digests[0]) == 80
    assert digests[0] == digests[1]
