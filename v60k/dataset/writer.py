"""The shard writer: the work dir's per-video JSON files → Parquet shards under ``<out>/data/<table>/``.

    summary = write_shards("v60k-work", "corpus", OutputSettings(shard_size_mb=500))

Streaming: rows are buffered per (table, split) only up to one row group (as Arrow batches), then written; a shard is closed
when it reaches the target size. Shards are written under temporary names in a staging folder and renamed
to the Hub's ``<split>-00000-of-00003.parquet`` names at the end, when the counts are known; the previous
``data/`` and card are replaced only then. Videos are read in id order and rows in file order, so a re-run over
the same work dir gives byte-identical shards.

Nothing is lost: the writer holds the work dir's run lock and the folder's own lock, replaces only files it
recorded in ``.v60k-corpus.json``, and refuses a corpus from another work dir or an empty one over rows unless
``overwrite`` (see ``v60k.dataset.ownership``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from v60k.core.catalog import Catalog
from v60k.core.config import OutputSettings  # the config's output section, checked when the config is loaded
from v60k.core.documents import (
    Clips,
    Diarization,
    DocumentError,
    Frames,
    Generation,
    Info,
    Line,
    Lines,
    Scenes,
    Summary,
    Transcript,
)
from v60k.core.errors import V60kError
from v60k.core.locks import FileLock, FolderBusy, RunLock
from v60k.core.stage import Video
from v60k.core.workdir import VideoPaths, WorkDir
from v60k.dataset.dedup_pass import CrossVideoDuplicates
from v60k.dataset.ownership import (
    CorpusError,
    CorpusRecord,
    FolderState,
    check_not_emptied,
    check_replaceable,
    file_facts,
    inspect_folder,
    shrinkage,
)
from v60k.dataset.schema import SPLITS, TABLES, required_fields, table_schema
from v60k.dataset.splits import plan_splits
from v60k.stages import Derived, stage_documents

log = logging.getLogger(__name__)
MB = 1024 * 1024
CONVERT_EVERY = 256  # rows buffered as Python objects before they become an Arrow batch


class ShardError(V60kError, RuntimeError):
    """Rows that cannot be written (a required value missing), naming the table and the row."""


@dataclass
class ShardSummary:
    out_dir: str
    files: list[str] = field(default_factory=list)
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    videos_by_split: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    card: str | None = None
    validation: Any = None  # ValidationReport when settings.check
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # {"dialogues": {"near_duplicate": n}}
    near_duplicates: list[dict[str, str]] = field(default_factory=list)  # {kind, id, video_id, reason}

    def describe(self) -> str:
        """One line: shard count, size and rows per table."""
        rows = ", ".join(f"{t} {sum(self.rows.get(t, {}).values())}" for t in TABLES)
        return f"{len(self.files)} shard(s), {self.bytes / 1e6:.1f} MB: {rows}"

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if k != "validation"}
        if self.validation is not None:
            data["validation"] = {"ok": self.validation.ok, "errors": len(self.validation.errors)}
        return data


# ------------------------------------------------------------------------------------------ reading


# stage -> the document it writes, and that document's VideoPaths property (derived from the stage registry)
STAGE_DOCUMENTS = Derived(stage_documents)
STAGE_FILES = Derived(lambda: {stage: doc.paths_attribute() for stage, doc in stage_documents().items()})


class VideoReader:
    """One video's documents, each used only when its stage is ``done`` in the catalog, each read once."""

    def __init__(self, video: Video, done_stages: set[str]):
        self.video = video
        self.paths = VideoPaths(video.dir)
        self.done = done_stages
        self.warnings: list[str] = []
        self._loaded: dict[str, Any] = {}

    def load(self, stage: str) -> Any:
        """The document ``stage`` wrote (its model), or None when the stage is not done or the file is unusable."""
        if stage not in self.done:
            return None
        if stage not in self._loaded:
            self._loaded[stage] = self._read(stage)
        return self._loaded[stage]

    def _read(self, stage: str) -> Any:
        kind = STAGE_DOCUMENTS[stage]
        try:
            return kind.load(self.paths)
        except DocumentError as exc:
            if not kind.exists(self.paths):
                self.warnings.append(f"{self.video.video_id}: {stage} is done but {kind.file_name} is missing")
            else:
                self.warnings.append(f"{self.video.video_id}: {exc}")
        return None


def video_rows(reader: VideoReader, split: str, include_frames: bool = True) -> Iterator[tuple[str, dict[str, Any]]]:
    """(table, row) pairs of one video, in a fixed order: the video, its utterances, clips, dialogues."""
    video = reader.video
    vid = video.video_id
    info: Info = reader.load("download") or Info()
    scenes: Scenes | None = reader.load("scenes")
    lines_doc: Lines | None = reader.load("attribute")
    cast = list(video.characters)
    for name in lines_doc.cast if lines_doc else []:
        if name not in cast:
            cast.append(name)
    transcript: Transcript | None = reader.load("transcribe")
    yield "videos", {
        "video_id": vid,
        "source_url": video.source_url,
        "title": video.title or info.title,
        "series": video.series,
        "language": video.language or (transcript.language if transcript else None),
        "license": video.license or info.license,
        "channel": info.channel or info.uploader,
        "upload_date": _str_or_none(info.upload_date),
        "duration_s": _float_or_none(_stream_fact(scenes, "duration_s", info.duration)),
        "fps": _float_or_none(_stream_fact(scenes, "fps", info.fps)),
        "width": _int_or_none(_stream_fact(scenes, "width", info.width)),
        "height": _int_or_none(_stream_fact(scenes, "height", info.height)),
        "characters": cast,
        "scenes": [{"start_s": float(s.start_s), "end_s": float(s.end_s)} for s in (scenes.scenes if scenes else [])],
        "split": split,
    }

    utterance_ids: set[str] = set()
    for line in _lines(reader, lines_doc, transcript):
        utterance_id = f"{vid}-{line.line_id}"
        utterance_ids.add(utterance_id)
        yield "utterances", {
            "utterance_id": utterance_id,
            "video_id": vid,
            "line_id": str(line.line_id),
            "start_s": float(line.start_s),
            "end_s": float(line.end_s),
            "text": line.text.strip(),
            "speaker": line.speaker,
            "character": line.character,
            "attribution_confidence": _float_or_none(line.confidence),
            "words": [{"text": w.text, "start_s": float(w.start_s), "end_s": float(w.end_s),  # type: ignore[arg-type]
                       "probability": _float_or_none(w.probability)} for w in line.words],
            "split": split,
        }

    clips_doc: Clips = reader.load("clips") or Clips()
    frames_doc: Frames = reader.load("sample") or Frames()
    generation: Generation = reader.load("generate") or Generation()
    clip_ids: set[str] = set()
    for clip in sorted(clips_doc.clips, key=lambda c: (c.index or 0, c.clip_id)):
        clip_id = clip.clip_id
        clip_ids.add(clip_id)
        images, times = [], []
        for frame in sorted(frames_doc.clips.get(clip_id, []), key=lambda f: f.t_s):
            data = b""
            if include_frames:
                try:
                    data = (reader.paths.root / frame.path).read_bytes()
                except OSError:
                    reader.warnings.append(f"{vid}: frame {frame.path} of {clip_id} is missing; left out")
                    continue
            images.append({"bytes": data, "path": f"{vid}/{frame.path}"})
            times.append(float(frame.t_s))
        summary = generation.summaries.get(clip_id, Summary())
        yield "clips", {
            "clip_id": clip_id,
            "video_id": vid,
            "index": clip.index or 0,
            "start_s": float(clip.start_s),
            "end_s": float(clip.end_s),
            "scene_indices": list(clip.scene_indices),
            "utterance_ids": [f"{vid}-{lid}" for lid in clip.line_ids if f"{vid}-{lid}" in utterance_ids],
            "frame_times_s": times,
            "frames": images,
            "summary": summary.text,
            "summary_generator": summary.generator,
            "summary_type": summary.generation_type,
            "split": split,
        }

    for dialogue in sorted(generation.dialogues, key=lambda d: d.dialogue_id):
        if dialogue.clip_id not in clip_ids:
            reader.warnings.append(f"{vid}: dialogue {dialogue.dialogue_id} names an unknown clip; left out")
            continue
        yield "dialogues", {
            "dialogue_id": dialogue.dialogue_id,
            "clip_id": dialogue.clip_id,
            "video_id": vid,
            "character": dialogue.character,
            "generation_type": dialogue.generation_type,
            "generator": dialogue.generator,
            "prompt_version": dialogue.prompt_version,
            "turns": [{"role": t.role, "speaker": t.speaker, "text": t.text} for t in dialogue.turns],
            "judge_scores": _json_or_none(dialogue.judge_scores),
            "judge_score": dialogue.judge_score,
            "judge_problem": dialogue.judge_problem,
            "split": split,
        }


def _stream_fact(scenes: Scenes | None, name: str, fallback: Any) -> Any:
    """A fact of scenes.json's ``stream`` when the file states it (even as null), else ``fallback`` (info.json's)."""
    if scenes is None or "stream" not in scenes.model_fields_set or name not in scenes.stream.model_fields_set:
        return fallback
    return getattr(scenes.stream, name)


def _lines(reader: VideoReader, lines_doc: Lines | None, transcript: Transcript | None) -> list[Line]:
    """The most processed lines there are: attributed, else diarized, else the bare transcript's segments."""
    if lines_doc and "lines" in lines_doc.model_fields_set:
        return lines_doc.lines
    diarization: Diarization | None = reader.load("diarize")
    if diarization and "lines" in diarization.model_fields_set:
        return diarization.lines
    if transcript:
        return [Line(line_id=f"T{index:04d}", start_s=segment.start_s, end_s=segment.end_s, text=segment.text,
                     words=segment.words) for index, segment in enumerate(transcript.segments)]
    return []


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _json_or_none(value: Any) -> str | None:
    """A mapping as compact JSON with sorted keys (byte-identical re-runs); None (or empty) stays null."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")) if value else None


# ------------------------------------------------------------------------------------------ writing


class _PartWriter:
    """Rows of one (table, split): buffered up to one row group, written to numbered temporary parts."""

    def __init__(self, staging: Path, table: str, split: str, settings: OutputSettings):
        self.folder = staging / "data" / table
        self.table = table
        self.split = split
        self.schema = table_schema(table)
        self.settings = settings
        self.required = required_fields(table)
        self.buffer: list[dict[str, Any]] = []  # rows not yet converted to Arrow
        self.batches: list[pa.RecordBatch] = []  # converted rows of the current row group
        self.buffer_rows = 0
        self.buffer_bytes = 0
        self.parts: list[Path] = []
        self.rows = 0
        self.sink: pa.NativeFile | None = None
        self.writer: pq.ParquetWriter | None = None

    def add(self, row: dict[str, Any], approx_bytes: int) -> None:
        self.buffer.append(row)
        self.buffer_bytes += approx_bytes
        self.buffer_rows += 1
        if len(self.buffer) >= CONVERT_EVERY:
            self._convert()
        if self.buffer_rows >= self.settings.row_group_rows or self.buffer_bytes >= self.settings.row_group_mb * MB:
            self.flush()

    def _convert(self) -> None:
        """Python rows → one Arrow batch (far smaller than the dicts), checking required values."""
        if not self.buffer:
            return
        batch = pa.RecordBatch.from_pylist(self.buffer, schema=self.schema)
        for name in self.required:
            column = batch.column(name)
            if column.null_count:
                row = next(i for i, v in enumerate(column.is_null().to_pylist()) if v)
                id_field = self.schema.names[0]
                raise ShardError(f"{self.table}: required field {name!r} is missing in row {self.buffer[row].get(id_field)!r}")
        self.batches.append(batch)
        self.buffer = []

    def flush(self) -> None:
        """Write what is buffered as one row group; close the part once it reaches the target size."""
        self._convert()
        if not self.batches:
            return
        if self.writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f".{self.split}.part{len(self.parts):05d}"
            self.parts.append(path)
            self.sink = pa.OSFile(str(path), "wb")
            compression = None if self.settings.compression == "none" else self.settings.compression
            self.writer = pq.ParquetWriter(self.sink, self.schema, compression=compression,
                                           compression_level=self.settings.compression_level,
                                           write_statistics=True, use_dictionary=True)
        self.writer.write_table(pa.Table.from_batches(self.batches, schema=self.schema), row_group_size=self.buffer_rows)
        self.rows += self.buffer_rows
        self.batches, self.buffer_rows, self.buffer_bytes = [], 0, 0
        assert self.sink is not None
        if self.sink.tell() >= self.settings.shard_size_mb * MB:
            self.close_part()

    def close_part(self) -> None:
        if self.writer is not None:
            self.writer.close()
            assert self.sink is not None
            self.sink.close()
            self.writer = self.sink = None

    def close(self) -> None:
        self.flush()
        self.close_part()


def _approx_bytes(table: str, row: dict[str, Any]) -> int:
    if table == "clips":
        return 256 + sum(len(f["bytes"]) for f in row["frames"])
    return 256


def write_shards(workdir: str | Path | WorkDir, out_dir: str | Path, settings: OutputSettings | None = None,
                 video_ids: list[str] | None = None, *, overwrite: bool | None = None) -> ShardSummary:
    """Write the corpus of ``workdir`` to ``out_dir/data/<table>/<split>-NNNNN-of-NNNNN.parquet``, then the
    dataset card (``settings.card``) and a validation report (``settings.check``).

    ``overwrite`` (default ``settings.overwrite``) lets it replace a corpus built from another work dir, files
    it wrote that were changed since, or a corpus with rows by an empty one. ``CorpusError``: nothing written."""
    settings = settings or OutputSettings()
    overwrite = settings.overwrite if overwrite is None else overwrite
    workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
    if not workdir.catalog_path.exists():
        raise FileNotFoundError(f"no catalog in {workdir.root} (run the pipeline first)")
    out = Path(out_dir).expanduser().resolve()
    with RunLock(workdir.lock_path, required=False, reentrant=True):
        with Catalog(workdir, read_only=True) as catalog:
            catalog_id, rebuilt = catalog.catalog_id, catalog.rebuilt
            videos = catalog.videos(video_ids)
            done = catalog.done_stages()
        videos = [v for v in videos if "download" in done.get(v.video_id, set())]
        try:
            out.mkdir(parents=True, exist_ok=True)
            with FileLock(out, FolderBusy, f"another v60k shard is writing {out}"):
                state = inspect_folder(out)
                check_replaceable(state, str(workdir.root), catalog_id, overwrite, rebuilt)
                record = CorpusRecord(workdir=str(workdir.root), catalog_id=catalog_id)
                summary = _write_locked(videos, done, out, settings, state, record, overwrite)
        except OSError as exc:
            raise CorpusError(f"cannot write the corpus to {out}: {exc.strerror or exc}"
                              f"{f' ({exc.filename})' if exc.filename else ''}") from exc
    if settings.check:
        from v60k.dataset.validate import validate

        summary.validation = validate(out)
    return summary


def _write_locked(videos: list[Video], done: dict[str, set[str]], out: Path, settings: OutputSettings,
                  state: FolderState, record: CorpusRecord, overwrite: bool) -> ShardSummary:
    """Stage the shards and the card, check they may replace what is there, then swap them in."""
    _remove_stale(out)
    staging = out / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    summary = ShardSummary(out_dir=str(out))
    plan = plan_splits({v.video_id: v.series for v in videos}, settings.splits, settings.seed, settings.split_method)
    summary.warnings += plan.notes

    writers: dict[tuple[str, str], _PartWriter] = {}
    duplicates = CrossVideoDuplicates.from_settings(settings)
    try:
        for video in sorted(videos, key=lambda v: v.video_id):
            split = plan.split_of[video.video_id]
            summary.videos_by_split[split] = summary.videos_by_split.get(split, 0) + 1
            reader = VideoReader(video, done[video.video_id])
            for table, row in duplicates.rows(video_rows(reader, split)):
                key = (table, split)
                if key not in writers:
                    writers[key] = _PartWriter(staging, table, split, settings)
                writers[key].add(row, _approx_bytes(table, row))
            summary.warnings += reader.warnings
        for key in sorted(writers):
            writers[key].close()
        duplicates.report(summary)
        for table in TABLES:  # an empty table still gets one (empty) shard, so every config loads
            if not any(t == table and w.rows for (t, _), w in writers.items()):
                empty = _PartWriter(staging, table, next(iter(settings.splits), SPLITS[0]), settings)
                empty.writer = None
                empty.folder.mkdir(parents=True, exist_ok=True)
                path = empty.folder / f".{empty.split}.part00000"
                pq.write_table(table_schema(table).empty_table(), path,
                               compression=None if settings.compression == "none" else settings.compression)
                empty.parts.append(path)
                writers[(table, empty.split)] = empty
        for (table, split), writer in sorted(writers.items()):
            count = len(writer.parts)
            summary.rows.setdefault(table, {})[split] = writer.rows
            for index, part in enumerate(writer.parts):
                final = part.with_name(f"{split}-{index:05d}-of-{count:05d}.parquet")
                os.replace(part, final)
                summary.files.append(f"data/{table}/{final.name}")
                summary.bytes += final.stat().st_size
        summary.files.sort()
        record.rows = {table: sum(summary.rows.get(table, {}).values()) for table in TABLES}
        check_not_emptied(state, record.rows, str(record.workdir), overwrite)
        summary.warnings += shrinkage(state, record.rows)
        if settings.card:
            from v60k.dataset.card import write_card

            write_card(staging, license=settings.license, pretty_name=settings.pretty_name,
                       notes=duplicates.card_lines())
        record.files = {rel: file_facts(staging / rel) for rel in summary.files}
        if settings.card:
            record.files["README.md"] = file_facts(staging / "README.md")
        elif state.record and "README.md" in state.ours:  # the card v60k wrote before stays its own
            record.files["README.md"] = state.record.files["README.md"]
        _swap_in(staging / "data", out / "data")
        if settings.card:
            os.replace(staging / "README.md", out / "README.md")
            summary.card = str(out / "README.md")
        record.write(out)
    finally:
        for writer in writers.values():
            writer.close_part()
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _remove_stale(out: Path) -> None:
    """Staging folders left by a writer that was killed (its process is gone)."""
    for leftover in [*out.glob(".staging-*"), *out.glob(".data-old-*")]:
        try:
            pid = int(leftover.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(leftover, ignore_errors=True)
        except PermissionError:
            pass  # another user's live process


def _swap_in(new: Path, target: Path) -> None:
    """Replace ``target`` (a folder) by ``new``; the old one is removed only once the new one is in place."""
    new.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}-old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
