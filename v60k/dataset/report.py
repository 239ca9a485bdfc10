"""The corpus report: one self-contained HTML page (inline SVG, a few lines of inline JS, no external
resources) with video durations, lines and dialogues per character, attribution confidence, scenes per
video, languages, failures by reason, tokens and cost, and an evaluation section when results are given.

    write_report("v60k-work", "report.html")                       # corpus facts from the work dir
    write_report("corpus", "report.html", eval_results=json.load(open("eval.json")))
"""

from __future__ import annotations

import html
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import pyarrow.parquet as pq

from v60k.catalog import Catalog
from v60k.workdir import WorkDir, atomic_path

TEMPLATE = Path(__file__).with_name("report_template.html")


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
    source: str = ""


def facts_from_shards(root: str | Path) -> CorpusFacts:
    root = Path(root)
    facts = CorpusFacts(source=str(root))

    def column(table: str, names: list[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for path in sorted((root / "data" / table).glob("*.parquet")):
            rows += pq.read_table(path, columns=names).to_pylist()
        return rows

    videos = column("videos", ["duration_s", "scenes", "language"])
    for video in videos:
        _add_video(facts, video["duration_s"], len(video["scenes"] or []), video["language"])
    utterances = column("utterances", ["character", "attribution_confidence"])
    for utterance in utterances:
        _add_utterance(facts, utterance["character"], utterance["attribution_confidence"])
    dialogues = column("dialogues", ["character"])
    for dialogue in dialogues:
        facts.dialogues_per_character[dialogue["character"]] += 1
    clips = sum(pq.ParquetFile(p).metadata.num_rows for p in (root / "data" / "clips").glob("*.parquet"))
    facts.counts = {"videos": len(videos), "utterances": len(utterances), "clips": clips, "dialogues": len(dialogues)}
    return facts


def facts_from_workdir(workdir: WorkDir) -> CorpusFacts:
    """Corpus facts read the way the shard writer reads them (without frames), plus the catalog's."""
    from v60k.dataset.writer import VideoReader, video_rows

    facts = CorpusFacts(source=str(workdir.root))
    counts: Counter = Counter()
    with Catalog(workdir, read_only=True) as catalog:
        done: dict[str, set[str]] = {}
        for vid, stage in catalog.db.execute("SELECT video_id, stage FROM items WHERE state='done'"):
            done.setdefault(vid, set()).add(stage)
        videos = [v for v in catalog.videos() if "download" in done.get(v.video_id, set())]
    for video in videos:
        for table, row in video_rows(VideoReader(video, done[video.video_id]), split="", include_frames=False):
            counts[table] += 1
            if table == "videos":
                _add_video(facts, row["duration_s"], len(row["scenes"]), row["language"])
            elif table == "utterances":
                _add_utterance(facts, row["character"], row["attribution_confidence"])
            elif table == "dialogues":
                facts.dialogues_per_character[row["character"]] += 1
    facts.counts = {t: counts.get(t, 0) for t in ("videos", "utterances", "clips", "dialogues")}
    return facts


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
    with Catalog(workdir, read_only=True) as catalog:
        facts.failures = catalog.failures()
        facts.usage = catalog.usage_totals()
        facts.stage_counts = catalog.counts()


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


def eval_section(results: dict[str, Any]) -> str:
    """Any ``v60k eval`` results: per-metric ratio bars and a table of the numbers it carries."""
    metrics = results.get("metrics") or {}
    ratios = [(name, float(m.get("ratio") or 0.0)) for name, m in metrics.items() if isinstance(m, dict)]
    columns: list[str] = []
    for m in metrics.values():
        for key in m if isinstance(m, dict) else []:
            if key not in columns:
                columns.append(key)
    rows = [[name] + [m.get(c, "") if m.get(c) is not None else "" for c in columns]
            for name, m in metrics.items() if isinstance(m, dict)]
    described = ", ".join(f"{k}: {results[k]}" for k in ("model", "judge", "rubric_version") if results.get(k))
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
        for v, k in tiles) + "</div>", wide=True)]
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
