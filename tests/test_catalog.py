"""The catalog's invariants, on a real SQLite file."""

from __future__ import annotations

import sqlite3
import time

from v60k.core.catalog import Catalog, ItemOutcome
from v60k.core.errors import UPSTREAM_FAILED


def _outcome(video_id: str, stage: str, state: str = "done", **kw) -> ItemOutcome:
    now = time.time()
    return ItemOutcome(video_id=video_id, stage=stage, state=state, started_at=now - 1, finished_at=now, **kw)


def _catalog(tmp_path, n=3) -> Catalog:
    catalog = Catalog(tmp_path / "work")
    catalog.add_videos([{"video_id": f"v{i}", "source_url": f"http://h/v{i}"} for i in range(n)])
    catalog.ensure_items(["a", "b"])
    return catalog


def test_add_videos_collapses_duplicate_urls_and_ids(tmp_path):
    catalog = Catalog(tmp_path / "work")
    added, known = catalog.add_videos(
        [{"video_id": "x", "source_url": "http://h/1"}, {"video_id": "y", "source_url": "http://h/1"},
         {"video_id": "x", "source_url": "http://h/2"}, {"video_id": "z", "source_url": "http://h/3",
                                                         "characters": ["Ann", "Bo"]}]
    )
    assert (added, known) == (2, 2)
    videos = catalog.videos()
    assert [v.video_id for v in videos] == ["x", "z"]
    assert videos[1].characters == ["Ann", "Bo"]


def test_ready_respects_requirements_and_records(tmp_path):
    catalog = _catalog(tmp_path)
    assert catalog.ready("a", ()) == ["v0", "v1", "v2"]
    assert catalog.ready("b", ("a",)) == []
    catalog.mark_running("a", ["v0", "v1", "v2"], "run1")
    catalog.record(_outcome("v0", "a"), "fp1")
    catalog.record(_outcome("v1", "a", "skipped", error_class="no_audio", error_message="no audio"), "fp1")
    catalog.record(_outcome("v2", "a", "failed", error_class="boom", error_message="it broke"), "fp1")
    # done and skipped both satisfy a requirement; failed does not
    assert catalog.ready("b", ("a",)) == ["v0", "v1"]
    assert catalog.skip_after_failed_inputs("b", ("a",)) == 1
    row = catalog.item("v2", "b")
    assert row["state"] == "skipped" and row["error_class"] == UPSTREAM_FAILED
    assert catalog.item("v0", "a")["attempts"] == 1


def test_fingerprint_change_resets_stage_and_later_stages_only(tmp_path):
    catalog = _catalog(tmp_path)
    for stage in ("a", "b"):
        catalog.mark_running(stage, ["v0", "v1", "v2"], "r")
        for vid in ("v0", "v1", "v2"):
            catalog.record(_outcome(vid, stage), f"fp-{stage}")
    assert catalog.apply_fingerprints({"a": "fp-a", "b": "fp-b"}, {}) == {"a": 0, "b": 0}
    # changing b's settings re-runs b only
    assert catalog.apply_fingerprints({"a": "fp-a", "b": "fp-b2"}, {})["b"] == 3
    assert catalog.counts()["a"]["done"] == 3
    # changing a's settings re-runs a, and b through propagation
    catalog.mark_running("b", ["v0", "v1", "v2"], "r")
    for vid in ("v0", "v1", "v2"):
        catalog.record(_outcome(vid, "b"), "fp-b2")
    catalog.apply_fingerprints({"a": "fp-a2", "b": "fp-b2"}, {})
    assert catalog.propagate_pending({"b": ("a",)}, ["a", "b"]) == 3
    assert catalog.counts()["b"]["pending"] == 3


def test_interrupted_rows_reset_and_retry_requeues_failures(tmp_path):
    catalog = _catalog(tmp_path)
    catalog.mark_running("a", ["v0", "v1"], "r")
    assert catalog.reset_interrupted() == 2
    catalog.mark_running("a", ["v0"], "r")
    catalog.record(_outcome("v0", "a", "failed", error_class="boom", error_message="x"), "fp")
    catalog.skip_after_failed_inputs("b", ("a",))
    assert catalog.retry("a") == 1
    assert catalog.item("v0", "a")["state"] == "pending"
    assert catalog.item("v0", "b")["state"] == "pending"  # its upstream_failed skip is lifted too


def test_status_aggregates(tmp_path):
    catalog = _catalog(tmp_path)
    catalog.mark_running("a", ["v0", "v1", "v2"], "r")
    catalog.record(_outcome("v0", "a", usage={"prompt_tokens": 10, "cost_usd": 0.25}), "fp")
    catalog.record(_outcome("v1", "a", usage={"prompt_tokens": 5, "cost_usd": 0.5}), "fp")
    catalog.record(_outcome("v2", "a", "failed", error_class="http_404", error_message="gone"), "fp")
    assert catalog.usage_totals()["a"] == {"prompt_tokens": 15, "cost_usd": 0.75}
    [failure] = catalog.failures()
    assert failure["error_class"] == "http_404" and failure["count"] == 1
    assert catalog.throughput()["a"]["done"] == 2


def test_wal_mode_allows_a_reader_during_a_write(tmp_path):
    catalog = _catalog(tmp_path)
    assert catalog.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reader = sqlite3.connect(catalog.path)
    catalog.db.execute("BEGIN IMMEDIATE")
    catalog.db.execute("UPDATE items SET state='running' WHERE video_id='v0' AND stage='a'")
    assert reader.execute("SELECT COUNT(*) FROM items WHERE state='pending'").fetchone()[0] == 6
    catalog.db.execute("COMMIT")
    assert reader.execute("SELECT COUNT(*) FROM items WHERE state='pending'").fetchone()[0] == 5
