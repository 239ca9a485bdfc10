"""Manifests: CSV, JSONL and YAML rows; malformed rows reported by number; duplicates collapsed; safe ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from v60k.manifest import ManifestError, derive_id, load_manifest, normalize_url, parse_characters
from v60k.workdir import MAX_ID_LENGTH, sanitize_id


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_rows_with_every_field_and_extra_columns(tmp_path):
    manifest = load_manifest(_write(tmp_path / "videos.csv", (
        "url,id,series,characters,language,license,title,season\n"
        "https://example.com/watch?v=1,friends-101,Friends,Monica;Ross| Joey ,en,CC-BY-4.0,The Pilot,1\n"
        "https://example.com/e2.mp4,,Friends,,,,,\n"
    )))
    assert manifest.rejected == [] and manifest.duplicates == []
    first, second = manifest.rows
    assert first == {
        "video_id": "friends-101", "source_url": "https://example.com/watch?v=1", "series": "Friends",
        "characters": ["Monica", "Ross", "Joey"], "language": "en", "license": "CC-BY-4.0", "title": "The Pilot",
        "extra": {"season": "1"},
    }
    assert second["video_id"] == derive_id("https://example.com/e2.mp4") and second["characters"] == []
    assert second["language"] is None and second["title"] is None


def test_jsonl_reports_malformed_lines_by_number_and_keeps_the_rest(tmp_path):
    lines = [
        json.dumps({"url": "https://example.com/a.mp4", "characters": ["Monica", "Ross"]}),  # 1
        '{"url": "https://example.com/b.mp4", ',  # 2: not JSON
        "",  # 3: blank, ignored
        json.dumps({"id": "no-url", "series": "Friends"}),  # 4
        json.dumps({"url": "https://example.com/c.mp4", "characters": 42}),  # 5
        json.dumps({"url": "https://example.com/d.mp4", "characters": ["Monica", 7]}),  # 6
        json.dumps({"url": "https://example.com/e.mp4", "characters": "[Monica"}),  # 7: broken JSON list
        json.dumps({"url": "   "}),  # 8
        json.dumps({"url": "example.com/f.mp4"}),  # 9: no scheme
        json.dumps(["https://example.com/g.mp4"]),  # 10: not a mapping
        json.dumps("https://example.com/h.mp4"),  # 11: a bare URL string is a row
    ]
    manifest = load_manifest(_write(tmp_path / "videos.jsonl", "\n".join(lines) + "\n"))
    reasons = {r.row: r.reason for r in manifest.rejected}
    assert sorted(reasons) == [2, 4, 5, 6, 7, 8, 9, 10]
    assert "not valid JSON" in reasons[2]
    assert reasons[4] == reasons[8] == "missing url"
    assert all(reasons[n].startswith("characters") for n in (5, 6, 7))
    assert "not a URL" in reasons[9] and "mapping" in reasons[10]
    assert '"https://example.com/b.mp4"' in next(r.raw for r in manifest.rejected if r.row == 2)
    assert [r["source_url"] for r in manifest.rows] == ["https://example.com/a.mp4", "https://example.com/h.mp4"]


def test_yaml_list_and_mapping_forms_with_aliases(tmp_path):
    listed = load_manifest(_write(tmp_path / "a.yaml", (
        "- url: https://example.com/a.mp4\n  cast: [Rachel, Phoebe]\n  series: Friends\n"
        "- source_url: https://example.com/b.mp4\n  video_id: b-video\n"
        "- title: no url here\n"
    )))
    assert [r["video_id"] for r in listed.rows] == [derive_id("https://example.com/a.mp4"), "b-video"]
    assert listed.rows[0]["characters"] == ["Rachel", "Phoebe"] and listed.rows[0]["series"] == "Friends"
    assert [(r.row, r.reason) for r in listed.rejected] == [(3, "missing url")]

    mapped = load_manifest(_write(tmp_path / "b.yml", "videos:\n  - url: https://example.com/c.mp4\n"))
    assert [r["source_url"] for r in mapped.rows] == ["https://example.com/c.mp4"]
    with pytest.raises(ManifestError, match="list of rows"):
        load_manifest(_write(tmp_path / "c.yaml", "just a string\n"))


def test_duplicate_urls_collapse_and_a_reused_id_is_rejected(tmp_path):
    rows = [
        {"url": "https://Example.com/Show/ep1.mp4", "id": "ep1"},  # 1
        {"url": "HTTPS://EXAMPLE.COM/Show/ep1.mp4#t=30", "id": "other"},  # 2: same URL (scheme/host case, fragment)
        {"url": "https://example.com/Show/EP1.mp4", "id": "ep1"},  # 3: another URL (path case matters), same id
        {"url": "https://example.com/Show/ep2.mp4"},  # 4
        {"url": "https://example.com/Show/ep2.mp4"},  # 5
    ]
    manifest = load_manifest(_write(tmp_path / "dups.jsonl", "\n".join(json.dumps(r) for r in rows)))
    assert [(d.row, d.reason) for d in manifest.duplicates] == [
        (2, "duplicate of row 1 (same URL)"), (5, "duplicate of row 4 (same URL)")]
    assert [(r.row, r.reason) for r in manifest.rejected] == [(3, "id 'ep1' already used by row 1")]
    assert [r["video_id"] for r in manifest.rows] == ["ep1", derive_id(normalize_url("https://example.com/Show/ep2.mp4"))]


@pytest.mark.parametrize("raw", ["../../etc/passwd", "..", "a/../../b", "C:\\Windows\\x", "/abs/path", ".hidden",
                                 "épisode 1 — l’été", "🎬🎬", "a" * 500, "x\x00y", "../" * 40])
def test_ids_are_sanitized(raw):
    clean = sanitize_id(raw)
    assert clean and len(clean) <= MAX_ID_LENGTH
    assert "/" not in clean and "\\" not in clean and ".." not in clean and "\x00" not in clean
    assert not clean.startswith(".") and clean.isascii()
    assert sanitize_id(clean) == clean  # stable: a sanitized id is accepted as is
    assert clean != raw


def test_sanitized_ids_stay_distinct_and_manifest_keeps_the_original(tmp_path):
    long_a, long_b = "episode-" + "a" * 200 + "-1", "episode-" + "a" * 200 + "-2"
    assert sanitize_id(long_a) != sanitize_id(long_b)
    assert sanitize_id("../x") != sanitize_id("./x")
    manifest = load_manifest(_write(tmp_path / "ids.csv", (
        "url,id\nhttps://example.com/1.mp4,../../escape\nhttps://example.com/2.mp4,friends-s01e01\n")))
    escaped, plain = manifest.rows
    assert escaped["video_id"] == sanitize_id("../../escape") and escaped["extra"]["manifest_id"] == "../../escape"
    assert plain["video_id"] == "friends-s01e01" and "manifest_id" not in plain["extra"]


def test_derived_ids_are_stable_safe_and_bounded():
    url = "https://example.com/shows/Friends%20–%20The%20One%20Where%20It%20All%20Began%20(Pilot).mp4?x=1"
    first = derive_id(url)
    assert first == derive_id(url) and first == sanitize_id(first) and len(first) <= MAX_ID_LENGTH
    assert derive_id("https://example.com/a.mp4") != derive_id("https://example.com/a.mp4?v=2")
    assert derive_id("https://example.com/").startswith("example-com-")  # no path: the host names it


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, []),
        ("", []),
        ("Monica", ["Monica"]),
        ("Monica; Ross |Joey", ["Monica", "Ross", "Joey"]),
        ("Monica;;Monica; ", ["Monica"]),
        ('["Rachel", "Phoebe", "Rachel"]', ["Rachel", "Phoebe"]),
        (["Chandler", " Joey "], ["Chandler", "Joey"]),
        ("Zoë;日本語", ["Zoë", "日本語"]),
    ],
)
def test_parse_characters(value, expected):
    assert parse_characters(value) == expected


@pytest.mark.parametrize("value", [42, {"a": 1}, ["Monica", 3], '["Monica", 3]', "[Monica"])
def test_parse_characters_rejects_non_lists(value):
    with pytest.raises(ValueError, match="characters"):
        parse_characters(value)


def test_unreadable_manifests_are_one_clear_error(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "nope.csv")
    with pytest.raises(ManifestError, match="unknown manifest format"):
        load_manifest(_write(tmp_path / "videos.xlsx", "url\n"))
    text = load_manifest(_write(tmp_path / "urls.txt", "https://example.com/a.mp4\n\nhttps://example.com/b.mp4\n"))
    assert [r["source_url"] for r in text.rows] == ["https://example.com/a.mp4", "https://example.com/b.mp4"]
