"""Validate a shard folder (as written by ``write_shards`` or downloaded from the Hub): schema and meaning.

    report = validate("corpus")
    print(report.render()); sys.exit(0 if report.ok else 1)

Checks: shard names and places (``data/<table>/<split>-NNNNN-of-NNNNN.parquet``), readable Parquet, the table
a shard declares, required columns and their types (a nullable column added after the schema version a
shard was written with may be absent: a warning, read as null), required values; unique ids; start < end
inside the video's duration; words inside their line; every reference resolves (utterance / clip / dialogue → video,
dialogue → clip, clip → utterances); characters of the video's cast; one split per video and per series;
dialogue turns non-empty and alternating user / character; judge scores null or
within 1-10. Each issue names the file, row group and row.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from v60k.dataset.reader import SHARD_NAME
from v60k.dataset.schema import (
    META_TABLE,
    META_VERSION,
    TABLES,
    load_table_spec,
    required_fields,
    table_schema,
    version_key,
)
from v60k.dataset.splits import empty_eval_splits

CHECK_ORDER = ("videos", "utterances", "clips", "dialogues")
GENERATION_TYPES = {"raw_lines", "llm"}
JUDGE_RANGE = (1, 10)  # the eval rubric's scale
JPEG_MAGIC = b"\xff\xd8"


@dataclass
class Issue:
    severity: str  # error | warning
    check: str
    message: str
    file: str | None = None
    row_group: int | None = None
    row: int | None = None

    def render(self) -> str:
        where = self.file or "(corpus)"
        if self.row_group is not None:
            where += f" [row group {self.row_group}" + (f", row {self.row}]" if self.row is not None else "]")
        return f"{self.severity.upper():7} {where}: {self.message}"


@dataclass
class ValidationReport:
    root: str
    issues: list[Issue] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors and not any(k.startswith("error:") for k in self.suppressed)

    def render(self) -> str:
        lines = [f"Validation of {self.root}: {len(self.files)} shard(s)"]
        for table in TABLES:
            if table in self.rows:
                counts = ", ".join(f"{split} {n}" for split, n in sorted(self.rows[table].items()))
                lines.append(f"  {table:<11} {counts}")
        lines += [issue.render() for issue in self.issues]
        for key, count in sorted(self.suppressed.items()):
            severity, check = key.split(":", 1)
            lines.append(f"{severity.upper():7} ... and {count} more {check} issue(s) not shown")
        n_errors = len(self.errors) + sum(n for k, n in self.suppressed.items() if k.startswith("error:"))
        n_warnings = len(self.warnings) + sum(n for k, n in self.suppressed.items() if k.startswith("warning:"))
        lines.append(("OK" if self.ok else "FAILED") + f": {n_errors} error(s), {n_warnings} warning(s)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "ok": self.ok, "files": self.files, "rows": self.rows,
                "issues": [vars(i) for i in self.issues], "suppressed": self.suppressed}


class _Collector:
    def __init__(self, report: ValidationReport, max_per_check: int):
        self.report = report
        self.max = max_per_check
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, severity: str, check: str, message: str, file: str | None = None,
            row_group: int | None = None, row: int | None = None) -> None:
        key = f"{severity}:{check}"
        self.counts[key] += 1
        if self.counts[key] > self.max:
            self.report.suppressed[key] = self.report.suppressed.get(key, 0) + 1
        else:
            self.report.issues.append(Issue(severity, check, message, file, row_group, row))

    def error(self, check: str, message: str, *where: Any) -> None:
        self.add("error", check, message, *where)

    def warning(self, check: str, message: str, *where: Any) -> None:
        self.add("warning", check, message, *where)


def same_type(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Types equal up to list child names and nullability (other writers name list items differently)."""
    if pa.types.is_list(expected) or pa.types.is_large_list(expected):
        return (pa.types.is_list(actual) or pa.types.is_large_list(actual)) and same_type(actual.value_type,
                                                                                           expected.value_type)
    if pa.types.is_struct(expected):
        if not pa.types.is_struct(actual) or actual.num_fields != expected.num_fields:
            return False
        return all(actual.field(i).name == expected.field(i).name and same_type(actual.field(i).type, expected.field(i).type)
                   for i in range(expected.num_fields))
    if pa.types.is_string(expected):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    if pa.types.is_binary(expected):
        return pa.types.is_binary(actual) or pa.types.is_large_binary(actual)
    return actual.equals(expected)


@dataclass
class _Seen:
    videos: dict[str, tuple[str, float | None, frozenset[str]]] = field(default_factory=dict)
    series_splits: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    utterances: set[str] = field(default_factory=set)
    clips: dict[str, tuple[str, str]] = field(default_factory=dict)
    dialogues: set[str] = field(default_factory=set)
    incomplete: set[str] = field(default_factory=set)  # tables with a file that could not be checked


def validate(root: str | Path, max_per_check: int = 20, tolerance_s: float = 0.05) -> ValidationReport:
    """Check every shard under ``root/data``; the report lists each issue with its file / row group / row."""
    root = Path(root)
    report = ValidationReport(root=str(root))
    out = _Collector(report, max_per_check)
    if not root.is_dir():
        out.error("layout", f"no such folder: {root}")
        return report
    shards: dict[str, list[tuple[Path, str]]] = defaultdict(list)
    numbering: dict[tuple[str, str], list[tuple[int, int, str]]] = defaultdict(list)
    for path in sorted(root.rglob("*.parquet")):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue  # staging folders, caches
        report.files.append(rel)
        parts = rel.split("/")
        if len(parts) != 3 or parts[0] != "data" or parts[1] not in TABLES:
            out.error("layout", f"shard outside data/<table>/ (tables: {', '.join(TABLES)})", rel)
            continue
        match = SHARD_NAME.match(parts[2])
        if not match:
            out.error("layout", "shard name is not <split>-NNNNN-of-NNNNN.parquet", rel)
            continue
        shards[parts[1]].append((path, match["split"]))
        numbering[(parts[1], match["split"])].append((int(match["index"]), int(match["count"]), rel))
    if not report.files:
        out.error("layout", "no Parquet shards under data/")
    for (table, split), entries in sorted(numbering.items()):
        counts = {count for _, count, _ in entries}
        indices = sorted(index for index, _, _ in entries)
        if len(counts) != 1 or indices != list(range(next(iter(counts)))):
            out.error("layout", f"{table}/{split}: shard numbering is incomplete or inconsistent "
                      f"(have {indices} of {sorted(counts)})", f"data/{table}/")

    seen = _Seen()
    for table in CHECK_ORDER:
        for path, split in shards.get(table, []):
            _check_file(path, root, table, split, seen, out, report, tolerance_s)
    for table in sorted(seen.incomplete):
        out.warning("skipped", f"references into {table} not checked: some of its shards could not be read")
    for series, splits in sorted(seen.series_splits.items()):
        if len(splits) > 1:
            out.error("split_leakage", f"series {series!r} has videos in several splits: {sorted(splits)}")
    for split in empty_eval_splits(report.rows.get("videos", {})) if report.rows.get("videos") else []:
        out.warning("empty_split", f"the {split!r} split has no videos: nothing to evaluate on it")
    _check_card(root, out)
    return report


def _check_file(path: Path, root: Path, table: str, split: str, seen: _Seen, out: _Collector,
                report: ValidationReport, tol: float) -> None:
    rel = path.relative_to(root).as_posix()
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
    except Exception as exc:  # ArrowInvalid, OSError: truncated or not Parquet at all
        out.error("unreadable", f"cannot read as Parquet (truncated or corrupt?): {exc}", rel)
        seen.incomplete.add(table)
        return
    declared = (schema.metadata or {}).get(META_TABLE)
    if declared is not None and declared.decode() != table:
        out.error("wrong_table", f"this is a shard of table {declared.decode()!r}, found in data/{table}/", rel)
        seen.incomplete.add(table)
        return
    expected = table_schema(table)
    written = (schema.metadata or {}).get(META_VERSION, b"").decode() or "unknown"
    problems, absent = 0, []
    for spec in expected:
        if spec.name not in schema.names and _added_later(table, spec.name, written):
            absent.append(spec.name)
        elif spec.name not in schema.names:
            out.error("missing_column", f"missing column {spec.name!r} ({spec.type})", rel)
            problems += 1
        elif not same_type(schema.field(spec.name).type, spec.type):
            out.error("wrong_type", f"column {spec.name!r} is {schema.field(spec.name).type}, expected {spec.type}", rel)
            problems += 1
    if declared is None and problems:
        guess = next((t for t in TABLES if t != table and table_schema(t).names[0] in schema.names), None)
        if guess:
            out.error("wrong_table", f"looks like a shard of table {guess!r} (has {table_schema(guess).names[0]!r}), "
                      f"found in data/{table}/", rel)
    for name in schema.names:
        if name not in expected.names:
            out.warning("extra_column", f"column {name!r} is not in the {table} schema", rel)
    if absent:
        out.warning("older_schema", f"a {table} {written} shard: column(s) {', '.join(absent)} (added later) "
                    "absent, read as null", rel)
    if problems:
        out.warning("skipped", "row checks skipped for this file (schema errors above)", rel)
        seen.incomplete.add(table)
        return
    required = required_fields(table)
    check_row = {"videos": _video_row, "utterances": _utterance_row, "clips": _clip_row,
                 "dialogues": _dialogue_row}[table]
    present = [name for name in expected.names if name not in absent]
    for group in range(parquet.num_row_groups):
        try:
            rows = [{**dict.fromkeys(absent), **row}
                    for row in parquet.read_row_group(group, columns=present).to_pylist()]
        except Exception as exc:
            out.error("unreadable", f"cannot read row group: {exc}", rel, group)
            seen.incomplete.add(table)
            continue
        report.rows.setdefault(table, {})
        report.rows[table][split] = report.rows[table].get(split, 0) + len(rows)
        for index, row in enumerate(rows):
            where = (rel, group, index)
            missing = [name for name in required if row.get(name) is None]
            if missing:
                out.error("required", f"{_ident(table, row)}: required value(s) missing: {', '.join(missing)}", *where)
                continue
            if row["split"] != split:
                out.error("split_leakage", f"{_ident(table, row)}: split {row['split']!r} in a {split!r} shard", *where)
            check_row(row, seen, out, where, tol)


def _added_later(table: str, column: str, written: str) -> bool:
    """Whether ``column`` is nullable and newer than the schema version a shard was written with (so a shard
    of that version rightly lacks it)."""
    spec = load_table_spec(table).field(column)
    return spec.nullable and written != "unknown" and version_key(written) < version_key(spec.since)


def _ident(table: str, row: dict[str, Any]) -> str:
    key = table_schema(table).names[0]
    return f"{key}={row.get(key)!r}"


def _span(row: dict[str, Any], what: str, out: _Collector, where: tuple, duration: float | None, tol: float) -> None:
    if not row["start_s"] < row["end_s"]:
        out.error("time", f"{what}: start_s {row['start_s']} is not before end_s {row['end_s']}", *where)
    if row["start_s"] < -tol or (duration is not None and row["end_s"] > duration + tol):
        out.error("time", f"{what}: [{row['start_s']}, {row['end_s']}] is outside the video (0-{duration} s)", *where)


def _video_of(row: dict[str, Any], what: str, seen: _Seen, out: _Collector, where: tuple):
    video = seen.videos.get(row["video_id"])
    if video is None:
        if "videos" not in seen.incomplete:
            out.error("reference", f"{what}: video_id {row['video_id']!r} is not in the videos table", *where)
    elif video[0] != row["split"]:
        out.error("split_leakage", f"{what}: split {row['split']!r} but its video is in {video[0]!r}", *where)
    return video


def _video_row(row: dict[str, Any], seen: _Seen, out: _Collector, where: tuple, tol: float) -> None:
    what = f"video_id={row['video_id']!r}"
    if row["video_id"] in seen.videos:
        out.error("unique", f"{what}: duplicate video_id", *where)
        return
    duration = row["duration_s"]
    if duration is not None and duration <= 0:
        out.error("time", f"{what}: duration_s {duration} is not positive", *where)
    for n, scene in enumerate(row["scenes"]):
        if scene is None or scene["start_s"] is None or scene["end_s"] is None:
            out.error("required", f"{what}: scene {n} lacks start_s / end_s", *where)
            continue
        _span(scene, f"{what} scene {n}", out, where, duration, tol)
    seen.videos[row["video_id"]] = (row["split"], duration, frozenset(c for c in row["characters"] if c))
    if row["series"]:
        seen.series_splits[row["series"]].add(row["split"])


def _utterance_row(row: dict[str, Any], seen: _Seen, out: _Collector, where: tuple, tol: float) -> None:
    what = f"utterance_id={row['utterance_id']!r}"
    if row["utterance_id"] in seen.utterances:
        out.error("unique", f"{what}: duplicate utterance_id", *where)
    seen.utterances.add(row["utterance_id"])
    if row["utterance_id"] != f"{row['video_id']}-{row['line_id']}":
        out.error("ids", f"{what}: id is not <video_id>-<line_id>", *where)
    video = _video_of(row, what, seen, out, where)
    _span(row, what, out, where, video[1] if video else None, tol)
    if video and row["character"] is not None and row["character"] not in video[2]:
        out.error("cast", f"{what}: character {row['character']!r} is not in the video's cast {sorted(video[2])}", *where)
    confidence = row["attribution_confidence"]
    if confidence is not None and not 0.0 <= confidence <= 1.0:
        out.error("range", f"{what}: attribution_confidence {confidence} is outside 0-1", *where)
    if not row["text"].strip():
        out.warning("empty_text", f"{what}: empty text", *where)
    for n, word in enumerate(row["words"]):
        if word["start_s"] is None or word["end_s"] is None or word["start_s"] > word["end_s"] \
                or word["start_s"] < row["start_s"] - tol or word["end_s"] > row["end_s"] + tol:
            out.error("words", f"{what}: word {n} {word['text']!r} [{word['start_s']}, {word['end_s']}] is not "
                      f"inside its line [{row['start_s']}, {row['end_s']}]", *where)
            break


def _clip_row(row: dict[str, Any], seen: _Seen, out: _Collector, where: tuple, tol: float) -> None:
    what = f"clip_id={row['clip_id']!r}"
    if row["clip_id"] in seen.clips:
        out.error("unique", f"{what}: duplicate clip_id", *where)
    seen.clips[row["clip_id"]] = (row["video_id"], row["split"])
    video = _video_of(row, what, seen, out, where)
    _span(row, what, out, where, video[1] if video else None, tol)
    times, frames = row["frame_times_s"], row["frames"]
    if len(times) != len(frames):
        out.error("frames", f"{what}: {len(frames)} frames but {len(times)} frame_times_s", *where)
    if times != sorted(times):
        out.error("frames", f"{what}: frame_times_s are not in temporal order", *where)
    if any(t < row["start_s"] - tol or t > row["end_s"] + tol for t in times):
        out.error("frames", f"{what}: a frame time lies outside the clip [{row['start_s']}, {row['end_s']}]", *where)
    for n, frame in enumerate(frames):
        if not frame or not frame["bytes"] or not frame["bytes"].startswith(JPEG_MAGIC):
            out.error("frames", f"{what}: frame {n} is not a JPEG image", *where)
            break
    missing = [u for u in row["utterance_ids"] if u not in seen.utterances]
    if missing and "utterances" not in seen.incomplete:
        out.error("reference", f"{what}: utterance_ids not in the utterances table: {missing[:3]}", *where)


def _dialogue_row(row: dict[str, Any], seen: _Seen, out: _Collector, where: tuple, tol: float) -> None:
    what = f"dialogue_id={row['dialogue_id']!r}"
    if row["dialogue_id"] in seen.dialogues:
        out.error("unique", f"{what}: duplicate dialogue_id", *where)
    seen.dialogues.add(row["dialogue_id"])
    clip = seen.clips.get(row["clip_id"])
    if clip is None:
        if "clips" not in seen.incomplete:
            out.error("reference", f"{what}: clip_id {row['clip_id']!r} is not in the clips table", *where)
    elif clip[0] != row["video_id"]:
        out.error("reference", f"{what}: its clip belongs to video {clip[0]!r}, not {row['video_id']!r}", *where)
    video = _video_of(row, what, seen, out, where)
    if video and row["character"] not in video[2]:
        out.error("cast", f"{what}: character {row['character']!r} is not in the video's cast {sorted(video[2])}", *where)
    if row["generation_type"] not in GENERATION_TYPES:
        out.error("range", f"{what}: generation_type {row['generation_type']!r} is not one of "
                  f"{sorted(GENERATION_TYPES)}", *where)
    _judge_scores(row, what, out, where)
    turns = row["turns"]
    if not turns:
        out.error("turns", f"{what}: no turns", *where)
        return
    for n, turn in enumerate(turns):
        if turn["role"] not in ("user", "character"):
            out.error("turns", f"{what}: turn {n} has role {turn['role']!r} (user or character)", *where)
            return
        if not (turn["text"] or "").strip():
            out.error("turns", f"{what}: turn {n} is empty", *where)
            return
        if n and turn["role"] == turns[n - 1]["role"]:
            out.error("turns", f"{what}: turns {n - 1} and {n} are both {turn['role']!r} (must alternate)", *where)
            return
        if turn["role"] == "character" and turn["speaker"] not in (None, row["character"]):
            out.error("turns", f"{what}: character turn {n} is spoken by {turn['speaker']!r}, not "
                      f"{row['character']!r}", *where)
            return
    if turns[0]["role"] != "user":
        out.warning("turns", f"{what}: opens with the character, not the user", *where)


def _judge_scores(row: dict[str, Any], what: str, out: _Collector, where: tuple) -> None:
    """``judge_scores`` (a JSON object of metric → score) and ``judge_score`` are null or within the scale."""
    low, high = JUDGE_RANGE
    mean = row["judge_score"]
    if mean is not None and not low <= mean <= high:
        out.error("range", f"{what}: judge_score {mean} is outside {low}-{high}", *where)
    if row["judge_scores"] is None:
        return
    try:
        scores = json.loads(row["judge_scores"])
    except ValueError:
        scores = None
    if not isinstance(scores, dict):
        out.error("range", f"{what}: judge_scores is not a JSON object of metric -> score", *where)
        return
    bad = {k: v for k, v in scores.items()
           if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high}
    if bad:
        out.error("range", f"{what}: judge_scores outside {low}-{high}: {bad}", *where)


def _check_card(root: Path, out: _Collector) -> None:
    """The card's configs point at shards that exist."""
    card = root / "README.md"
    if not card.exists():
        out.warning("card", "no dataset card (README.md)")
        return
    from v60k.dataset.card import read_card_header

    try:
        header = read_card_header(card)
    except ValueError as exc:
        out.error("card", f"README.md: {exc}", "README.md")
        return
    for config in header.get("configs") or []:
        for entry in config.get("data_files") or []:
            if not list(root.glob(entry.get("path", ""))):
                out.error("card", f"config {config.get('config_name')!r} split {entry.get('split')!r}: "
                          f"{entry.get('path')!r} matches no file", "README.md")
