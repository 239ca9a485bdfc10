"""A SQLite response cache: one row per (model, messages, parameters, schema), so a re-run or a resume
repeats zero requests. Only validated answers are stored; several worker processes may share the file.
It also keeps what was learnt of an endpoint (the structured-output form it accepts, whether it takes images),
so that a re-run probes nothing."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key        TEXT PRIMARY KEY,
    model      TEXT NOT NULL,
    answer     TEXT NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS capabilities (
    endpoint   TEXT NOT NULL,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (endpoint, name)
) WITHOUT ROWID;
"""


def request_key(model: str, messages: list[dict[str, Any]], params: dict[str, Any],
                schema: dict[str, Any] | None) -> str:
    """The cache key: a hash of everything that determines the answer (not the key, timeout or retries)."""
    blob = json.dumps({"model": model, "messages": messages, "params": params, "schema": schema},
                      sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.db.execute("SELECT answer FROM responses WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, model: str, answer: dict[str, Any]) -> None:
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO responses(key, model, answer, created_at) VALUES (?,?,?,?)",
                            (key, model, json.dumps(answer, ensure_ascii=False), time.time()))

    def capability(self, endpoint: str, name: str) -> Any:
        """A stored capability of ``endpoint`` (its base URL and model), or None when never probed."""
        with self._lock:
            row = self.db.execute("SELECT value FROM capabilities WHERE endpoint=? AND name=?",
                                  (endpoint, name)).fetchone()
        return json.loads(row[0]) if row else None

    def set_capability(self, endpoint: str, name: str, value: Any) -> None:
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO capabilities(endpoint, name, value, created_at) VALUES (?,?,?,?)",
                            (endpoint, name, json.dumps(value), time.time()))

    def __len__(self) -> int:
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self.db.close()
