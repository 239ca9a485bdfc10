"""The default executor: the driver process itself (1 worker) or a pool of spawned worker processes."""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from v60k.core.catalog import ItemOutcome
from v60k.core.executors.base import StageSpec, crashed, run_one
from v60k.core.stage import Stage, Video

_worker_stage: Stage | None = None


def _init_worker(spec: StageSpec) -> None:
    global _worker_stage
    _worker_stage = spec.build()
    _worker_stage.setup()  # models load once per worker process
    # teardown() when the pool lets the worker go (run by multiprocessing as the process ends)
    multiprocessing.util.Finalize(_worker_stage, _worker_stage.teardown, exitpriority=10)


def _process(video: Video) -> ItemOutcome:
    assert _worker_stage is not None
    return run_one(_worker_stage, video)


class LocalExecutor:
    def __init__(self, workers: int = 1):
        self.workers = max(1, int(workers))

    def run(self, spec: StageSpec, videos: Iterable[Video]) -> Iterator[ItemOutcome]:
        workers = spec.resources.workers or self.workers
        if workers == 1:
            yield from self._run_inline(spec, videos)
        else:
            yield from self._run_pool(spec, videos, workers)

    def _run_inline(self, spec: StageSpec, videos: Iterable[Video]) -> Iterator[ItemOutcome]:
        stage = None
        try:
            for video in videos:
                if stage is None:  # build lazily: nothing to load when nothing is pending
                    stage = spec.build()
                    stage.setup()
                yield run_one(stage, video)
        finally:
            if stage is not None:
                stage.teardown()

    def _run_pool(self, spec: StageSpec, videos: Iterable[Video], workers: int) -> Iterator[ItemOutcome]:
        source = iter(videos)
        context = multiprocessing.get_context("spawn")
        pool: ProcessPoolExecutor | None = None
        in_flight: dict[Future[ItemOutcome], Video] = {}
        exhausted = False
        try:
            while True:
                while not exhausted and len(in_flight) < 2 * workers:
                    video = next(source, None)
                    if video is None:
                        exhausted = True
                        break
                    if pool is None:
                        pool = ProcessPoolExecutor(
                            workers, mp_context=context, initializer=_init_worker, initargs=(spec,)
                        )
                    in_flight[pool.submit(_process, video)] = video
                if not in_flight:
                    return
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    video = in_flight.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool:
                        # a worker died (segfault, OOM kill): fail what was in flight, start a new pool
                        yield crashed(spec.stage_class.name, video, "worker process died while processing")
                        for other in list(in_flight):
                            lost = in_flight.pop(other)
                            if other.done() and other.exception() is None:
                                yield other.result()
                            else:
                                yield crashed(spec.stage_class.name, lost, "worker pool broke")
                        if pool is not None:
                            pool.shutdown(wait=False, cancel_futures=True)
                        pool = None
                        break
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        pass
