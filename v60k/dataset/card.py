"""The dataset card: ``README.md`` in the shard folder with the Hub's YAML header (one config per table,
license, task categories, languages, size category) and statistics computed from the shards themselves: rows,
characters, videos per license and the attributions their licenses require.

Every value that comes from the data (names, titles, licenses, ...) is escaped before it goes into the
Markdown body (``md_text``); the header is YAML written by ``yaml.safe_dump`` and read back by
``read_card_header``, which takes the lines between a first line ``---`` and the next line that is exactly
``---``."""

from __future__ import annotations

import html
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from v60k.dataset import reader
from v60k.dataset.schema import TABLES, load_table_spec
from v60k.dataset.splits import empty_eval_splits

HUB_LICENSES = {"apache-2.0", "mit", "cc0-1.0", "cc-by-2.0", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0",
                "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-4.0", "odc-by",
                "pddl", "other", "unknown"}
# what platforms write into info.json → the Hub's license id
LICENSE_ALIASES = {"creative commons attribution license (reuse allowed)": "cc-by-3.0",
                   "creative commons attribution": "cc-by-3.0", "cc by 4.0": "cc-by-4.0", "cc-by": "cc-by-4.0",
                   "public domain": "cc0-1.0", "cc0": "cc0-1.0"}
SIZE_BINS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
             (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))
DEFAULT_CONFIG = "dialogues"
UNKNOWN_LICENSES = {"", "unknown", "none", "n/a", "null"}
# the videos' columns the statistics and the attributions (title, channel, URL, license) read
VIDEO_COLUMNS = ["video_id", "title", "channel", "source_url", "license", "duration_s", "language", "series"]
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md_text(value: object) -> str:
    """A data value as inline Markdown text: one line, HTML and Markdown syntax escaped."""
    text = html.escape(" ".join(str(value).split()), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", text)


def normalize_license(value: str | None) -> str | None:
    """A video's license as a Hub license id where it is a known alias; None when missing or unknown."""
    text = str(value or "").strip().lower()
    if text in UNKNOWN_LICENSES:
        return None
    return LICENSE_ALIASES.get(text, text)


def needs_attribution(license_id: str | None) -> bool:
    """Licenses whose terms require crediting the author (CC BY and its variants)."""
    return bool(license_id) and license_id.startswith("cc-by")


def hub_license(values: list[str | None]) -> str:
    """One Hub license id for the corpus: the videos' common license, else ``other`` (mixed or unknown)."""
    ids = {normalize_license(v) for v in values}
    if len(ids) == 1 and next(iter(ids)) in HUB_LICENSES:
        return next(iter(ids))
    return "other"


def size_category(rows: int) -> str:
    return next((label for limit, label in SIZE_BINS if rows < limit), "n>100M")


def _column(paths: list[Path], name: str) -> list[Any]:
    values: list[Any] = []
    for path in paths:
        values += pq.read_table(path, columns=[name]).column(name).to_pylist()
    return values


def corpus_stats(root: str | Path) -> dict[str, Any]:
    """Rows per table and split, hours of video, languages, licenses, characters, generation types."""
    root = Path(root)
    rows = {t: reader.row_counts(root, t) for t in TABLES}
    all_files = {t: reader.table_files(root, t) for t in TABLES}
    videos = [row for path in all_files["videos"] for row in pq.read_table(path, columns=VIDEO_COLUMNS).to_pylist()]
    durations = [v["duration_s"] for v in videos if v["duration_s"]]
    dialogue_characters = Counter(_column(all_files["dialogues"], "character"))
    utterance_characters = Counter(c for c in _column(all_files["utterances"], "character") if c)
    return {
        "rows": rows,
        "videos": sum(rows["videos"].values()),
        "hours": round(sum(durations) / 3600, 3),
        "languages": sorted({v["language"] for v in videos if v["language"]}),
        "licenses": [v["license"] for v in videos],
        "series": len({v["series"] for v in videos if v["series"]}),
        "characters": len(set(utterance_characters) | set(dialogue_characters)),
        "top_characters": dialogue_characters.most_common(10),
        "attributed_share": round(sum(utterance_characters.values()) / max(1, sum(rows["utterances"].values())), 3),
        "generation_types": dict(sorted(Counter(_column(all_files["dialogues"], "generation_type")).items())),
        "frames": sum(len(x or []) for x in _column(all_files["clips"], "frame_times_s")),
        "attributions": sorted((v for v in videos if needs_attribution(normalize_license(v["license"]))),
                               key=lambda v: v["video_id"]),
    }


def card_header(stats: dict[str, Any], license: str | None = None, pretty_name: str | None = None) -> dict[str, Any]:
    header: dict[str, Any] = {"pretty_name": " ".join((pretty_name or "").split()) or "Role-playing video corpus (v60k)"}
    header["license"] = license or hub_license(stats["licenses"])
    if header["license"] == "other":
        header["license_name"] = "mixed-source-licenses"
    if stats["languages"]:
        header["language"] = stats["languages"]
    header["task_categories"] = ["video-text-to-text", "text-generation"]
    header["tags"] = ["role-play", "video", "dialogue", "multimodal"]
    largest = max((sum(v.values()) for v in stats["rows"].values()), default=0)
    header["size_categories"] = [size_category(largest)]
    configs = []
    for table in sorted(TABLES, key=lambda t: t != DEFAULT_CONFIG):
        splits = [s for s in ("train", "validation", "test") if s in stats["rows"][table]]
        splits += sorted(s for s in stats["rows"][table] if s not in splits)
        config: dict[str, Any] = {"config_name": table}
        if table == DEFAULT_CONFIG:
            config["default"] = True
        config["data_files"] = [{"split": s, "path": f"data/{table}/{s}-*.parquet"} for s in splits]
        configs.append(config)
    header["configs"] = configs
    return header


def render_card(stats: dict[str, Any], header: dict[str, Any]) -> str:
    front = yaml.safe_dump(header, sort_keys=False, allow_unicode=True)
    lines = [f"---\n{front}---", "", f"# {md_text(header['pretty_name'])}", "",
             "Video-grounded role-play data in the style of Role-playing-Video60k (Video2Roleplay): videos, their "
             "attributed utterances, clips with sampled frames and summaries, and role-play dialogues grounded in "
             "the clips. Splits are assigned per series (per video where there is no series): no video has rows "
             "in two splits.", "", "## Statistics", "",
             f"- videos: {stats['videos']} ({stats['hours']} hours), series: {stats['series']}",
             f"- languages: {', '.join(md_text(x) for x in stats['languages']) or 'unknown'}",
             f"- characters: {stats['characters']}; utterances attributed to a character: "
             f"{stats['attributed_share'] * 100:.1f}%",
             f"- frames: {stats['frames']}",
             "- dialogues by generation type: "
             + (", ".join(f"{md_text(k)} {v}" for k, v in stats["generation_types"].items()) or "none"),
             *(f"- {note}" for note in stats.get("notes") or []), "",
             "| table | " + " | ".join(["train", "validation", "test"]) + " |", "|---|---|---|---|"]
    for table in TABLES:
        counts = stats["rows"][table]
        lines.append(f"| {table} | " + " | ".join(str(counts.get(s, 0)) for s in ("train", "validation", "test")) + " |")
    if empty := empty_eval_splits(stats["rows"]["videos"]):
        lines += ["", f"Note: the {' and '.join(empty)} split(s) hold no videos: the corpus has too few series to "
                  "fill every split, and a series is never cut across splits."]
    if stats["top_characters"]:
        lines += ["", "Characters with the most dialogues: "
                  + ", ".join(f"{md_text(name)} ({n})" for name, n in stats["top_characters"]) + "."]
    lines += ["", "## Loading", "", "```python", "from datasets import load_dataset",
              'dialogues = load_dataset("<repo or folder>", "dialogues", split="train")',
              'clips = load_dataset("<repo or folder>", "clips", split="train")  # frames decode as images',
              "```", "", "DuckDB and Polars read the shards directly: "
              "`SELECT * FROM 'data/dialogues/*.parquet'`.", "", "## Tables", ""]
    for table in TABLES:
        spec = load_table_spec(table)
        lines += [f"### `{table}` (schema {spec.version})", "", spec.doc, "", "| field | type | doc |", "|---|---|---|"]
        for f in spec.fields:
            kind = f.type_text + ("" if f.nullable else ", required")
            lines.append(f"| `{f.name}` | `{kind}` | {f.doc.replace('|', '/')} |")
        lines.append("")
    lines += ["## License", "",
              f"Each video keeps its source license (`videos.license`); the card's license is "
              f"`{md_text(header['license'])}`. Generated summaries and dialogues follow the same terms.", "",
              "| license | videos |", "|---|---|"]
    by_license = Counter(normalize_license(x) or "unknown" for x in stats["licenses"])
    lines += [f"| {md_text(name)} | {n} |" for name, n in sorted(by_license.items())]
    if stats["attributions"]:
        lines += ["", "### Attribution", "", "The licenses of these videos require crediting their authors:", ""]
        for row in stats["attributions"]:
            by = f" by {md_text(row['channel'])}" if row["channel"] else ""
            lines.append(f"- \"{md_text(row['title'] or row['video_id'])}\"{by}, {md_text(row['source_url'])}, "
                         f"{md_text(normalize_license(row['license']))}")
    lines.append("")
    return "\n".join(lines)


def write_card(root: str | Path, license: str | None = None, pretty_name: str | None = None,
               notes: list[str] | None = None) -> Path:
    """Write ``root/README.md`` from the shards under ``root/data``; ``notes``: more statistics lines (what
    the writer left out, e.g. near-duplicates across videos)."""
    root = Path(root)
    stats = {**corpus_stats(root), "notes": list(notes or [])}
    text = render_card(stats, card_header(stats, license=license, pretty_name=pretty_name))
    path = root / "README.md"
    tmp = path.with_name(".README.md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def read_card_header(path: str | Path) -> dict[str, Any]:
    """The YAML header of a card; ``ValueError`` when it is missing or not YAML."""
    front, _ = split_front_matter(Path(path).read_text(encoding="utf-8"))
    try:
        header = yaml.safe_load(front)
    except yaml.YAMLError as exc:
        raise ValueError(f"the YAML header cannot be read: {exc}") from exc
    if not isinstance(header, dict):
        raise ValueError("the YAML header is not a mapping")
    return header


def split_front_matter(text: str) -> tuple[str, str]:
    """(YAML header, body) of a card: the lines between a first line ``---`` and the next line that is exactly
    ``---`` (a ``---`` inside a value or the body is no delimiter). ``ValueError`` without such a header."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n") != "---":
        raise ValueError("no YAML header (--- ... ---)")
    for index, line in enumerate(lines[1:], 1):
        if line.rstrip("\r\n") == "---":
            return "".join(lines[1:index]), "".join(lines[index + 1 :])
    raise ValueError("the YAML header has no closing --- line")
