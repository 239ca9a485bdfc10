"""The corpus report: one self-contained HTML page (inline SVG, inline JPEG thumbnails, a few lines of inline
JS, no external resources) with a gallery of sample clips (frame thumbnails in temporal order with their times,
the summary, one dialogue per character, the attribution confidence of every line), video durations, lines
and dialogues per character, attribution confidence, scenes per video, languages, per-dialogue statistics
(turns, tokens, judge scores when the dialogues carry them) and cost per dialogue, rejected items by reason
with an example each, per-stage item outcomes and totals, failures by reason, tokens and cost, and an
evaluation section when results are given.

    write_report("v60k-work", "report.html")                       # corpus facts from the work dir
    write_report("corpus", "report.html", eval_results=json.load(open("eval.json")))
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from v60k.core.catalog import Catalog
from v60k.core.documents import Generation
from v60k.core.workdir import WorkDir, atomic_path
from v60k.dataset import reader

TEMPLATE = Path(__file__).with_name("report_template.html")
GALLERY_CLIPS = 4  # sample clips shown, from as many videos as there are
THUMB_WIDTH = 160  # px
SCORE_KEYS = ("scores", "judge_scores")  # where a dialogue carries its judge scores ({metric: number})


@dataclass
class CorpusFacts:
    """What the plots show, gathered from shards or from a work dir."""

    durations_s: list[float] = field(default_factory=list)
    scenes_per_video: list[int] = field(default_factory=list)
    languages: Counter = field(default_factory=Counter)
    lines_per_character: Counter = field(default_factory=Counter)
    dialogues_per_character: Counter = field(default_factory=Counter)
    confidences: list[float] = field(default_factory=list)
    unattributed: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, dict[str, float]] = field(default_factory=dict)
    stage_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    stage_items: dict[str, dict[str, Any]] = field(default_factory=dict)  # {stage: {done, rejected{}, failed{}}}
    stage_totals: dict[str, dict[str, float]] = field(default_factory=dict)  # {stage: {name: value}}
    gallery: list[dict[str, Any]] = field(default_factory=list)  # sample clips (see ``_gallery_clip``)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # generation.json's ``rejected`` items
    dialogue_stats: list[dict[str, Any]] = field(default_factory=list)  # {turns, tokens, scores, type}
    source: str = ""


class _GalleryPicker:
    """Chooses the sample clips while the corpus streams by: the first clip with frames and a dialogue of each
    video, up to ``GALLERY_CLIPS``; keeps those clips' lines and dialogues."""

    def __init__(self, limit: int = GALLERY_CLIPS):
        self.limit = limit
        self.clips: dict[str, dict[str, Any]] = {}
        self.videos: set[str] = set()
        self._lines: dict[str, dict[str, Any]] = {}  # utterance_id -> line, of the current video
        self._pending: dict[str, dict[str, Any]] = {}  # the current video's candidate clips

    def start_video(self) -> None:
        self._lines, self._pending = {}, {}

    def add(self, table: str, row: dict[str, Any]) -> None:
        room = len(self.clips) < self.limit
        if table == "utterances" and room:
            self._lines[row["utterance_id"]] = row
        elif table == "clips" and room and row["video_id"] not in self.videos and row.get("frame_times_s"):
            self._pending[row["clip_id"]] = row
        elif table == "dialogues":
            if row["clip_id"] in self._pending and room:
                clip = self._pending.pop(row["clip_id"])
                self._pending.clear()  # one clip per video
                self.videos.add(row["video_id"])
                lines = [self._lines[u] for u in clip.get("utterance_ids") or [] if u in self._lines]
                self.clips[clip["clip_id"]] = {"clip": clip, "lines": lines, "dialogues": {}}
            if row["clip_id"] in self.clips:
                self.clips[row["clip_id"]]["dialogues"].setdefault(row.get("character") or "?", row)


def facts_from_shards(root: str | Path) -> CorpusFacts:
    root = Path(root)
    facts = CorpusFacts(source=str(root))
    videos = reader.read_rows(root, "videos", columns=["video_id", "title", "duration_s", "scenes", "language"])
    for video in videos:
        _add_video(facts, video["duration_s"], len(video["scenes"] or []), video["language"])
    utterances = reader.read_rows(root, "utterances", columns=["utterance_id", "video_id", "start_s", "text",
                                                              "character", "attribution_confidence"])
    for utterance in utterances:
        _add_utterance(facts, utterance["character"], utterance["attribution_confidence"])
    dialogues = reader.read_rows(root, "dialogues", columns=["dialogue_id", "clip_id", "video_id", "character",
                                                            "generation_type", "turns", *SCORE_KEYS])
    for dialogue in dialogues:
        _add_dialogue(facts, dialogue)
    clips = reader.read_rows(root, "clips", columns=["clip_id", "video_id", "start_s", "end_s", "utterance_ids",
                                                    "frame_times_s", "summary"])
    picker = _GalleryPicker()
    rows_of: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for table, rows in (("utterances", utterances), ("clips", clips), ("dialogues", dialogues)):
        for row in rows:
            rows_of.setdefault((table, row["video_id"]), []).append(row)
    for video in videos:
        picker.start_video()
        for table in ("utterances", "clips", "dialogues"):
            for row in rows_of.get((table, video["video_id"]), []):
                picker.add(table, row)
    chosen = list(picker.clips)
    frames = {row["clip_id"]: row for row in reader.read_rows(root, "clips", columns=["clip_id", "frames"],
                                                             filters=[("clip_id", "in", chosen)])} if chosen else {}
    titles = {v["video_id"]: v.get("title") for v in videos}
    for clip_id, picked in picker.clips.items():
        images = [(f or {}).get("bytes") or b"" for f in (frames.get(clip_id) or {}).get("frames") or []]
        facts.gallery.append(_gallery_clip(picked, images, titles.get(picked["clip"]["video_id"])))
    facts.counts = {"videos": len(videos), "utterances": len(utterances), "clips": len(clips),
                    "dialogues": len(dialogues)}
    return facts


def facts_from_workdir(workdir: WorkDir) -> CorpusFacts:
    """Corpus facts read the way the shard writer reads them (frames only for the gallery), plus the catalog's."""
    from v60k.dataset.writer import VideoReader, video_rows

    facts = CorpusFacts(source=str(workdir.root))
    counts: Counter = Counter()
    with Catalog(workdir, read_only=True) as catalog:
        done = catalog.done_stages()
        videos = [v for v in catalog.videos() if "download" in done.get(v.video_id, set())]
    picker = _GalleryPicker()
    folders: dict[str, Path] = {}
    for video in videos:
        folders[video.video_id] = video.dir
        picker.start_video()
        video_reader = VideoReader(video, done[video.video_id])
        generation: Generation = video_reader.load("generate") or Generation()
        facts.rejected += [{"video_id": video.video_id, **item} for item in generation.rejected
                           if isinstance(item, dict)]
        scores = {d.dialogue_id: d for d in generation.dialogues}
        for table, row in video_rows(video_reader, split="", include_frames=False):
            counts[table] += 1
            picker.add(table, row)
            if table == "videos":
                _add_video(facts, row["duration_s"], len(row["scenes"]), row["language"])
            elif table == "utterances":
                _add_utterance(facts, row["character"], row["attribution_confidence"])
            elif table == "dialogues":
                raw = scores.get(row["dialogue_id"])
                judged = raw.model_dump(include=set(SCORE_KEYS), exclude_unset=True) if raw else {}
                _add_dialogue(facts, {**row, **judged})
    titles = {v.video_id: v.title for v in videos}
    for picked in picker.clips.values():
        clip = picked["clip"]
        images = []
        for frame in clip.get("frames") or []:  # paths are "<video_id>/<path in the video dir>"
            try:
                images.append((folders[clip["video_id"]] / frame["path"].split("/", 1)[1]).read_bytes())
            except (OSError, IndexError):
                images.append(b"")
        facts.gallery.append(_gallery_clip(picked, images, titles.get(clip["video_id"])))
    facts.counts = {t: counts.get(t, 0) for t in ("videos", "utterances", "clips", "dialogues")}
    return facts


def _gallery_clip(picked: dict[str, Any], images: list[bytes], title: str | None) -> dict[str, Any]:
    """A sample clip as the gallery shows it: thumbnails with their times (temporal order), summary, lines
    with their attribution confidence, one dialogue per character."""
    clip = picked["clip"]
    frames = sorted(zip(clip.get("frame_times_s") or [], images, strict=False), key=lambda f: f[0])
    return {"clip_id": clip["clip_id"], "video_id": clip["video_id"], "title": title,
            "start_s": clip.get("start_s"), "end_s": clip.get("end_s"), "summary": clip.get("summary") or "",
            "frames": [(float(t), _thumbnail(data)) for t, data in frames],
            "lines": [{"start_s": ln.get("start_s"), "character": ln.get("character"), "text": ln.get("text"),
                       "confidence": ln.get("attribution_confidence")} for ln in picked["lines"]],
            "dialogues": [{"character": name, "turns": d.get("turns") or []}
                          for name, d in sorted(picked["dialogues"].items())]}


def _thumbnail(data: bytes) -> str | None:
    """A small JPEG data URL of a frame (None when it cannot be decoded)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMB_WIDTH, THUMB_WIDTH))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=75)
    except Exception:  # PIL raises many types for broken data
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _add_dialogue(facts: CorpusFacts, dialogue: dict[str, Any]) -> None:
    facts.dialogues_per_character[dialogue.get("character")] += 1
    turns = dialogue.get("turns") or []
    scores = next((dialogue[k] for k in SCORE_KEYS if isinstance(dialogue.get(k), dict)), None)
    facts.dialogue_stats.append({
        "turns": len(turns),
        "tokens": sum(estimate_tokens(str(t.get("text") or "")) for t in turns),
        "generation_type": dialogue.get("generation_type") or "unknown",
        "scores": {k: float(v) for k, v in (scores or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)},
    })


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate of a text's tokens: one per four characters (at least one per word)."""
    return max(len(text.split()), math.ceil(len(text) / 4)) if text.strip() else 0


def _add_video(facts: CorpusFacts, duration: float | None, scenes: int, language: str | None) -> None:
    if duration:
        facts.durations_s.append(float(duration))
    facts.scenes_per_video.append(scenes)
    facts.languages[language or "unknown"] += 1


def _add_utterance(facts: CorpusFacts, character: str | None, confidence: float | None) -> None:
    if character:
        facts.lines_per_character[character] += 1
    else:
        facts.unattributed += 1
    if confidence is not None:
        facts.confidences.append(float(confidence))


def add_catalog_facts(facts: CorpusFacts, workdir: WorkDir) -> None:
    """Failures, usage, state counts and, where stages report them, per-stage item outcomes and totals: what
    ``v60k status`` shows (``pipeline.status``)."""
    from v60k.core.pipeline import status

    state = status(workdir)
    facts.failures = state.get("failures") or []
    facts.usage = state.get("usage") or {}
    facts.stage_counts = {stage: dict(counts) for stage, counts in (state.get("stages") or {}).items()
                          if isinstance(counts, dict)}
    facts.stage_items, facts.stage_totals = stage_outcomes(state)


def stage_outcomes(state: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    """({stage: {done, rejected{}, failed{}}}, {stage: {name: value}}) from a status: top-level ``items`` /
    ``totals`` keyed by stage, or an ``items`` / ``totals`` entry in each stage's counts."""
    items: dict[str, dict[str, Any]] = {}
    totals: dict[str, dict[str, float]] = {}
    for stage, entry in (state.get("items") or {}).items():
        if isinstance(entry, dict):
            items[stage] = entry
    for stage, entry in (state.get("totals") or {}).items():
        if isinstance(entry, dict):
            totals[stage] = entry
    for stage, counts in (state.get("stages") or {}).items():
        if isinstance(counts, dict) and isinstance(counts.get("items"), dict):
            items.setdefault(stage, counts["items"])
        if isinstance(counts, dict) and isinstance(counts.get("totals"), dict):
            totals.setdefault(stage, counts["totals"])
    return items, totals


# ---------------------------------------------------------------------------------------------- charts


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"


def bar_chart(items: list[tuple[str, float]], label: str, alt: bool = False, max_items: int = 20) -> str:
    """Horizontal bars, one per (label, value), largest first."""
    items = sorted(items, key=lambda kv: (-kv[1], kv[0]))[:max_items]
    if not items:
        return '<p class="empty">no data</p>'
    top = max(v for _, v in items) or 1
    row_h, left, width = 24, 170, 640
    height = row_h * len(items) + 10
    parts = [f'<svg data-chart="bar" viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(label)}">']
    for i, (name, value) in enumerate(items):
        y = 5 + i * row_h
        w = max(1.0, (width - left - 70) * value / top)
        short = name if len(name) <= 24 else name[:23] + "…"
        parts.append(f'<text x="{left - 6}" y="{y + 16}" text-anchor="end">{_esc(short)}</text>')
        parts.append(f'<rect class="bar{" alt" if alt else ""}" x="{left}" y="{y + 3}" width="{w:.1f}" height="{row_h - 7}"'
                     f' data-label="{_esc(name)}" data-value="{_esc(_fmt(value))}"><title>{_esc(name)}: {_esc(_fmt(value))}'
                     f'</title></rect>')
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 16}">{_esc(_fmt(value))}</text>')
    parts.append("</svg>")
    return "".join(parts) + '<p class="note hover-value">&nbsp;</p>'


def histogram(values: list[float], label: str, bins: int = 12, lo: float | None = None, hi: float | None = None,
              integer: bool = False) -> str:
    """Vertical bars of counts per bin, with the bin edges on the x axis."""
    if not values:
        return '<p class="empty">no data</p>'
    lo = min(values) if lo is None else lo
    hi = max(values) if hi is None else hi
    if integer:
        lo, hi = math.floor(lo), math.floor(hi) + 1
        bins = max(1, min(bins, int(hi - lo)))
    if hi <= lo:
        hi = lo + 1
    step = (hi - lo) / bins
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, max(0, int((value - lo) / step)))] += 1
    width, height, bottom, left = 640, 220, 30, 40
    top = max(counts) or 1
    bar_w = (width - left - 10) / bins
    parts = [f'<svg data-chart="histogram" viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(label)}">',
             f'<line class="axis" x1="{left}" y1="{height - bottom}" x2="{width - 5}" y2="{height - bottom}"/>',
             f'<text x="4" y="14">{top}</text><text x="4" y="{height - bottom}">0</text>']
    for i, count in enumerate(counts):
        h = (height - bottom - 20) * count / top
        x = left + i * bar_w
        a, b = lo + i * step, lo + (i + 1) * step
        edge = f"{a:.0f}" if integer or step >= 1 else f"{a:.2f}"
        name = f"{int(a)}" if integer and step == 1 else f"{a:.2f}–{b:.2f}"
        parts.append(f'<rect class="bar" x="{x + 1:.1f}" y="{height - bottom - h:.1f}" width="{bar_w - 2:.1f}"'
                     f' height="{h:.1f}" data-label="{_esc(name)}" data-value="{count}">'
                     f'<title>{_esc(name)}: {count}</title></rect>')
        if bins <= 14 or i % 2 == 0:
            parts.append(f'<text x="{x + 2:.1f}" y="{height - bottom + 16}">{_esc(edge)}</text>')
    parts.append("</svg>")
    return "".join(parts) + f'<p class="note hover-value">{_esc(label)}</p>'


def _table(headers: list[str], rows: list[list[Any]], numeric_from: int = 1) -> str:
    if not rows:
        return '<p class="empty">none</p>'
    head = "".join(f'<th class="{"num" if i >= numeric_from else ""}">{_esc(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(
        f'<td class="{"num" if i >= numeric_from else ""}">{_esc(_fmt(c) if isinstance(c, (int, float)) else c)}</td>'
        for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, content: str, note: str = "", wide: bool = False) -> str:
    note_html = f'<p class="note">{_esc(note)}</p>' if note else ""
    return f'<section class="{"wide" if wide else ""}"><h2>{_esc(title)}</h2>{content}{note_html}</section>'


def gallery_section(clips: list[dict[str, Any]]) -> str:
    """Sample clips: thumbnails in temporal order with their times, the summary, the lines with their
    attribution confidence, one dialogue per character."""
    if not clips:
        return _section("Sample clips", '<p class="empty">no clip with frames and a dialogue</p>', wide=True)
    cards = []
    for clip in clips:
        thumbs = "".join(
            f'<figure class="thumb">{_img(uri, t)}<figcaption>{t:.2f} s</figcaption></figure>'
            for t, uri in clip["frames"])
        lines = _table(["time (s)", "character", "confidence", "line"], [
            [f"{ln['start_s']:.1f}" if ln.get("start_s") is not None else "", ln.get("character") or "(none)",
             "n/a" if ln.get("confidence") is None else f"{ln['confidence']:.2f}", ln.get("text") or ""]
            for ln in clip["lines"]], numeric_from=9) if clip["lines"] else '<p class="empty">no lines</p>'
        dialogues = "".join(
            f'<div class="dialogue"><h4>{_esc(d["character"])}</h4>' + "".join(
                f'<p class="turn {"character" if t.get("role") == "character" else "user"}">'
                f'<b>{_esc(t.get("speaker") or t.get("role") or "")}:</b> {_esc(t.get("text") or "")}</p>'
                for t in d["turns"]) + "</div>" for d in clip["dialogues"])
        span = (f" · {clip['start_s']:.1f}–{clip['end_s']:.1f} s" if clip.get("start_s") is not None
                and clip.get("end_s") is not None else "")
        cards.append(
            f'<article class="clip" data-clip="{_esc(clip["clip_id"])}"><h3>{_esc(clip.get("title") or clip["video_id"])}'
            f' — {_esc(clip["clip_id"])}{_esc(span)}</h3><div class="thumbs">{thumbs}</div>'
            f'<p class="summary">{_esc(clip["summary"] or "(no summary)")}</p>'
            f'<div class="columns"><div>{lines}</div><div>{dialogues}</div></div></article>')
    return _section("Sample clips", "".join(cards), note="frames in temporal order, times from the start of the "
                    "video; confidence: of the line's attribution to its character", wide=True)


def _img(uri: str | None, t: float) -> str:
    if uri is None:
        return '<span class="broken">undecodable frame</span>'
    return f'<img src="{uri}" alt="frame at {t:.2f} s" width="{THUMB_WIDTH}">'


def rejected_section(rejected: list[dict[str, Any]]) -> str:
    """Items a quality gate rejected, by (kind, reason), with an example of each."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for item in rejected:
        groups.setdefault((str(item.get("kind") or "item"), str(item.get("reason") or "unknown")), []).append(item)
    bars = [(f"{kind}: {reason}", float(len(items))) for (kind, reason), items in groups.items()]
    rows = []
    for (kind, reason), items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        example = items[0]
        detail = ", ".join(f"{k}={v}" for k, v in example.items() if k not in ("kind", "reason", "video_id", "clip_id")
                           and isinstance(v, (str, int, float)))
        rows.append([kind, reason, len(items), example.get("clip_id") or example.get("video_id") or "",
                     detail[:160]])
    return _section("Rejected items by reason", bar_chart(bars, "items", alt=True)
                    + _table(["kind", "reason", "items", "example", "details"], rows, numeric_from=2)
                    if rejected else '<p class="empty">nothing rejected</p>', wide=True)


def stage_outcomes_section(items: dict[str, dict[str, Any]], totals: dict[str, dict[str, float]]) -> str:
    """Per stage: items done, rejected and failed (by reason), and the stage's totals."""
    rows = []
    for stage, entry in items.items():
        rejected = entry.get("rejected") or {}
        failed = entry.get("failed") or {}
        rows.append([stage, entry.get("done", 0), sum(rejected.values()), sum(failed.values()),
                     ", ".join(f"{k} {v}" for k, v in sorted(rejected.items(), key=lambda kv: -kv[1])),
                     ", ".join(f"{k} {v}" for k, v in sorted(failed.items(), key=lambda kv: -kv[1]))])
    total_rows = [[stage, name, value] for stage, entry in totals.items() for name, value in sorted(entry.items())
                  if isinstance(value, (int, float))]
    content = (_table(["stage", "done", "rejected", "failed", "rejected by reason", "failed by reason"], rows)
               if rows else "") + (_table(["stage", "total", "value"], total_rows, numeric_from=2) if total_rows
                                   else "")
    return _section("Item outcomes and totals per stage", content or '<p class="empty">none reported</p>', wide=True)


def dialogue_section(stats: list[dict[str, Any]], cost_usd: float) -> str:
    """Turns and tokens per dialogue, by generation type, judge scores when present, cost per dialogue."""
    n = len(stats)
    per = f"${cost_usd / n:.5f}" if n else "n/a"
    tiles = (f'<div class="tiles"><div class="tile"><b>{_esc(per)}</b><span>cost per dialogue</span></div>'
             f'<div class="tile"><b>{_esc(_fmt(sum(s["tokens"] for s in stats) / n) if n else "n/a")}</b>'
             f'<span>tokens per dialogue (≈ characters / 4)</span></div></div>')
    by_type: dict[str, list[dict[str, Any]]] = {}
    for stat in stats:
        by_type.setdefault(stat["generation_type"], []).append(stat)
    type_rows = [[kind, len(group), sum(s["turns"] for s in group) / len(group),
                  sum(s["tokens"] for s in group) / len(group)] for kind, group in sorted(by_type.items())]
    scores: dict[str, list[float]] = {}
    for stat in stats:
        for metric, value in stat["scores"].items():
            scores.setdefault(metric, []).append(value)
    score_rows = [[metric, len(values), sum(values) / len(values)] for metric, values in sorted(scores.items())]
    content = (tiles + histogram([float(s["turns"]) for s in stats], "turns per dialogue", integer=True)
               + histogram([float(s["tokens"]) for s in stats], "tokens per dialogue")
               + _table(["generation type", "dialogues", "mean turns", "mean tokens"], type_rows)
               + (_table(["judge metric", "dialogues scored", "mean"], score_rows) if score_rows else
                  '<p class="note">no judge scores in the dialogues</p>'))
    return _section("Per-dialogue statistics", content, wide=True)


def eval_section(results: dict[str, Any]) -> str:
    """Any ``v60k eval`` results: per-metric ratio bars and a table of the numbers it carries."""
    metrics = results.get("metrics") or {}
    # a metric without a valid judgement has no ratio: it is "n/a" in the table, never a bar at 0
    ratios = [(name, float(m["ratio"])) for name, m in metrics.items()
              if isinstance(m, dict) and m.get("ratio") is not None]
    columns: list[str] = []
    for m in metrics.values():
        for key in m if isinstance(m, dict) else []:
            if key not in columns:
                columns.append(key)
    rows = [[name] + [m.get(c) if m.get(c) is not None else "n/a" for c in columns]
            for name, m in metrics.items() if isinstance(m, dict)]
    described = ", ".join(f"{k}: {results[k]}" for k in ("model", "judge", "rubric_version", "split") if results.get(k))
    overall = results.get("overall")
    tiles = f'<div class="tiles"><div class="tile"><b>{_esc(_fmt(float(overall)) if overall is not None else "n/a")}' \
            f'</b><span>overall (model / reference)</span></div></div>'
    return _section("Evaluation", tiles + bar_chart(ratios, "ratio per metric", alt=True, max_items=50)
                    + _table(["metric", *columns], rows), note=described, wide=True)


def render_report(facts: CorpusFacts, eval_results: dict[str, Any] | None = None, title: str = "v60k corpus report") -> str:
    hours = sum(facts.durations_s) / 3600
    tiles = [(facts.counts.get("videos", 0), "videos"), (f"{hours:.2f}", "hours of video"),
             (facts.counts.get("utterances", 0), "utterances"), (facts.counts.get("clips", 0), "clips"),
             (facts.counts.get("dialogues", 0), "dialogues"),
             (len(set(facts.lines_per_character) | set(facts.dialogues_per_character)), "characters")]
    sections = [_section("Corpus", '<div class="tiles">' + "".join(
        f'<div class="tile"><b>{_esc(_fmt(v) if isinstance(v, int) else v)}</b><span>{_esc(k)}</span></div>'
        for v, k in tiles) + "</div>", wide=True), gallery_section(facts.gallery)]
    sections.append(_section("Video durations (minutes)", histogram([d / 60 for d in facts.durations_s], "minutes")))
    sections.append(_section("Scenes per video", histogram([float(s) for s in facts.scenes_per_video], "scenes",
                                                           integer=True)))
    sections.append(_section("Lines per character", bar_chart(list(facts.lines_per_character.items()), "lines"),
                             note=f"{facts.unattributed} line(s) attributed to no character"))
    sections.append(_section("Dialogues per character",
                             bar_chart(list(facts.dialogues_per_character.items()), "dialogues", alt=True)))
    low = sum(1 for c in facts.confidences if c < 0.5)
    sections.append(_section("Attribution confidence", histogram(facts.confidences, "confidence", bins=10, lo=0.0, hi=1.0),
                             note=f"{len(facts.confidences)} line(s) with a confidence; {low} below 0.5"))
    sections.append(_section("Languages", bar_chart(list(facts.languages.items()), "videos")))
    generate_cost = float((facts.usage.get("generate") or {}).get("cost_usd", 0.0))
    sections.append(dialogue_section(facts.dialogue_stats, generate_cost))
    if facts.rejected or facts.stage_counts:
        sections.append(rejected_section(facts.rejected))
    if facts.stage_items or facts.stage_totals:
        sections.append(stage_outcomes_section(facts.stage_items, facts.stage_totals))
    if facts.stage_counts or facts.failures:
        by_reason = [(f"{f['stage']}: {f['error_class'] or f['state']}", float(f["count"])) for f in facts.failures]
        examples = [[f["stage"], f["state"], f["error_class"] or "", f["count"], f["example_video"] or "",
                     (f["example"] or "")[:120]] for f in facts.failures]
        sections.append(_section("Failures and skips by reason", bar_chart(by_reason, "videos", alt=True)
                                 + _table(["stage", "state", "reason", "videos", "example", "message"], examples,
                                          numeric_from=3) if facts.failures else '<p class="empty">no failures</p>',
                                 wide=True))
        keys = sorted({k for totals in facts.usage.values() for k in totals})
        usage_rows = [[stage] + [totals.get(k, 0) for k in keys] for stage, totals in sorted(facts.usage.items())]
        tokens = [(stage, float(t.get("prompt_tokens", 0) + t.get("completion_tokens", 0)))
                  for stage, t in facts.usage.items()]
        cost = sum(t.get("cost_usd", 0) for t in facts.usage.values())
        sections.append(_section("Tokens and cost", bar_chart([t for t in tokens if t[1]], "tokens")
                                 + _table(["stage", *keys], usage_rows), note=f"total cost: ${cost:.4f}", wide=True))
    if eval_results:
        sections.append(eval_section(eval_results))
    page = Template(TEMPLATE.read_text(encoding="utf-8"))
    return page.substitute(title=_esc(title), subtitle=_esc(f"from {facts.source}"), body="\n".join(sections))


def write_report(source: str | Path, out_html: str | Path, eval_results: dict[str, Any] | None = None,
                 corpus_dir: str | Path | None = None, title: str = "v60k corpus report") -> Path:
    """Write the report for ``source`` (a work dir, or a shard folder); ``corpus_dir`` (a shard folder) is where
    the corpus facts come from when given, the catalog still giving failures, tokens and cost."""
    source = Path(source)
    workdir = WorkDir(source) if (source / "catalog.sqlite").exists() else None
    if corpus_dir is not None or workdir is None:
        shard_root = Path(corpus_dir) if corpus_dir is not None else source
        if not (shard_root / "data").is_dir():
            raise FileNotFoundError(f"neither a work dir (catalog.sqlite) nor a shard folder (data/): {shard_root}")
        facts = facts_from_shards(shard_root)
    else:
        facts = facts_from_workdir(workdir)
    if workdir is not None:
        add_catalog_facts(facts, workdir)
    out = Path(out_html)
    with atomic_path(out) as tmp:
        tmp.write_text(render_report(facts, eval_results, title), encoding="utf-8")
    return out
