"""Shard writer benchmark.

- throughput: the streaming writer (row groups as it goes, shard rollover, temporary names renamed at the end)
  against one plain ``pyarrow`` write of the same rows (``Table.from_pylist`` + ``pq.write_table``, zstd);
  goal >= 0.8 of the plain write's speed.
- memory: peak RSS (in a fresh subprocess each: VmHWM, else ``resource.getrusage`` maxrss, which on Linux
  carries over the launching process's peak) of ``write_shards`` over work dirs
  with 2,000 and 20,000 dialogues; goal: the larger within 1.2x of the smaller.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Row, scratch

REPO = Path(__file__).resolve().parent.parent


def _dialogue_rows(count: int) -> list[dict]:
    rows = []
    for i in range(count):
        video, clip = f"vid{i // 40:05d}", f"vid{i // 40:05d}-c{(i // 10) % 4:03d}"
        turns = [{"role": "user" if t % 2 == 0 else "character", "speaker": "Monica" if t % 2 == 0 else "Ross",
                  "text": f"Turn {t} of dialogue {i}: a line of ordinary length for a role-play exchange."}
                 for t in range(6)]
        rows.append({"dialogue_id": f"{clip}-d{i % 10:02d}", "clip_id": clip, "video_id": video, "character": "Ross",
                     "generation_type": "llm", "generator": "model-x", "prompt_version": "dialogue-v1",
                     "turns": turns, "split": "train"})
    return rows


def _throughput(rows: list[dict], root: Path) -> tuple[float, float]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from v60k.dataset.schema import table_schema
    from v60k.dataset.writer import OutputSettings, _PartWriter

    schema = table_schema("dialogues")

    def plain() -> None:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), root / "plain.parquet", compression="zstd",
                       row_group_size=1000)

    def streaming() -> None:
        writer = _PartWriter(root / "streaming", "dialogues", "train", OutputSettings())
        for row in rows:
            writer.add(row, 256)
        writer.close()
        for index, part in enumerate(writer.parts):
            part.rename(part.with_name(f"train-{index:05d}-of-{len(writer.parts):05d}.parquet"))

    best_plain = best_streaming = float("inf")
    for _ in range(3):  # interleaved, best of three: the machine is shared
        start = time.perf_counter()
        plain()
        best_plain = min(best_plain, time.perf_counter() - start)
        shutil.rmtree(root / "streaming", ignore_errors=True)
        start = time.perf_counter()
        streaming()
        best_streaming = min(best_streaming, time.perf_counter() - start)
    return best_plain, best_streaming


_MEASURE = """
import resource, sys, json
from v60k.dataset.writer import OutputSettings, write_shards
if sys.argv[1] != "-":
    summary = write_shards(sys.argv[1], sys.argv[2], OutputSettings(card=False, check=False))
    rows = sum(sum(v.values()) for v in summary.rows.values())
else:
    rows = 0
# ru_maxrss survives fork + exec on Linux (it would report the launching process's peak); VmHWM belongs to
# this process's own address space, so it is the figure used where /proc exists.
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    pass
print(json.dumps({"maxrss_kb": peak, "rows": rows}))
"""


def _peak_rss(workdir: Path | None, out: Path) -> dict:
    args = [sys.executable, "-c", _MEASURE, str(workdir) if workdir else "-", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run() -> list[Row]:
    from v60k.testing.sample_workdirs import build_workdir, tiny_jpeg

    root = scratch("shard")
    out: list[Row] = []

    jpeg = tiny_jpeg(1, size=(160, 120))
    sizes = {}
    for dialogues in (2_000, 20_000):
        videos = dialogues // 40  # 4 clips x 10 dialogues per video
        workdir = root / f"work-{dialogues}"
        if not (workdir / "catalog.sqlite").exists():
            shutil.rmtree(workdir, ignore_errors=True)
            build_workdir(workdir, videos=videos, clips_per_video=4, dialogues_per_clip=10, lines_per_clip=6,
                          frames_per_clip=4, series_count=max(1, videos // 10), jpeg=jpeg)
        target = root / f"out-{dialogues}"
        shutil.rmtree(target, ignore_errors=True)
        start = time.perf_counter()
        sizes[dialogues] = _peak_rss(workdir, target)
        elapsed = time.perf_counter() - start
        out.append(Row("shard", f"write_shards peak RSS, {dialogues:,} dialogues", round(sizes[dialogues]["maxrss_kb"] / 1024, 1),
                       "MiB", f"{sizes[dialogues]['rows']:,} rows in {elapsed:.1f}s"))
    imports = _peak_rss(None, root / "unused")["maxrss_kb"]
    ratio = sizes[20_000]["maxrss_kb"] / sizes[2_000]["maxrss_kb"]
    out.append(Row("shard", "peak RSS 20k / 2k dialogues", round(ratio, 3), "x", "2k-dialogue run", "<= 1.2"))
    above = [(sizes[n]["maxrss_kb"] - imports) / 1024 for n in (2_000, 20_000)]
    out.append(Row("shard", "RSS above imports, 2k -> 20k", round(above[1], 1), "MiB", f"2k: {above[0]:.1f} MiB"))

    rows = _dialogue_rows(50_000)
    plain_s, streaming_s = _throughput(rows, root)
    out.insert(0, Row("shard", "throughput vs plain pyarrow write (50k dialogues)", round(plain_s / streaming_s, 3),
                      "x", f"plain {len(rows) / plain_s:,.0f} rows/s", ">= 0.8"))
    out.insert(1, Row("shard", "streaming writer", round(len(rows) / streaming_s), "rows/s"))
    return out


if __name__ == "__main__":
    for row in run():
        print(row)
