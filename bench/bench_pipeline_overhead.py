"""The whole demo run (``pipeline.run`` with pipelines/demo.yaml) against its heavy libraries called directly.

Media: the demo's three episodes (``v60k.demo.build_media``: two dialogues and a silent video, ~80 s in all;
built once into the bench scratch dir), served on 127.0.0.1 (``MediaServer``) as the demo serves them.

- pipeline: ``pipeline.run`` in a fresh work dir, workers=1, the demo config's stages and settings, shards
  written and validated (generate is offline unless V60K_LLM_BASE_URL is set);
- direct, the same settings on the same files: yt-dlp (``YoutubeDL`` with the download stage's format options)
  on each URL; ffprobe + the project's shot detection (PySceneDetect detectors, ``detect_shots``) on each file;
  ffmpeg audio extraction + faster-whisper (the stage's model and ``transcribe_options``, loaded once) on each
  file with audio; the diarization backend (``backend_for`` the stage's settings, loaded once) on each
  extracted audio, with the transcript's spans and the cast hint; the frame sampler (``sample_planned``) on each
  clip of the pipeline's clips.json; a pyarrow write of the corpus tables (read back from the pipeline's shards).

Two rounds, interleaved (pipeline then direct, then direct then pipeline: the first call in a process pays the
imports and JIT warm-up), best of each. Figures: total wall and CPU seconds (process + children) of both sides,
their ratio (goal <= 1.3), and per stage, so that the overhead can be located: the stage's CPU seconds from its
start to its end (model load included; a ``Progress`` that reads the clock) against the direct call's (its model
load included), with both wall times and the summed item durations (``status()["throughput"]``); time outside
the stages (plan, catalog, shards and their validation) is its own row, against the direct pyarrow write.
CPU seconds are the steadier figure on a shared machine.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from bench.common import Row, cpu_seconds, measured, scratch
from v60k.backends.asr import cast_prompt, make_asr_backend
from v60k.backends.diarization import SpeakerCountHint
from v60k.core import documents, pipeline
from v60k.core.catalog import ItemOutcome
from v60k.core.config import PipelineConfig, load_config
from v60k.core.progress import Progress
from v60k.core.stage import Video
from v60k.core.workdir import WorkDir, read_json
from v60k.demo import REPO, build_media, write_manifest
from v60k.media.frame_sampler import sample_planned
from v60k.media.shot_detection import detect_shots
from v60k.media.streams import extract_audio, load_audio, probe
from v60k.stages import STAGE_ORDER
from v60k.stages.diarize import backend_for, transcript_spans
from v60k.testing.sample_episodes import Episode, MediaServer

ROUNDS = int(os.environ.get("V60K_BENCH_REPEAT", "2"))
SAMPLE_RATE = 16000
HEAVY = ("download", "scenes", "transcribe", "diarize", "sample")  # stages with a heavy library called directly


def _config(corpus: Path) -> PipelineConfig:
    config = load_config(REPO / "pipelines" / "demo.yaml", known_stages=list(STAGE_ORDER))
    return config.model_copy(update={"output": config.output.model_copy(update={"dir": corpus})})


class StageClock(Progress):
    """Per stage, the wall and CPU seconds (process + children) from its start to its end, setup included, and
    how many transcripts fell back to a second decode without the cast prompt."""

    def __init__(self) -> None:
        self.spans: dict[str, tuple[float, float]] = {}
        self.fallbacks = 0
        self._start: tuple[float, float] = (0.0, 0.0)

    def stage_started(self, stage: str, total: int) -> None:
        self._start = (time.perf_counter(), cpu_seconds())

    def item_finished(self, outcome: ItemOutcome) -> None:
        self.fallbacks += bool(outcome.metrics.get("cast_prompt_fallback"))

    def stage_finished(self, stage: str) -> None:
        wall, cpu = self.spans.get(stage, (0.0, 0.0))
        self.spans[stage] = (wall + time.perf_counter() - self._start[0], cpu + cpu_seconds() - self._start[1])


def _pipeline_once(root: Path, manifest: Path, config: PipelineConfig, n: int) -> dict[str, Any]:
    """One ``pipeline.run`` in a fresh work dir: its wall and CPU seconds and per stage its items' seconds."""
    work, corpus = root / f"work-{n}", root / f"corpus-{n}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(corpus, ignore_errors=True)
    config = config.model_copy(update={"output": config.output.model_copy(update={"dir": corpus})})
    clock = StageClock()
    wall, cpu, summary = measured(lambda: pipeline.run(work, manifest=manifest, config=config, workers=1,
                                                       progress=clock))
    throughput = pipeline.status(work)["throughput"]
    items = {name: float(throughput.get(name, {}).get("work_s", 0.0)) for name in config.stages}
    return {"wall": wall, "cpu": cpu, "items": items, "spans": clock.spans, "fallbacks": clock.fallbacks,
            "work": work, "corpus": corpus, "failed": summary.failed, "shards_ok": summary.shards_ok}


class Direct:
    """The heavy work of the demo, each library called directly with the stages' settings."""

    def __init__(self, root: Path, config: PipelineConfig, episodes: list[Episode], urls: dict[str, str],
                 reference: Path, corpus: Path):
        built = pipeline.plan(root / "plan-only", config=config).built  # the stages' checked settings, nothing run
        self.settings = {name: stage.settings for name, stage in built.items()}
        self.root, self.episodes, self.urls = root, episodes, urls
        self.reference = WorkDir(reference)  # a pipeline work dir: clips, scenes and transcript spans to reuse
        self.corpus = corpus
        self.output_settings = config.output
        self.analyses: dict[str, Any] = {}
        self.tables: dict[str, Any] = {}

    def _ref(self, video_id: str) -> Video:
        return Video(video_id=video_id, source_url=self.urls[video_id], dir=self.reference.video_dir(video_id))

    def download(self) -> int:
        from yt_dlp import YoutubeDL

        s = self.settings["download"]
        out = self.root / "direct-download"
        shutil.rmtree(out, ignore_errors=True)
        options = {"quiet": True, "noprogress": True, "format": s.format, "format_sort": list(s.format_sort),
                   "merge_output_format": s.merge_output_format, "outtmpl": {"default": str(out / "%(id)s.%(ext)s")},
                   "writesubtitles": s.write_subtitles, "subtitleslangs": list(s.subtitle_languages),
                   "retries": s.retries}
        with YoutubeDL(options) as ydl:
            return ydl.download(list(self.urls.values()))

    def scenes(self) -> None:
        for episode in self.episodes:
            info = probe(episode.path)
            self.analyses[episode.path.stem] = detect_shots(episode.path, info.width, info.height,
                                                            self.settings["scenes"])

    def transcribe(self) -> int:
        s = self.settings["transcribe"]
        backend = make_asr_backend(s)  # loaded once per run, as the stage's setup does
        backend.load()
        words = 0
        for episode in self.episodes:
            if not probe(episode.path).has_audio:
                continue
            wav = extract_audio(episode.path, self.root / f"direct-{episode.path.stem}.wav", SAMPLE_RATE)
            prompt = cast_prompt(list(episode.truth["cast"])) if s.cast_prompt else None
            segments, _ = backend.model.transcribe(str(wav), **backend.transcribe_options("en", prompt, None))
            words += sum(len(segment.words or []) for segment in segments)
        return words

    def diarize(self) -> int:
        s = self.settings["diarize"]
        backend = backend_for(s)
        backend.load()  # once per run, as the stage's setup does
        turns = 0
        for episode in self.episodes:
            transcript = self._ref(episode.path.stem).paths.transcript_json
            if not transcript.exists():
                continue
            audio = load_audio(self.root / f"direct-{episode.path.stem}.wav", SAMPLE_RATE)
            hint = SpeakerCountHint(cast_size=len(episode.truth["cast"]) if s.use_cast_hint else None)
            spans = transcript_spans(read_json(transcript)["segments"])
            turns += len(backend.diarize(audio, SAMPLE_RATE, hint, spans).turns)
        return turns

    def sample(self) -> int:
        s = self.settings["sample"]
        frames = 0
        for episode in self.episodes:
            paths = self._ref(episode.path.stem).paths
            scenes = [scene.model_dump() for scene in documents.Scenes.load(paths).scenes] or None
            motion = self.analyses[episode.path.stem].motion
            for clip in documents.Clips.load(paths).clips:
                frames += len(sample_planned(episode.path, clip.start_s, clip.end_s, s.max_frames, motion=motion,
                                             scenes=scenes, width=s.width, quality=s.jpeg_quality, settings=s))
        return frames

    def read_tables(self) -> None:
        """The corpus tables, read back from the pipeline's shards (untimed: the input of ``output``)."""
        import pyarrow.parquet as pq

        self.tables = {path.name: pq.read_table(path) for path in sorted((self.corpus / "data").rglob("*.parquet"))}

    def output(self) -> int:
        """The corpus tables written again with pyarrow, with the output section's compression and row groups."""
        import pyarrow.parquet as pq

        out = self.root / "direct-output"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for n, (name, table) in enumerate(self.tables.items()):
            pq.write_table(table, out / f"{n}-{name}", compression=self.output_settings.compression,
                           row_group_size=self.output_settings.row_group_rows)
        return sum(table.num_rows for table in self.tables.values())


def _direct_once(direct: Direct) -> dict[str, Any]:
    """Every direct call once: per stage wall and CPU seconds, and the totals."""
    stages: dict[str, tuple[float, float]] = {}
    for name in (*HEAVY, "output"):
        wall, cpu, _ = measured(getattr(direct, name))
        stages[name] = (wall, cpu)
    return {"wall": sum(w for w, _ in stages.values()), "cpu": sum(c for _, c in stages.values()), "stages": stages}


def run() -> list[Row]:
    root = scratch("pipeline_overhead")
    media = root / "media"
    episodes = build_media(media)  # kept between runs
    config = _config(root / "corpus")
    runs: list[dict[str, Any]] = []
    directs: list[dict[str, Any]] = []
    with MediaServer(media) as server:
        manifest = write_manifest(root / "manifest.csv", server, episodes)
        urls = {ep.path.stem: server.url(ep.path.name) for ep in episodes}
        runs.append(_pipeline_once(root, manifest, config, 0))  # pays the imports and warm-ups of both sides
        direct = Direct(root, config, episodes, urls, runs[0]["work"], runs[0]["corpus"])
        direct.read_tables()
        directs.append(_direct_once(direct))
        for n in range(1, ROUNDS):  # alternate which side goes first
            if n % 2:
                directs.append(_direct_once(direct))
                runs.append(_pipeline_once(root, manifest, config, n))
            else:
                runs.append(_pipeline_once(root, manifest, config, n))
                directs.append(_direct_once(direct))
    return _rows(runs, directs, bool(config.llm.base_url))


def _rows(runs: list[dict[str, Any]], directs: list[dict[str, Any]], endpoint: bool) -> list[Row]:
    p_wall, p_cpu = min(r["wall"] for r in runs), min(r["cpu"] for r in runs)
    d_wall, d_cpu = min(d["wall"] for d in directs), min(d["cpu"] for d in directs)
    rows = [
        Row("overhead", "pipeline.run wall (demo, 3 episodes)", round(p_wall, 2), "s",
            f"CPU {p_cpu:.1f} s, best of {len(runs)}", ""),
        Row("overhead", "direct library calls wall", round(d_wall, 2), "s",
            f"CPU {d_cpu:.1f} s, best of {len(directs)}", ""),
        Row("overhead", "pipeline / direct (wall)", round(p_wall / d_wall, 3), "x",
            f"{p_wall:.1f} s / {d_wall:.1f} s", "<= 1.3"),
        Row("overhead", "pipeline / direct (CPU)", round(p_cpu / d_cpu, 3), "x",
            f"{p_cpu:.1f} s / {d_cpu:.1f} s", "<= 1.3"),
    ]

    def best(side: list[dict[str, Any]], key: str, name: str, index: int) -> float:
        return min(entry[key].get(name, (0.0, 0.0))[index] for entry in side)

    for name in runs[0]["items"]:
        span_wall, span_cpu = best(runs, "spans", name, 0), best(runs, "spans", name, 1)
        items_s = min(r["items"].get(name, 0.0) for r in runs)
        if name in HEAVY:
            direct_wall, direct_cpu = best(directs, "stages", name, 0), best(directs, "stages", name, 1)
            extra = f", {min(r['fallbacks'] for r in runs)} uncued re-decode(s)" if name == "transcribe" else ""
            rows.append(Row("overhead", f"{name}: stage / direct (CPU)", round(span_cpu / direct_cpu, 3), "x",
                            f"CPU {span_cpu:.2f}/{direct_cpu:.2f} s, wall {span_wall:.2f}/{direct_wall:.2f} s "
                            f"(items {items_s:.2f} s){extra}", ""))
        else:
            note = "no heavy library" + (", LLM endpoint set" if name == "generate" and endpoint else "")
            rows.append(Row("overhead", f"{name}: stage wall", round(span_wall, 3), "s",
                            f"CPU {span_cpu:.2f} s, items {items_s:.2f} s, {note}", ""))
    spans_wall = min(sum(w for w, _ in r["spans"].values()) for r in runs)
    write_wall = best(directs, "stages", "output", 0)
    rows.append(Row("overhead", "outside stages: plan, catalog, shards + validation", round(p_wall - spans_wall, 2),
                    "s", f"direct pyarrow write {write_wall:.2f} s", ""))
    rows.append(Row("overhead", "pipeline items failed (all runs)", sum(r["failed"] for r in runs), "", "", "0"))
    rows.append(Row("overhead", "shards valid (all runs)", int(all(r["shards_ok"] for r in runs)), "",
                    "v60k.dataset validation", "1"))
    return rows
