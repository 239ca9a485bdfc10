"""What in a corpus folder v60k wrote, and whether a new corpus may replace it.

Every corpus folder v60k writes holds ``.v60k-corpus.json``: the work dir that built it (absolute path and the
catalog's random id), its rows per table, and every file v60k wrote there with its size, mtime and SHA-256.
Before writing, the writer inspects the folder:

- a file v60k did not write (not in the record, not recognisably a v60k shard or card) is *foreign*: the folder
  is refused, whatever ``overwrite`` says; v60k never deletes it;
- a recorded file changed since, or a v60k file without a record (an older version, an interrupted write),
  is replaced only with ``overwrite``;
- a corpus built from another work dir, or an empty corpus over one with rows, is replaced only with
  ``overwrite``.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from v60k import __version__
from v60k.core.errors import V60kError
from v60k.core.workdir import read_json, write_json
from v60k.dataset.reader import SHARD_NAME
from v60k.dataset.schema import META_TABLE, TABLES
from v60k.stages.download import content_hash

RECORD_NAME = ".v60k-corpus.json"
FORCE_HINT = "pass --force (Python: overwrite=True; a run's output step: `output: {overwrite: true}`)"
_OURS_TRANSIENT = re.compile(r"^\.(staging|data-old)-\d+$|^\.README\.md\.tmp$")
_LISTED = 5  # foreign or changed files named in a message


class CorpusError(V60kError):
    """The corpus was not written (a folder v60k may not replace, or one it cannot write to); the folder is as
    it was."""


@dataclass
class CorpusRecord:
    """The content of ``.v60k-corpus.json``."""

    workdir: str | None = None
    catalog_id: str | None = None
    rows: dict[str, int] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # rel path → {size, mtime_ns, sha256}
    written_by: str = f"v60k {__version__}"
    written_at: str = ""

    @classmethod
    def read(cls, folder: Path) -> CorpusRecord | None:
        try:
            data = read_json(folder / RECORD_NAME)
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except (OSError, ValueError, TypeError):
            return None

    def write(self, folder: Path) -> Path:
        self.written_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return write_json(folder / RECORD_NAME, vars(self))

    def built_from(self, workdir: str, catalog_id: str | None, rebuilt: bool = False) -> bool:
        """The same catalog: the same id; where either has none, or the catalog was rebuilt from the work dir's
        outputs (``v60k doctor --repair``), the same work dir path."""
        if self.catalog_id and catalog_id and not rebuilt:
            return self.catalog_id == catalog_id
        return self.workdir == workdir

    def describe(self) -> str:
        rows = ", ".join(f"{self.rows.get(t, 0)} {t}" for t in TABLES)
        catalog = f" (catalog {self.catalog_id[:8]})" if self.catalog_id else ""
        return f"a corpus of {rows} built from work dir {self.workdir}{catalog}"


def file_facts(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": content_hash(path)}


def _unchanged(path: Path, facts: dict[str, Any]) -> bool:
    stat = path.stat()
    if stat.st_size != facts.get("size"):
        return False
    return stat.st_mtime_ns == facts.get("mtime_ns") or file_facts(path)["sha256"] == facts.get("sha256")


@dataclass
class FolderState:
    """A corpus folder as found: the record, and its files by who wrote them."""

    root: Path
    record: CorpusRecord | None = None
    ours: list[str] = field(default_factory=list)  # recorded and unchanged
    changed: list[str] = field(default_factory=list)  # recorded but changed, or v60k's without a record
    foreign: list[str] = field(default_factory=list)
    legacy_rows: dict[str, int] = field(default_factory=dict)  # rows of unrecorded v60k shards

    @property
    def empty(self) -> bool:
        return not (self.ours or self.changed or self.foreign)

    @property
    def rows(self) -> dict[str, int]:
        if self.record is not None:
            return dict(self.record.rows)
        return dict(self.legacy_rows)


def inspect_folder(root: Path) -> FolderState:
    """Classify every file under ``root`` (see the module doc)."""
    state = FolderState(root=root, record=CorpusRecord.read(root))
    recorded = state.record.files if state.record else {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if not _OURS_TRANSIENT.match(d)]
            filenames = [f for f in filenames if f != RECORD_NAME and not _OURS_TRANSIENT.match(f)]
        links = [d for d in dirnames if (here / d).is_symlink()]  # os.walk does not enter them: foreign as a whole
        state.foreign += [(here / d).relative_to(root).as_posix() for d in sorted(links)]
        for name in sorted(filenames):
            path = here / name
            rel = path.relative_to(root).as_posix()
            if rel in recorded:
                (state.ours if _unchanged(path, recorded[rel]) else state.changed).append(rel)
            elif _is_v60k_file(path, rel, state):
                state.changed.append(rel)
            else:
                state.foreign.append(rel)
    return state


def _is_v60k_file(path: Path, rel: str, state: FolderState) -> bool:
    """A shard carrying v60k's table metadata in its own folder, or a card listing exactly v60k's tables."""
    parts = rel.split("/")
    if len(parts) == 3 and parts[0] == "data" and parts[1] in TABLES and SHARD_NAME.match(parts[2]):
        try:
            parquet = pq.ParquetFile(path)
            declared = (parquet.schema_arrow.metadata or {}).get(META_TABLE, b"").decode()
        except Exception:  # not Parquet at all
            return False
        if declared == parts[1]:
            state.legacy_rows[declared] = state.legacy_rows.get(declared, 0) + parquet.metadata.num_rows
            return True
        return False
    if rel == "README.md":
        from v60k.dataset.card import read_card_header

        try:
            configs = read_card_header(path).get("configs") or []
        except (ValueError, OSError):
            return False
        return sorted(c.get("config_name") for c in configs if isinstance(c, dict)) == sorted(TABLES)
    return False


def _listing(paths: list[str]) -> str:
    shown = ", ".join(paths[:_LISTED])
    return shown + (f" and {len(paths) - _LISTED} more" if len(paths) > _LISTED else "")


def check_replaceable(state: FolderState, workdir: str, catalog_id: str | None, overwrite: bool,
                      rebuilt: bool = False) -> None:
    """Raise ``CorpusError`` unless a corpus of ``workdir`` may be written into ``state.root``."""
    root = state.root
    if state.foreign:
        raise CorpusError(f"not written: {root} holds {len(state.foreign)} file(s) v60k did not write "
                          f"({_listing(state.foreign)}); v60k replaces only what it wrote. Move them away or "
                          "choose an empty folder for the corpus")
    if overwrite or state.empty:
        return
    if state.changed:
        why = ("changed since v60k wrote them" if state.record else
               "written by v60k without a record of its work dir (an older version or an interrupted write)")
        raise CorpusError(f"not written: {root} holds file(s) {why}: {_listing(state.changed)}; "
                          f"to replace them, {FORCE_HINT}")
    if state.record is not None and not state.record.built_from(workdir, catalog_id, rebuilt):
        which = f"not from {workdir}" if state.record.workdir != workdir else "an earlier catalog of this work dir"
        raise CorpusError(f"not written: {root} holds {state.record.describe()}, {which}; "
                          f"check --workdir, or to replace it, {FORCE_HINT}")


def check_not_emptied(state: FolderState, new_rows: dict[str, int], workdir: str, overwrite: bool) -> None:
    """Refuse an empty corpus over one with rows (a mistyped or fresh work dir), unless ``overwrite``."""
    old = state.rows
    if overwrite or sum(new_rows.values()) or not sum(old.values()):
        return
    rows = ", ".join(f"{old.get(t, 0)} {t}" for t in TABLES)
    raise CorpusError(f"not written: the work dir {workdir} has no finished video, and {state.root} holds a corpus "
                      f"({rows}) that an empty one would replace; check --workdir, or to empty it, {FORCE_HINT}")


def shrinkage(state: FolderState, new_rows: dict[str, int]) -> list[str]:
    """Warnings for the tables that lose rows against the corpus being replaced."""
    old = state.rows
    return [f"{table}: {old[table]} → {new_rows.get(table, 0)} rows (fewer than the corpus replaced)"
            for table in TABLES if old.get(table, 0) > new_rows.get(table, 0)]
