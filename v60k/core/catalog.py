"""The catalog: one SQLite row per (video, stage) with its state, error, timings and fingerprint.

Only the driver process writes (executors hand results back), each state change in one transaction;
WAL mode lets ``status`` read while a run writes. ``done`` means the outputs were renamed into place
and were produced with the fingerprint (stage version + settings hash) stored on the row.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from v60k.core.errors import EXPANDED, UPSTREAM_FAILED, WorkDirError
from v60k.core.stage import Video
from v60k.core.workdir import VideoPaths, WorkDir, read_json, sanitize_id

STATES = ("pending", "running", "done", "failed", "skipped")
FINAL_STATES = ("done", "failed", "skipped")

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
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
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


class CatalogDamaged(WorkDirError):
    """The catalog is empty, unreadable or not a catalog (while the work dir may hold outputs): nothing was
    changed; ``v60k doctor --repair`` rebuilds it from the per-video outputs."""


class Catalog:
    """The work dir's catalog. ``read_only=True`` opens it without writing anything (a read-only mount works);
    a catalog file that is empty or unreadable while ``videos/`` holds outputs raises ``CatalogDamaged``
    instead of starting over (``check_damage=False`` is for the rebuild only). A work dir without a catalog
    file starts a new one (``v60k doctor`` reports video folders it does not know)."""

    def __init__(self, workdir: WorkDir | str | Path, read_only: bool = False, check_damage: bool = True):
        self.workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
        self.path = self.workdir.catalog_path
        self.read_only = read_only
        existed = True
        if read_only and not self.path.exists():
            raise FileNotFoundError(f"no catalog in {self.workdir.root} (run the pipeline first)")
        if not read_only:
            existed = self.path.exists()
            self.workdir.create()
        try:
            if read_only:
                self.db = _connect_read_only(self.path)
            else:
                self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            if hasattr(self, "db"):
                self.db.close()
            if not is_damage(exc):  # a full disk, a read-only file: the caller says what it is
                raise
            raise CatalogDamaged(_damage_message(self.workdir, f"cannot be read ({exc})")) from exc
        if "videos" not in tables and (read_only or (
                check_damage and existed and _video_dirs_with_outputs(self.workdir, 1))):
            self.db.close()
            detail = "is empty (0 bytes)" if self.path.stat().st_size == 0 else "holds no catalog tables"
            raise CatalogDamaged(_damage_message(self.workdir, detail))
        if read_only:
            return
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # durable across a killed process in WAL mode
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(_SCHEMA)
        self._ensure_identity()

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
        """Update title / characters / language / license learnt while processing (e.g. from info.json), or the
        source URL of a local file that ``chat`` serves on a new port each time."""
        allowed = {"title", "characters", "language", "license", "series", "source_url"}
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

    # ---- the corpus report: which stages are done for each video ----------------------------------------
    def done_stages(self) -> dict[str, set[str]]:
        """{video_id: the stages whose item is ``done``} (videos with none are absent)."""
        done: dict[str, set[str]] = {}
        for video_id, stage in self.db.execute("SELECT video_id, stage FROM items WHERE state='done'"):
            done.setdefault(video_id, set()).add(stage)
        return done

    # ---- planning and status: the queries pipeline.plan / pipeline.status make ------------------------------
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
        marks = ",".join("?" * len(out))  # a handful of stage names: one query
        for vid, stage, state, fp, error_class in self.db.execute(
            f"SELECT video_id, stage, state, fingerprint, error_class FROM items WHERE stage IN ({marks})", list(out)
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

    # ---- identity, health and rebuild from the per-video outputs (`v60k doctor`) ---------------
    def _ensure_identity(self) -> None:
        if self.catalog_id is None:
            with self._tx():
                self.db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('catalog_id', ?)",
                                (uuid.uuid4().hex,))

    @property
    def catalog_id(self) -> str | None:
        """A random id given to this catalog when it was created (None: a catalog from before ids, read-only)."""
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key='catalog_id'").fetchone()
        except sqlite3.OperationalError:  # no meta table
            return None
        return row[0] if row else None

    @property
    def rebuilt(self) -> bool:
        """Whether ``v60k doctor --repair`` rebuilt this catalog from the per-video outputs."""
        try:
            return self.db.execute("SELECT 1 FROM meta WHERE key='rebuilt_at'").fetchone() is not None
        except sqlite3.OperationalError:
            return False

    @classmethod
    def diagnose(cls, workdir: WorkDir | str | Path) -> dict[str, Any]:
        """The catalog's health, read-only: ``state`` is ok, missing, empty or damaged; video folders holding
        outputs that the catalog does not know; SQLite's own integrity check."""
        workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
        dirs = _video_dirs_with_outputs(workdir)
        health: dict[str, Any] = {"workdir": str(workdir.root), "state": "ok", "detail": "", "video_dirs": len(dirs),
                                  "catalog_videos": None, "unknown_dirs": []}
        if not workdir.catalog_path.exists():
            health.update(state="missing", detail="no catalog.sqlite")
            return health
        try:
            with cls(workdir, read_only=True) as catalog:
                check = catalog.db.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    health.update(state="damaged", detail=f"integrity check: {check}")
                    return health
                known = {r[0] for r in catalog.db.execute("SELECT video_id FROM videos")}
        except CatalogDamaged as exc:
            empty = workdir.catalog_path.stat().st_size == 0
            health.update(state="empty" if empty else "damaged", detail=str(exc).split(";")[0])
            return health
        except sqlite3.DatabaseError as exc:
            health.update(state="damaged", detail=str(exc))
            return health
        health["catalog_videos"] = len(known)
        health["unknown_dirs"] = sorted(set(dirs) - known)
        return health

    @classmethod
    def rebuild(cls, workdir: WorkDir | str | Path, stage_outputs: Mapping[str, str],
                manifest_rows: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
        """Repair what ``diagnose`` found: a missing, empty or damaged catalog is moved aside (never deleted) and
        rebuilt from ``videos/<id>/``; video folders the catalog does not know are added to it. ``manifest_rows``
        (the manifest's rows) give back what no output file holds: series, cast, the manifest's URL.
        ``stage_outputs`` ({stage: VideoPaths attribute of its JSON output}) says which stages a file marks done."""
        workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
        health = cls.diagnose(workdir)
        result: dict[str, Any] = {"state": health["state"], "moved_aside": [], "videos": 0, "stages": {}}
        if (health["state"] == "ok" and not health["unknown_dirs"]) or (
                health["state"] == "missing" and not health["video_dirs"]):
            return result
        ids = None if health["state"] != "ok" else health["unknown_dirs"]
        if health["state"] in ("empty", "damaged"):
            stamp = time.strftime("%Y%m%dT%H%M%S")
            for suffix in ("", "-wal", "-shm"):
                source = workdir.catalog_path.with_name(workdir.catalog_path.name + suffix)
                if source.exists():
                    target = source.with_name(f"{source.name}.damaged-{stamp}")
                    os.replace(source, target)
                    result["moved_aside"].append(str(target))
        with cls(workdir, check_damage=False) as catalog:
            if ids is None:  # a new catalog: the corpus it builds may replace one of the catalog it stands for
                with catalog._tx():
                    catalog.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('rebuilt_at', ?)",
                                       (str(time.time()),))
            recovered = catalog.recover_videos(stage_outputs, manifest_rows, ids)
        result.update(videos=recovered.pop("videos"), stages=recovered)
        return result

    def recover_videos(self, stage_outputs: Mapping[str, str], manifest_rows: Iterable[dict[str, Any]] = (),
                       video_ids: Sequence[str] | None = None) -> dict[str, int]:
        """Catalog rows for video folders (all, or ``video_ids``) from their outputs: the video from
        ``info.json`` (and the manifest row of the same id, when given), and ``done`` for every stage whose
        JSON output is there and readable. Done rows get no fingerprint: any settings accept them."""
        by_id = {row["video_id"]: row for row in manifest_rows}
        ids = video_ids if video_ids is not None else _video_dirs_with_outputs(self.workdir)
        taken = {r[0] for r in self.db.execute("SELECT source_url FROM videos")}
        rows, done = [], []
        for vid in ids:
            paths = VideoPaths(self.workdir.video_dir(vid))
            docs = {stage: _read_or_none(getattr(paths, attr)) for stage, attr in stage_outputs.items()}
            info, given = docs["download"] or {}, by_id.get(vid, {})
            url = given.get("source_url") or info.get("webpage_url") or f"recovered:{vid}"
            if url in taken:
                url = f"{url}#recovered-{vid}"
            taken.add(url)
            rows.append({"video_id": vid, "source_url": url, "series": given.get("series"),
                         "characters": given.get("characters") or (docs["attribute"] or {}).get("cast") or [],
                         "language": given.get("language") or (docs["transcribe"] or {}).get("language"),
                         "license": given.get("license") or info.get("license"),
                         "title": given.get("title") or info.get("title"),
                         "extra": {**(given.get("extra") or {}), "recovered": True}})
            for stage, attr in stage_outputs.items():
                if docs[stage] is not None:
                    done.append((vid, stage, getattr(paths, attr).stat().st_mtime, getattr(paths, attr).name))
        added, _ = self.add_videos(rows)
        counts: dict[str, int] = {"videos": added}
        with self._tx():
            for vid, stage, when, name in done:
                self.db.execute(
                    "INSERT INTO items(video_id, stage, state, finished_at, outputs, metrics) VALUES"
                    " (?,?,'done',?,?,?) ON CONFLICT(video_id, stage) DO UPDATE SET state='done',"
                    " finished_at=excluded.finished_at, outputs=excluded.outputs, metrics=excluded.metrics,"
                    " fingerprint=NULL, error_class=NULL, error_message=NULL",
                    (vid, stage, when, json.dumps({stage: name}), json.dumps({"recovered": True})),
                )
                counts[stage] = counts.get(stage, 0) + 1
        return counts


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """``mode=ro``; a WAL catalog on read-only media without its ``-shm`` file is opened ``immutable`` (safe
    when no write-ahead log is pending)."""
    uri = f"file:{quote(str(path))}?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None, check_same_thread=False)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size:
            raise
    return sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False)


def _video_dirs_with_outputs(workdir: WorkDir, limit: int | None = None) -> list[str]:
    """Ids of ``videos/<id>/`` folders that hold any file (at most ``limit`` of them), in id order."""
    found: list[str] = []
    try:
        entries = sorted(os.scandir(workdir.root / "videos"), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        if entry.is_dir() and entry.name == sanitize_id(entry.name) and _has_files(entry.path):
            found.append(entry.name)
            if limit is not None and len(found) >= limit:
                break
    return found


def _has_files(folder: str) -> bool:
    with os.scandir(folder) as entries:
        return any(True for _ in entries)


def _damage_message(workdir: WorkDir, detail: str) -> str:
    outputs = len(_video_dirs_with_outputs(workdir))
    if not outputs:
        return (f"the catalog {workdir.catalog_path} {detail}; nothing was changed. `v60k doctor --workdir "
                f"{workdir.root} --repair` moves it aside")
    return (f"the catalog {workdir.catalog_path} {detail} while videos/ holds the outputs of {outputs} video(s); "
            f"nothing was changed. Rebuild it from those outputs with `v60k doctor --workdir {workdir.root} --repair`")


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite's error says the file itself is bad or incomplete (rather than the disk or its
    permissions)."""
    text = str(exc).lower()
    return any(word in text for word in ("not a database", "malformed", "corrupt", "no such table"))


def _read_or_none(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


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
