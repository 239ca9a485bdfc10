"""Manifests: CSV, JSONL or YAML; one row per URL with optional id, series, characters, language, license.

``load_manifest`` never stops at the first bad row: it returns the good rows (duplicates collapsed,
ids sanitized) and every rejected row with its row number and reason.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from v60k.errors import UsageError
from v60k.workdir import sanitize_id

FIELDS = ("url", "id", "series", "characters", "language", "license", "title")
_ALIASES = {"source_url": "url", "video_id": "id", "cast": "characters"}


@dataclass
class Rejected:
    row: int  # 1-based data row number (a CSV's header is row 0)
    reason: str
    raw: str = ""


@dataclass
class Manifest:
    source: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    duplicates: list[Rejected] = field(default_factory=list)


class ManifestError(UsageError, ValueError):
    """The manifest cannot be read at all (missing file, unknown format)."""


def derive_id(url: str) -> str:
    """A readable, stable id from a URL: its last path segment (sans extension) plus a short hash."""
    parts = urlsplit(url)
    stem = Path(parts.path).stem or parts.netloc or "video"
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", ascii_stem)[:40].strip("-_") or "video"
    return f"{slug}-{hashlib.sha1(url.encode('utf-8')).hexdigest()[:8]}"


def normalize_url(url: str) -> str:
    parts = urlsplit(url.strip())
    return parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower(), fragment="").geturl()


def parse_characters(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else re.split(r"[;|]", text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"characters: not a valid JSON list ({exc.msg})") from exc
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("characters must be a list of names (or 'A;B;C')")
    seen: list[str] = []
    for name in (v.strip() for v in value):
        if name and name not in seen:
            seen.append(name)
    return seen


def _records(path: Path) -> list[tuple[int, Any, str]]:
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8-sig")
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        return [(i, row, json.dumps(row, ensure_ascii=False)) for i, row in enumerate(reader, start=1)]
    if suffix in (".jsonl", ".ndjson"):
        out: list[tuple[int, Any, str]] = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append((i, json.loads(line), line))
            except json.JSONDecodeError as exc:
                out.append((i, exc, line))
        return out
    if suffix in (".yaml", ".yml"):
        data = yaml.safe_load(text) or []
        if isinstance(data, dict):
            data = data.get("videos", [])
        if not isinstance(data, list):
            raise ManifestError(f"{path}: a YAML manifest is a list of rows (or a mapping with 'videos:')")
        return [(i, row, json.dumps(row, ensure_ascii=False, default=str)) for i, row in enumerate(data, start=1)]
    if suffix == ".txt":
        return [(i, {"url": line.strip()}, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    raise ManifestError(f"{path}: unknown manifest format {suffix!r} (use .csv, .jsonl or .yaml)")


def _normalize_row(record: Any) -> dict[str, Any]:
    if isinstance(record, Exception):
        raise ValueError(f"not valid JSON: {record}")
    if isinstance(record, str):
        record = {"url": record}
    if not isinstance(record, dict):
        raise ValueError("a row must be a mapping")
    row = {_ALIASES.get(str(k).strip().lower(), str(k).strip().lower()): v for k, v in record.items() if k is not None}
    url = row.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ValueError("missing url")
    url = url.strip()
    if not urlsplit(url).scheme:
        raise ValueError(f"not a URL: {url!r}")
    raw_id = row.get("id")
    video_id = sanitize_id(str(raw_id)) if raw_id not in (None, "") else derive_id(normalize_url(url))
    extra = {k: v for k, v in row.items() if k not in FIELDS and v not in (None, "")}
    out = {
        "video_id": video_id,
        "source_url": url,
        "series": (str(row["series"]).strip() or None) if row.get("series") not in (None, "") else None,
        "characters": parse_characters(row.get("characters")),
        "language": (str(row["language"]).strip() or None) if row.get("language") else None,
        "license": (str(row["license"]).strip() or None) if row.get("license") else None,
        "title": str(row["title"]) if row.get("title") else None,
        "extra": extra,
    }
    if raw_id not in (None, "") and video_id != str(raw_id):
        out["extra"]["manifest_id"] = str(raw_id)
    return out


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"manifest not found: {path}")
    manifest = Manifest(source=str(path))
    by_url: dict[str, int] = {}
    by_id: dict[str, int] = {}
    for number, record, raw in _records(path):
        try:
            row = _normalize_row(record)
        except ValueError as exc:
            manifest.rejected.append(Rejected(number, str(exc), raw[:500]))
            continue
        key = normalize_url(row["source_url"])
        if key in by_url:
            manifest.duplicates.append(Rejected(number, f"duplicate of row {by_url[key]} (same URL)", raw[:500]))
            continue
        if row["video_id"] in by_id:
            manifest.rejected.append(
                Rejected(number, f"id {row['video_id']!r} already used by row {by_id[row['video_id']]}", raw[:500])
            )
            continue
        by_url[key] = number
        by_id[row["video_id"]] = number
        manifest.rows.append(row)
    return manifest
