"""Manifests: CSV, JSONL and YAML rows; malformed rows reported by number; duplicates collapsed; safe ids."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import pytest

from v60k.core.manifest import (
    MAX_FIELD_CHARS,
    ManifestError,
    derive_id,
    load_manifest,
    normalize_url,
    parse_characters,
)
from v60k.core.workdir import MAX_ID_LENGTH, sanitize_id


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


# ---- hostile and odd manifests: bounded work, every good row kept, bad rows listed by number ---------------
def _alias_bomb(kind: str) -> str:
    """A YAML manifest whose row 2 expands to ~400 million values (a few hundred bytes of text)."""
    rows = ["- url: https://example.com/ok.mp4", "- url: https://example.com/boom.mp4"]
    if kind == "recursive":
        rows[1] = '- &row {url: "https://example.com/boom.mp4", self: *row}'
    elif kind == "lists":
        rows.append('  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]')
        rows += [f"  {cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]" for prev, cur in zip("abcdefgh", "bcdefghi")]
    else:  # merge keys: PyYAML copies the merged mappings while building the row
        rows.append("  a: &a {k1: lol, k2: lol, k3: lol, k4: lol, k5: lol, k6: lol, k7: lol, k8: lol, k9: lol}")
        rows += [f"  {cur}: &{cur} {{<<: [{', '.join([f'*{prev}'] * 9)}]}}"
                 for prev, cur in zip("abcdefgh", "bcdefghi")]
    rows.append("- url: https://example.com/after.mp4")
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("kind", ["lists", "merges", "recursive"])
def test_a_yaml_alias_bomb_is_one_rejected_row_in_bounded_time_and_memory(tmp_path, kind):
    path = _write(tmp_path / "bomb.yaml", _alias_bomb(kind))
    assert path.stat().st_size < 700
    tracemalloc.start()
    started = time.perf_counter()
    try:
        manifest = load_manifest(path)
        elapsed, peak = time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0 and peak < 20 * 2**20, (elapsed, peak)  # the unbounded expansion: ~19 s and ~1 GB
    assert [r["source_url"] for r in manifest.rows] == ["https://example.com/ok.mp4", "https://example.com/after.mp4"]
    [(row, reason)] = [(r.row, r.reason) for r in manifest.rejected]
    assert row == 2 and ("aliases are expanded" in reason or "recursive" in reason), reason


def test_anchors_and_aliases_within_the_bounds_still_work(tmp_path):
    manifest = load_manifest(_write(tmp_path / "cast.yaml", (
        "cast: &friends [Monica, Ross, Rachel]\n"
        "videos:\n"
        "  - {url: https://example.com/1.mp4, characters: *friends}\n"
        "  - {url: https://example.com/2.mp4, characters: *friends, series: &s Friends}\n"
        "  - {url: https://example.com/3.mp4, series: *s}\n")))
    assert [r["characters"] for r in manifest.rows] == [["Monica", "Ross", "Rachel"]] * 2 + [[]]
    assert manifest.rows[2]["series"] == "Friends" and manifest.rejected == []


def test_a_field_above_the_bound_is_a_bad_row_not_a_crash(tmp_path):
    huge = "x" * 200_000  # above the csv module's default field limit (131,072) and MAX_FIELD_CHARS
    assert len(huge) > MAX_FIELD_CHARS
    csv_manifest = load_manifest(_write(tmp_path / "big.csv", (
        "url,title\n"
        "https://example.com/1.mp4,One\n"
        f"https://example.com/2.mp4,{huge}\n"
        f'https://example.com/3.mp4,"{huge}\nsecond line"\n'
        'https://example.com/4.mp4,"two\nlines"\n'
        f"https://example.com/5.mp4,{'y' * (MAX_FIELD_CHARS - 10)}\n")))
    assert [r["source_url"][-5:] for r in csv_manifest.rows] == ["1.mp4", "4.mp4", "5.mp4"]
    assert csv_manifest.rows[1]["title"] == "two\nlines"
    assert [r.row for r in csv_manifest.rejected] == [2, 3]
    assert all("200,0" in r.reason and "at most 65,536" in r.reason for r in csv_manifest.rejected)
    assert all(len(r.raw) <= 500 for r in csv_manifest.rejected)

    jsonl = load_manifest(_write(tmp_path / "big.jsonl", "\n".join(json.dumps(r) for r in [
        {"url": "https://example.com/1.mp4", "notes": huge},
        {"url": "https://example.com/2.mp4", "characters": ["x"] * 20_000},
        {"url": "https://example.com/3.mp4", "n": int("9" * 4000)},
        {"url": "https://example.com/4.mp4"},
        {"url": "https://example.com/5.mp4", "deep": json.loads("[" * 40 + "]" * 40)},
    ]) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n"))
    assert [r["source_url"] for r in jsonl.rows] == ["https://example.com/3.mp4", "https://example.com/4.mp4"]
    reasons = {r.row: r.reason for r in jsonl.rejected}
    assert sorted(reasons) == [1, 2, 5, 6] and "characters" in reasons[1] and "row too large" in reasons[2]
    assert "nested too deeply" in reasons[5] and "nested too deeply" in reasons[6]


ROWS = "url,title\nhttps://example.com/1.mp4,Zoë — 日本語\nhttps://example.com/2.mp4,plain\n"


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_byte_order_marks_and_utf16_are_read(tmp_path, encoding):
    path = tmp_path / "videos.csv"
    path.write_bytes(ROWS.encode(encoding))  # utf-16 / utf-32: with a BOM; utf-16-le / -be: without
    manifest = load_manifest(path)
    assert [r["title"] for r in manifest.rows] == ["Zoë — 日本語", "plain"] and manifest.rejected == []


def test_bytes_that_are_not_utf8_reject_their_rows_only(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("url,title\nhttps://example.com/1.mp4,Zoë\nhttps://example.com/2.mp4,plain\n"
                     "https://example.com/3.mp4,Café\n".encode("latin-1"))
    manifest = load_manifest(path)
    assert [r["title"] for r in manifest.rows] == ["plain"]
    assert [r.row for r in manifest.rejected] == [1, 3]
    assert all("not UTF-8" in r.reason and "latin-1" in r.reason for r in manifest.rejected)
    assert "Zo\\xeb" in manifest.rejected[0].raw  # the raw text shows the byte; it can be written anywhere
    json.dumps(vars(manifest.rejected[0]), ensure_ascii=False).encode("utf-8")

    assert [r["title"] for r in load_manifest(path, encoding="latin-1").rows] == ["Zoë", "plain", "Café"]
    with pytest.raises(ManifestError, match="unknown encoding"):
        load_manifest(path, encoding="klingon")
    with pytest.raises(ManifestError, match=r"line 2.*UTF-8"):
        load_manifest(_write_bytes(tmp_path / "latin1.yaml", "- url: https://e.com/1\n- title: Zoë\n".encode("latin-1")))
    with pytest.raises(ManifestError, match="NUL"):
        load_manifest(_write_bytes(tmp_path / "binary.csv", b"\x00\x01\x02\x00\x00\x00\xff" * 50))


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("video:\n  - url: https://example.com/a.mp4\n", "no 'videos:' key"),  # a typo loses nothing silently
        ("videos: https://example.com/a.mp4\n", "found a single value"),
        ("videos:\n", "found nothing"),
        ("", "found nothing"),
        ("42\n", "found a single value"),
        ("- url: a\n---\n- url: b\n", "not valid YAML"),
        ("[" * 5000 + "]" * 5000 + "\n", "nested deeper than 32 levels"),
        ("".join(f"{' ' * i}- \n" for i in range(0, 400, 2)), "nested deeper than 32 levels"),
        ("- url: [unclosed\n", "not valid YAML"),
    ],
)
def test_a_yaml_manifest_that_is_not_a_list_of_rows_is_one_clear_error(tmp_path, text, words):
    with pytest.raises(ManifestError) as error:
        load_manifest(_write(tmp_path / "m.yaml", text))
    assert words in str(error.value) and "\n" not in str(error.value)
    assert load_manifest(_write(tmp_path / "empty.yaml", "videos: []\n")).rows == []


def test_a_lone_surrogate_escape_is_a_bad_row(tmp_path):
    jsonl = load_manifest(_write(tmp_path / "s.jsonl", '{"url": "https://example.com/1.mp4", "title": "\\ud800"}\n'
                                                      '{"url": "https://example.com/2.mp4"}\n'))
    yml = load_manifest(_write(tmp_path / "s.yaml", '- {url: "https://example.com/1.mp4", title: "\\ud800"}\n'
                                                    '- {url: "https://example.com/2.mp4"}\n'))
    for manifest in (jsonl, yml):
        assert [r["source_url"] for r in manifest.rows] == ["https://example.com/2.mp4"]
        [rejected] = manifest.rejected
        assert rejected.row == 1 and "lone surrogate" in rejected.reason
        rejected.raw.encode("utf-8")  # printable and storable
