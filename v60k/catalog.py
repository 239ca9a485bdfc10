"""The catalog: one SQLite row per (video, stage) with its state, error, timings and fingerprint.

Only the driver process writes (executors hand results back), each state change in one transaction;
WAL mode lets ``status`` read while a run writes. ``done`` means the outputs were renamed into place
and were produced with the fingerprint (stage version + settings hash) stored on the row.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v60k.stage import Video
from v60k.workdir import WorkDir

STATES = ("pending", "running", "done", "failed", "skipped")
FINAL_STATES = ("done", "failed", "skipped")
UPSTREAM_FAILED = "upstream_failed"
EXPANDED = "expanded"  # a playlist/channel row: its entries became videos of their own; no later stage applies

_SCHEMA = """
CREATE TABLE IF NOT EXISTS videos (
    video_id     TEXT PRIMARY KEY,
    source_url   TEXT NOT NULL UNIQUE,
    series       TEXT,
    characters   TEXT NOT NULL DEFAULT '[]',
    language     TEXT,
    license      TEXT,
    title        TEXT,
    extra        TEXT NOT NULL DEFAULT '{}',
    parent_id    TEXT,
    added_at     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    video_id      TEXT NOT NULL REFERENCES videos(video_id),
    stage         TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'pending',
    attempts      INTEGER NOT NULL DEFAULT 0,
    error_class   TEXT,
    error_message TEXT,
    started_at    REAL,
    finished_at   REAL,
    duration_s    REAL,
    outputs       TEXT,
    metrics       TEXT,
    usage         TEXT,
    fingerprint   TEXT,
    run_id        TEXT,
    PRIMARY KEY (video_id, stage)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_by_stage_state ON items(stage, state);
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    command     TEXT,
    config      TEXT,
    started_at  REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS stage_settings (
    stage       TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    settings    TEXT NOT NULL,
    updated_at  REAL NOT NULL
);
"""


@dataclass
class ItemOutcome:
    """A finished (video, stage) as an executor reports it back to the driver."""

    video_id: str
    stage: str
    state: str  # done | failed | skipped
    started_at: float
    finished_at: float
    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, float] = field(default_factory=dict)
    error_class: str | None = None
    error_message: str | None = None
    new_videos: list[dict[str, Any]] = field(default_factory=list)


class Catalog:
    def __init__(self, workdir: WorkDir | str | Path):
        self.workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
        self.workdir.create()
        self.path = self.workdir.catalog_path
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # durable across a killed process in WAL mode
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tx(self):
        return _Transaction(self.db)

    # ---- videos -------------------------------------------------------------------------------
    def add_videos(self, rows: Iterable[dict[str, Any]], parent_id: str | None = None) -> tuple[int, int]:
        """Insert manifest rows (dicts with video_id, source_url, ...). Returns (added, already_known)."""
        added = known = 0
        now = time.time()
        with self._tx():
            for row in rows:
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO videos(video_id, source_url, series, characters, language, license,"
                    " title, extra, parent_id, added_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        row["video_id"],
                        row["source_url"],
                        row.get("series"),
                        json.dumps(list(row.get("characters") or []), ensure_ascii=False),
                        row.get("language"),
                        row.get("license"),
                        row.get("title"),
                        json.dumps(row.get("extra") or {}, ensure_ascii=False),
                        parent_id,
                        now,
                    ),
                )
                if cur.rowcount:
                    added += 1
                else:
                    known += 1
        return added, known

    def video_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM videos").fetchone()[0]

    def videos(self, video_ids: Sequence[str] | None = None) -> list[Video]:
        cols = "video_id, source_url, series, characters, language, license, title, extra"
        if video_ids is None:
            rows = self.db.execute(f"SELECT {cols} FROM videos ORDER BY video_id").fetchall()
        else:
            rows = []
            for chunk in _chunks(list(video_ids), 500):
                marks = ",".join("?" * len(chunk))
                rows += self.db.execute(f"SELECT {cols} FROM videos WHERE video_id IN ({marks})", chunk).fetchall()
            order = {vid: i for i, vid in enumerate(video_ids)}
            rows.sort(key=lambda r: order[r[0]])
        return [
            Video(
                video_id=r[0],
                source_url=r[1],
                series=r[2],
                characters=json.loads(r[3]),
                language=r[4],
                license=r[5],
                title=r[6],
                extra=json.loads(r[7]),
                dir=self.workdir.video_dir(r[0]),
            )
            for r in rows
        ]

    def update_video(self, video_id: str, **fields: Any) -> None:
        """Update title / characters / language / license learnt while processing (e.g. from info.json)."""
        allowed = {"title", "characters", "language", "license", "series"}
        sets, values = [], []
        for key, value in fields.items():
            if key not in allowed:
                raise ValueError(f"cannot update video field {key!r}")
            sets.append(f"{key}=?")
            values.append(json.dumps(value, ensure_ascii=False) if key == "characters" else value)
        if sets:
            with self._tx():
                self.db.execute(f"UPDATE videos SET {', '.join(sets)} WHERE video_id=?", (*values, video_id))

    # ---- planning -----------------------------------------------------------------------------
    def start_run(self, command: str, config: dict[str, Any]) -> str:
        run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        with self._tx():
            self.db.execute(
                "INSERT INTO runs(run_id, command, config, started_at) VALUES (?,?,?,?)",
                (run_id, command, json.dumps(config, default=str), time.time()),
            )
        return run_id

    def finish_run(self, run_id: str) -> None:
        with self._tx():
            self.db.execute("UPDATE runs SET finished_at=? WHERE run_id=?", (time.time(), run_id))

    def reset_interrupted(self) -> int:
        """Rows left ``running`` by a run that died go back to ``pending``."""
        with self._tx():
            return self.db.execute("UPDATE items SET state='pending' WHERE state='running'").rowcount

    def ensure_items(self, stages: Sequence[str]) -> None:
        """A pending row for every (video, stage) that has none yet."""
        with self._tx():
            for stage in stages:
                self.db.execute(
                    "INSERT OR IGNORE INTO items(video_id, stage) SELECT video_id, ? FROM videos", (stage,)
                )

    def apply_fingerprints(self, fingerprints: dict[str, str], settings: dict[str, Any]) -> dict[str, int]:
        """Rows finished under another fingerprint go back to pending. Returns the count per stage."""
        reset: dict[str, int] = {}
        now = time.time()
        with self._tx():
            for stage, fp in fingerprints.items():
                reset[stage] = self.db.execute(
                    "UPDATE items SET state='pending', error_class=NULL, error_message=NULL"
                    " WHERE stage=? AND state IN ('done','failed','skipped')"
                    " AND fingerprint IS NOT NULL AND fingerprint != ?",
                    (stage, fp),
                ).rowcount
                self.db.execute(
                    "INSERT INTO stage_settings(stage, fingerprint, settings, updated_at) VALUES (?,?,?,?)"
                    " ON CONFLICT(stage) DO UPDATE SET fingerprint=excluded.fingerprint,"
                    " settings=excluded.settings, updated_at=excluded.updated_at",
                    (stage, fp, json.dumps(settings.get(stage, {}), default=str), now),
                )
        return reset

    def propagate_pending(self, requires: dict[str, Sequence[str]], order: Sequence[str]) -> int:
        """A finished row whose input stage is pending again (re-run, retry) is pending too."""
        total = 0
        with self._tx():
            for stage in order:
                for upstream in requires.get(stage, ()):
                    total += self.db.execute(
                        "UPDATE items SET state='pending', error_class=NULL, error_message=NULL"
                        " WHERE stage=? AND state IN ('done','failed','skipped') AND video_id IN"
                        " (SELECT video_id FROM items WHERE stage=? AND state='pending')",
                        (stage, upstream),
                    ).rowcount
        return total

    def skip_after_failed_inputs(self, stage: str, upstream: Sequence[str]) -> int:
        """Pending rows whose input stage failed become ``skipped`` (upstream_failed), a final state; so do the
        later stages of a row that expanded into other videos (a playlist), with ``expanded``."""
        total = 0
        now = time.time()
        cascades = (
            (UPSTREAM_FAILED, "{up} did not complete", "state='failed' OR (state='skipped' AND error_class=?)"),
            (EXPANDED, "not a video: {up} expanded it into videos of their own", "state='skipped' AND error_class=?"),
        )
        with self._tx():
            for up in upstream:
                for error_class, message, condition in cascades:
                    total += self.db.execute(
                        "UPDATE items SET state='skipped', error_class=?, error_message=?, finished_at=?"
                        " WHERE stage=? AND state='pending' AND video_id IN"
                        f" (SELECT video_id FROM items WHERE stage=? AND ({condition}))",
                        (error_class, message.format(up=up), now, stage, up, error_class),
                    ).rowcount
        return total

    def ready(self, stage: str, upstream: Sequence[str], limit: int | None = None) -> list[str]:
        """Pending video ids of ``stage`` whose input stages are all done or skipped."""
        sql = "SELECT i.video_id FROM items i WHERE i.stage=? AND i.state='pending'"
        params: list[Any] = [stage]
        if upstream:
            marks = ",".join("?" * len(upstream))
            sql += (
                f" AND NOT EXISTS (SELECT 1 FROM items r WHERE r.video_id=i.video_id AND r.stage IN ({marks})"
                " AND r.state NOT IN ('done','skipped'))"
            )
            params += list(upstream)
        sql += " ORDER BY i.video_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [r[0] for r in self.db.execute(sql, params)]

    def force(self, stage: str, video_ids: Sequence[str] | None = None) -> int:
        with self._tx():
            if video_ids is None:
                return self.db.execute(
                    "UPDATE items SET state='pending' WHERE stage=? AND state!='pending'", (stage,)
                ).rowcount
            n = 0
            for chunk in _chunks(list(video_ids), 500):
                marks = ",".join("?" * len(chunk))
                n += self.db.execute(
                    f"UPDATE items SET state='pending' WHERE stage=? AND video_id IN ({marks})", (stage, *chunk)
                ).rowcount
            return n

    # ---- execution ----------------------------------------------------------------------------
    def mark_running(self, stage: str, video_ids: Sequence[str], run_id: str) -> None:
        now = time.time()
        with self._tx():
            self.db.executemany(
                "UPDATE items SET state='running', attempts=attempts+1, started_at=?, run_id=?"
                " WHERE video_id=? AND stage=?",
                [(now, run_id, vid, stage) for vid in video_ids],
            )

    def record(self, outcome: ItemOutcome, fingerprint: str) -> None:
        """One transaction: the row's final state, its outputs, error and usage."""
        with self._tx():
            self.db.execute(
                "UPDATE items SET state=?, error_class=?, error_message=?, started_at=?, finished_at=?,"
                " duration_s=?, outputs=?, metrics=?, usage=?, fingerprint=? WHERE video_id=? AND stage=?",
                (
                    outcome.state,
                    outcome.error_class,
                    (outcome.error_message or "")[:2000] or None,
                    outcome.started_at,
                    outcome.finished_at,
                    outcome.finished_at - outcome.started_at,
                    json.dumps(outcome.outputs),
                    json.dumps(outcome.metrics, default=str),
                    json.dumps(outcome.usage) if outcome.usage else None,
                    fingerprint,
                    outcome.video_id,
                    outcome.stage,
                ),
            )

    # ---- reading back -------------------------------------------------------------------------
    def item(self, video_id: str, stage: str) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM items WHERE video_id=? AND stage=?", (video_id, stage))
        row = cur.fetchone()
        if row is None:
            return None
        data = dict(zip([c[0] for c in cur.description], row))
        for key in ("outputs", "metrics", "usage"):
            data[key] = json.loads(data[key]) if data[key] else {}
        return data

    def items(self, stage: str, state: str | None = None) -> list[dict[str, Any]]:
        sql, params = "SELECT video_id FROM items WHERE stage=?", [stage]
        if state:
            sql += " AND state=?"
            params.append(state)
        return [self.item(r[0], stage) for r in self.db.execute(sql + " ORDER BY video_id", params).fetchall()]

    def stages(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT stage FROM items")]

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for stage, state, n in self.db.execute("SELECT stage, state, COUNT(*) FROM items GROUP BY stage, state"):
            out.setdefault(stage, dict.fromkeys(STATES, 0))[state] = n
        return out

    def failures(self) -> list[dict[str, Any]]:
        """Failures and skips grouped by (stage, state, error_class), with a count and an example."""
        rows = self.db.execute(
            "SELECT stage, state, error_class, COUNT(*), MIN(video_id), MIN(error_message) FROM items"
            " WHERE state IN ('failed','skipped') GROUP BY stage, state, error_class ORDER BY stage, COUNT(*) DESC"
        ).fetchall()
        return [
            {"stage": r[0], "state": r[1], "error_class": r[2], "count": r[3], "example_video": r[4], "example": r[5]}
            for r in rows
        ]

    def throughput(self) -> dict[str, dict[str, float]]:
        """Per stage: items done, summed work seconds, and items per second of wall clock."""
        out = {}
        for stage, n, work, first, last in self.db.execute(
            "SELECT stage, COUNT(*), SUM(duration_s), MIN(started_at), MAX(finished_at) FROM items"
            " WHERE state='done' GROUP BY stage"
        ):
            wall = (last or 0) - (first or 0)
            out[stage] = {
                "done": n,
                "work_s": round(work or 0.0, 3),
                "per_item_s": round((work or 0.0) / n, 3) if n else 0.0,
                "items_per_s": round(n / wall, 3) if wall > 0 else 0.0,
            }
        return out

    def usage_totals(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for stage, usage in self.db.execute("SELECT stage, usage FROM items WHERE usage IS NOT NULL"):
            totals = out.setdefault(stage, {})
            for key, value in json.loads(usage).items():
                if isinstance(value, (int, float)):
                    totals[key] = totals.get(key, 0) + value
        return out

    def retry(self, stage: str | None = None, error_classes: Sequence[str] | None = None) -> int:
        """Failed rows (of one stage, or all; of some error classes, or any) go back to pending, with what was
        skipped because of them."""
        sql, params = "UPDATE items SET state='pending' WHERE state='failed'", []
        if stage:
            sql, params = sql + " AND stage=?", [stage]
        if error_classes is not None:
            sql += f" AND error_class IN ({','.join('?' * len(error_classes))})"
            params += list(error_classes)
        with self._tx():
            n = self.db.execute(sql, params).rowcount
            if n:
                self.db.execute(
                    "UPDATE items SET state='pending', error_class=NULL, error_message=NULL"
                    " WHERE state='skipped' AND error_class=?",
                    (UPSTREAM_FAILED,),
                )
        return n


    # ---- planning and status: read-only access and the queries pipeline.plan / pipeline.status make ------------
    @classmethod
    def open_readonly(cls, workdir: WorkDir | str | Path) -> Catalog:
        """The catalog for reading only: it creates and writes nothing (status of a read-only or full work dir)."""
        catalog = cls.__new__(cls)
        catalog.workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
        catalog.path = catalog.workdir.catalog_path
        uri = catalog.path.resolve().as_uri()
        catalog.db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60, isolation_level=None,
                                     check_same_thread=False)
        try:
            catalog.db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:  # a WAL database whose -shm file cannot be created here
            catalog.db.close()
            catalog.db = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None,
                                         check_same_thread=False)
        return catalog

    def first_video_ids(self, limit: int) -> set[str]:
        """The first ``limit`` videos in the order they were added (``--limit``)."""
        rows = self.db.execute("SELECT video_id FROM videos ORDER BY added_at, video_id LIMIT ?", (limit,))
        return {r[0] for r in rows}

    def video_ids(self) -> list[str]:
        """Every video id, in the order they were added."""
        return [r[0] for r in self.db.execute("SELECT video_id FROM videos ORDER BY added_at, video_id")]

    def last_run(self) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT run_id, command, started_at, finished_at FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
        return dict(zip(("run_id", "command", "started_at", "finished_at"), row)) if row else None

    def item_states(self, stages: Sequence[str]) -> dict[str, dict[str, tuple[str, str | None, str | None]]]:
        """{stage: {video_id: (state, fingerprint, error_class)}} for these stages."""
        out: dict[str, dict[str, tuple[str, str | None, str | None]]] = {s: {} for s in stages}
        for chunk in _chunks(list(stages), 500):
            marks = ",".join("?" * len(chunk))
            for vid, stage, state, fp, error_class in self.db.execute(
                f"SELECT video_id, stage, state, fingerprint, error_class FROM items WHERE stage IN ({marks})", chunk
            ):
                out[stage][vid] = (state, fp, error_class)
        return out

    def costly_ids(self, stages: Sequence[str]) -> dict[str, set[str]]:
        """Per stage, the done videos whose outputs cost model requests (usage with requests, tokens, cache hits
        or cost): what a re-run would overwrite and pay for again."""
        out: dict[str, set[str]] = {s: set() for s in stages}
        for stage, video_id, usage in self.db.execute(
            "SELECT stage, video_id, usage FROM items WHERE state='done' AND usage IS NOT NULL"
        ):
            if stage in out and any(
                isinstance(v, (int, float)) and v > 0 for k, v in json.loads(usage).items()
                if k in ("requests", "prompt_tokens", "completion_tokens", "cached", "cost_usd")
            ):
                out[stage].add(video_id)
        return out

    def outcome_totals(self) -> dict[str, dict[str, Any]]:
        """Per stage, the per-item outcomes and totals its finished rows reported (``metrics["items"]`` and
        ``metrics["totals"]``) summed: {stage: {"items": {"done": n, "rejected": {reason: n}, "failed": {reason: n}},
        "totals": {name: x}}}. Rows that are pending again (their metrics are stale) do not count."""
        out: dict[str, dict[str, Any]] = {}
        for stage, items, totals in self.db.execute(
            "SELECT stage, json_extract(metrics, '$.items'), json_extract(metrics, '$.totals') FROM items"
            " WHERE state IN ('done','skipped') AND metrics IS NOT NULL AND json_valid(metrics)"
            " AND (json_type(metrics, '$.items') = 'object' OR json_type(metrics, '$.totals') = 'object')"
        ):
            entry = out.setdefault(stage, {"items": {"done": 0, "rejected": {}, "failed": {}}, "totals": {}})
            for key, value in (json.loads(items) if items else {}).items():
                if key == "done" and isinstance(value, (int, float)):
                    entry["items"]["done"] += int(value)
                elif key in ("rejected", "failed") and isinstance(value, dict):
                    for reason, n in value.items():
                        if isinstance(n, (int, float)):
                            entry["items"][key][reason] = entry["items"][key].get(reason, 0) + int(n)
            for name, value in (json.loads(totals) if totals else {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    entry["totals"][name] = round(entry["totals"].get(name, 0.0) + float(value), 6)
        return out


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
