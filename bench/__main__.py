"""Run every benchmark module (bench/bench_*.py, each with ``run() -> list[Row]``) and print one table.

    python -m bench                 # all
    python -m bench scenes catalog  # only bench_scenes.py and bench_catalog.py
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path

from bench.common import Row


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))
    rows: list[Row] = []
    failed = []
    for name in names:
        start = time.perf_counter()
        print(f"== bench {name} ...", flush=True)
        try:
            rows += importlib.import_module(f"bench.bench_{name}").run()
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"== bench {name} took {time.perf_counter() - start:.1f}s", flush=True)
    width = max((len(r.metric) for r in rows), default=10)
    print()
    print(f"{'bench':<10} {'metric':<{width}} {'value':>10} {'unit':<8} {'baseline':<28} goal")
    for r in rows:
        print(f"{r.bench:<10} {r.metric:<{width}} {r.fmt():>10} {r.unit:<8} {r.baseline:<28} {r.goal}")
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
