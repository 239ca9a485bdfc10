"""Reading a shard folder: the shard files of a table and split, and their rows or columns (with filters).

    files = shard_files("corpus", "dialogues")              # {"train": [Path, ...], "test": [...]}
    table = read_table("corpus", "clips", "test", columns=["clip_id"], filters=[("clip_id", "in", ids)])
    for row in iter_rows("corpus", "utterances", columns=["text", "character"]): ...

Shards are ``<root>/data/<table>/<split>-NNNNN-of-NNNNN.parquet`` (as ``v60k shard`` writes them and the Hub
serves them); files of another name, and hidden folders (staging), are not shards. Splits come in the order
train, validation, test, then any other by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SPLIT_ORDER = ("train", "validation", "test")
SHARD_NAME = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")


def split_key(split: str) -> tuple[int, str]:
    """Sort key: train, validation, test, then the others by name."""
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def shard_files(root: str | Path, table: str, split: str | None = None) -> dict[str, list[Path]]:
    """``{split: [shard paths in shard order]}`` of ``table`` (only ``split`` when given), splits ordered."""
    folder = Path(root) / "data" / table
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
        match = SHARD_NAME.match(path.name)
        if match and (split is None or match["split"] == split):
            found.setdefault(match["split"], []).append(path)
    return {name: found[name] for name in sorted(found, key=split_key)}


def table_files(root: str | Path, table: str, split: str | None = None) -> list[Path]:
    """The shard paths of ``table`` (one split, or all of them in split order)."""
    return [path for paths in shard_files(root, table, split).values() for path in paths]


def splits_of(root: str | Path, table: str) -> list[str]:
    return list(shard_files(root, table))


def read_table(root: str | Path, table: str, split: str | None = None, columns: list[str] | None = None,
               filters: Any = None) -> Any:
    """The rows of ``table`` (one split or all) as one ``pyarrow.Table``; None when it has no shard.

    Columns a shard lacks are left out rather than failing (shards of older schemas); ``filters`` are
    pyarrow's (``[("video_id", "in", ids)]``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = []
    for path in table_files(root, table, split):
        names = pq.ParquetFile(path).schema_arrow.names
        wanted = [c for c in columns if c in names] if columns is not None else None
        parts.append(pq.read_table(path, columns=wanted, filters=filters))
    if not parts:
        return None
    return pa.concat_tables(parts, promote_options="default") if len(parts) > 1 else parts[0]


def read_rows(root: str | Path, table: str, split: str | None = None, columns: list[str] | None = None,
              filters: Any = None) -> list[dict[str, Any]]:
    """``read_table`` as a list of dicts (empty when there is no shard)."""
    found = read_table(root, table, split, columns, filters)
    return found.to_pylist() if found is not None else []


def iter_rows(root: str | Path, table: str, split: str | None = None, columns: list[str] | None = None,
              batch_size: int = 256) -> Iterator[dict[str, Any]]:
    """Rows batch by batch (large columns such as frames stay out of memory when ``columns`` omits them)."""
    import pyarrow.parquet as pq

    for path in table_files(root, table, split):
        handle = pq.ParquetFile(path)
        wanted = [c for c in columns if c in handle.schema_arrow.names] if columns is not None else None
        for batch in handle.iter_batches(batch_size=batch_size, columns=wanted):
            yield from batch.to_pylist()


def row_counts(root: str | Path, table: str) -> dict[str, int]:
    """Rows per split, from the Parquet footers (no data read)."""
    import pyarrow.parquet as pq

    return {split: sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
            for split, paths in shard_files(root, table).items()}
