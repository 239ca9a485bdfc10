"""The shard reader: which files are shards of a table and split, and reading them with columns and filters."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from v60k.dataset import reader


def _write(root: Path, name: str, rows: list[dict]) -> None:
    path = root / "data" / "clips" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_shards_by_split_in_order_and_nothing_else(tmp_path: Path) -> None:
    _write(tmp_path, "train-00001-of-00002.parquet", [{"clip_id": "b", "n": 2}])
    _write(tmp_path, "train-00000-of-00002.parquet", [{"clip_id": "a", "n": 1}])
    _write(tmp_path, "test-00000-of-00001.parquet", [{"clip_id": "t", "n": 3}])
    _write(tmp_path, "zextra-00000-of-00001.parquet", [{"clip_id": "z", "n": 4}])
    _write(tmp_path, "notes.parquet", [{"clip_id": "x", "n": 0}])  # not a shard name
    (tmp_path / "data" / "clips" / ".staging-1").mkdir()
    files = reader.shard_files(tmp_path, "clips")
    assert list(files) == ["train", "test", "zextra"]
    assert [p.name for p in files["train"]] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert reader.shard_files(tmp_path, "videos") == {} and reader.read_table(tmp_path, "videos") is None
    assert [r["clip_id"] for r in reader.read_rows(tmp_path, "clips", "train")] == ["a", "b"]
    assert reader.row_counts(tmp_path, "clips") == {"train": 2, "test": 1, "zextra": 1}


def test_columns_a_shard_lacks_are_left_out_and_filters_apply(tmp_path: Path) -> None:
    _write(tmp_path, "train-00000-of-00001.parquet", [{"clip_id": "a", "n": 1}, {"clip_id": "b", "n": 2}])
    rows = reader.read_rows(tmp_path, "clips", columns=["clip_id", "summary"], filters=[("clip_id", "in", ["b"])])
    assert rows == [{"clip_id": "b"}]
    assert [r["n"] for r in reader.iter_rows(tmp_path, "clips", columns=["n"], batch_size=1)] == [1, 2]
