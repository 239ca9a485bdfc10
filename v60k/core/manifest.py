"""Manifests: CSV, JSONL or YAML; one row per URL with optional id, series, characters, language, license.

``load_manifest`` never stops at the first bad row: it returns the good rows (duplicates collapsed,
ids sanitized) and every rejected row with its row number and reason — a value or a row above the size
bounds, bytes that are not in the manifest's encoding, and a YAML row whose aliases expand too far included.
Only a file that cannot be read as a manifest at all raises ``ManifestError``.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from v60k.core.errors import UsageError
from v60k.core.workdir import sanitize_id

FIELDS = ("url", "id", "series", "characters", "language", "license", "title")
# Bounds of one row (docs/download.md, "Manifests"): a longer value, or a bigger row — YAML aliases expanded —,
# is a rejected row, never a crash or a runaway expansion.
MAX_FIELD_CHARS = 65_536
MAX_ROW_CHARS = 262_144
MAX_ROW_VALUES = 10_000
MAX_ROW_DEPTH = 32
_CSV_DEFAULT_LIMIT = 131_072  # the csv module's own field limit, raised to the file's length while reading
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape
_SURROGATE = re.compile("[\ud800-\udfff]")  # not text at all: no UTF-8 file, catalog or shard can hold one
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
    """The manifest cannot be read at all (missing file, unknown format, not a list of rows, not text)."""


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


class _BadRecord(ValueError):
    """A row that could not be read at all (bad JSON, an oversized YAML row): rejected with its reason."""


def decode_manifest(data: bytes, name: str, encoding: str | None = None) -> str:
    """The manifest's text: ``encoding`` when given; else by its byte-order mark (UTF-8, UTF-16, UTF-32);
    else UTF-8, where undecodable bytes stay as surrogate escapes for their rows to be rejected one by one."""
    if encoding:
        try:
            return data.decode(encoding)
        except LookupError:
            raise ManifestError(f"{name}: unknown encoding {encoding!r}") from None
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{name}: not {encoding} (byte {exc.start}: {exc.reason})") from None
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as exc:
                raise ManifestError(f"{name}: starts with a {codec} byte-order mark but is not {codec} "
                                    f"(byte {exc.start}: {exc.reason})") from None
    if b"\0" in data:
        head = data[:4096]
        codec = "utf-16-le" if head[1::2].count(0) > len(head) // 4 else "utf-16-be"
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            text = "\0"
        if "\0" in text or (head[0::2].count(0) > len(head) // 4) == (codec == "utf-16-le"):
            raise ManifestError(f"{name}: contains NUL bytes: not a text manifest (save it as UTF-8)")
        return text  # UTF-16 without a byte-order mark
    return data.decode("utf-8", errors="surrogateescape")


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),  # before UTF-16: FF FE 00 00 starts with FF FE
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)


def _shown(text: str) -> str:
    """A rejected row's text for the report: undecodable bytes as ``\\xNN``, at most 500 characters."""
    text = text[:500]
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate written as a JSON or YAML escape ("\\ud800")
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _csv_records(text: str) -> Iterator[tuple[int, Any, str]]:
    previous_limit = csv.field_size_limit(max(len(text) + 1, _CSV_DEFAULT_LIMIT))  # no field can be longer
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        number = 0
        while True:
            number += 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield number, _BadRecord(f"not valid CSV: {exc}"), ""
                continue
            yield number, row, json.dumps(row, ensure_ascii=False)
    finally:
        csv.field_size_limit(previous_limit)


def _jsonl_records(text: str) -> Iterator[tuple[int, Any, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), line
        except RecursionError:
            yield number, _BadRecord("not valid JSON: nested too deeply"), line
        except ValueError as exc:  # JSONDecodeError, or an integer of too many digits
            yield number, _BadRecord(f"not valid JSON: {exc}"), line


class _ManifestLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a bound on nesting: its scanner's work grows with the square of the depth."""

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # noqa: N803 - PyYAML's name
        if self.flow_level >= MAX_ROW_DEPTH:
            raise yaml.scanner.ScannerError(None, None, f"nested deeper than {MAX_ROW_DEPTH} levels", self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def add_indent(self, column: int) -> bool:
        if len(self.indents) >= MAX_ROW_DEPTH:
            raise yaml.scanner.ScannerError(None, None, f"nested deeper than {MAX_ROW_DEPTH} levels", self.get_mark())
        return super().add_indent(column)


def _yaml_records(text: str, name: str) -> Iterator[tuple[int, Any, str]]:
    """Rows of a YAML list (or of its ``videos:`` list). Each row's size with its aliases expanded is measured
    on the parsed node graph before the row is built, so an alias bomb costs nothing but its own rejection."""
    undecodable = _UNDECODABLE.search(text)
    if undecodable:
        line = text.count("\n", 0, undecodable.start()) + 1
        raise ManifestError(f"{name}: not UTF-8 (line {line}); save the manifest as UTF-8")
    loader = _ManifestLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:
            raise ManifestError(f"{name}: YAML nested too deeply") from None
        except yaml.YAMLError as exc:
            raise ManifestError(f"{name}: not valid YAML: {' '.join(str(exc).split())}") from None
        for number, node in enumerate(_yaml_rows(root, name), start=1):
            raw = text[node.start_mark.index:node.end_mark.index]
            problem = _yaml_size_problem(node)
            if problem:
                yield number, _BadRecord(problem), raw
                continue
            try:
                record = loader.construct_document(node)
            except (yaml.YAMLError, ValueError, RecursionError) as exc:
                yield number, _BadRecord(f"not valid YAML: {' '.join(str(exc).split())[:300]}"), raw
                continue
            yield number, record, raw
    finally:
        loader.dispose()


def _yaml_rows(root: yaml.Node | None, name: str) -> list[yaml.Node]:
    shape = f"{name}: a YAML manifest is a list of rows, or a mapping whose 'videos:' is that list"
    if isinstance(root, yaml.MappingNode):
        videos = [value for key, value in root.value if isinstance(key, yaml.ScalarNode) and key.value == "videos"]
        if not videos:
            raise ManifestError(f"{shape} (no 'videos:' key)")
        root = videos[0]
    if not isinstance(root, yaml.SequenceNode):
        empty = root is None or root.tag == "tag:yaml.org,2002:null"
        raise ManifestError(f"{shape} (found {'nothing' if empty else 'a single value'})")
    return list(root.value)


def _yaml_size_problem(row: yaml.Node) -> str | None:
    """Why a row's node graph is too big once its aliases are expanded (or refers to itself), else None.

    A depth-first walk over the graph, each node visited once: the expanded size of a node shared by
    several aliases is computed once and added at each reference, so the work is linear in the text.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, characters), aliases expanded
    expanding: set[int] = set()  # nodes whose children are still being measured: meeting one again is a cycle
    pending: list[tuple[yaml.Node, bool]] = [(row, False)]
    while pending:
        node, children_measured = pending.pop()
        if isinstance(node, yaml.ScalarNode):
            if len(node.value) > MAX_FIELD_CHARS:
                return f"a value of {len(node.value):,} characters (at most {MAX_FIELD_CHARS:,})"
            sizes[id(node)] = (1, len(node.value))
            continue
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
        if children_measured:
            counted = [sizes[id(c)] for c in children]
            sizes[id(node)] = (1 + sum(c[0] for c in counted), sum(c[1] for c in counted))
            expanding.discard(id(node))
        elif id(node) in expanding:
            return "a YAML alias refers to its own row (recursive)"
        elif id(node) not in sizes:
            expanding.add(id(node))
            pending.append((node, True))
            pending.extend((c, False) for c in children if id(c) not in sizes)
    values, characters = sizes[id(row)]
    if values > MAX_ROW_VALUES or characters > MAX_ROW_CHARS:
        return (f"row too large once its YAML aliases are expanded: {values:,} values, {characters:,} characters "
                f"(at most {MAX_ROW_VALUES:,} and {MAX_ROW_CHARS:,})")
    return None


def _records(path: Path, encoding: str | None = None) -> Iterator[tuple[int, Any, str]]:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson", ".yaml", ".yml", ".txt"):
        raise ManifestError(f"{path}: unknown manifest format {suffix!r} (use .csv, .jsonl or .yaml)")
    text = decode_manifest(path.read_bytes(), str(path), encoding)
    if suffix == ".csv":
        return _csv_records(text)
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl_records(text)
    if suffix in (".yaml", ".yml"):
        return _yaml_records(text, str(path))
    return ((i, {"url": line.strip()}, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip())


def _check_size(record: Any) -> None:
    """Every value of a loaded row within MAX_FIELD_CHARS and readable; the whole row within the row bounds."""
    values = characters = 0
    pending = [(record, 0)]
    while pending:
        value, depth = pending.pop()
        values += 1
        if depth > MAX_ROW_DEPTH:
            raise ValueError(f"row nested too deeply (at most {MAX_ROW_DEPTH} levels)")
        if isinstance(value, dict):
            pending.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, (list, tuple)):
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            if len(value) > MAX_FIELD_CHARS:
                raise ValueError(f"a value of {len(value):,} characters (at most {MAX_FIELD_CHARS:,})")
            bad = _SURROGATE.search(value)
            if bad and _UNDECODABLE.fullmatch(bad.group()):
                raise ValueError(f"not UTF-8 (byte 0x{ord(bad.group()) - 0xDC00:02X}): save the manifest as UTF-8, "
                                 "or give its encoding (e.g. latin-1)")
            if bad:
                raise ValueError(f"not valid Unicode: a lone surrogate \\u{ord(bad.group()):04x}")
            characters += len(value)
        if values > MAX_ROW_VALUES or characters > MAX_ROW_CHARS:
            raise ValueError(f"row too large (at most {MAX_ROW_VALUES:,} values and {MAX_ROW_CHARS:,} characters)")


def _normalize_row(record: Any) -> dict[str, Any]:
    if isinstance(record, _BadRecord):
        raise record
    _check_size(record)
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


def load_manifest(path: str | Path, encoding: str | None = None) -> Manifest:
    """Read a manifest; ``encoding`` overrides the detection (byte-order mark, else UTF-8)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    manifest = Manifest(source=str(path))
    by_url: dict[str, int] = {}
    by_id: dict[str, int] = {}
    for number, record, raw in _records(path, encoding):
        try:
            row = _normalize_row(record)
        except ValueError as exc:
            manifest.rejected.append(Rejected(number, str(exc), _shown(raw)))
            continue
        key = normalize_url(row["source_url"])
        if key in by_url:
            manifest.duplicates.append(Rejected(number, f"duplicate of row {by_url[key]} (same URL)", _shown(raw)))
            continue
        if row["video_id"] in by_id:
            manifest.rejected.append(
                Rejected(number, f"id {row['video_id']!r} already used by row {by_id[row['video_id']]}", _shown(raw))
            )
            continue
        by_url[key] = number
        by_id[row["video_id"]] = number
        manifest.rows.append(row)
    return manifest
