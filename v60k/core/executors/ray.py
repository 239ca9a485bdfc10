"""The Ray executor: the same stage code in Ray actors (one ``setup()`` per actor), on an existing
cluster (``address``) or a local one. The work dir must be on a file system every node shares."""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from v60k.core.catalog import ItemOutcome
from v60k.core.errors import NO_RESOURCES
from v60k.core.executors.base import StageSpec, crashed, run_one
from v60k.core.stage import Resources, Video

TEARDOWN_TIMEOUT_S = 60.0  # how long the actors get to release what they hold before they are killed


class _StageActor:
    def __init__(self, spec: StageSpec):
        self.stage = spec.build()
        self.stage.setup()

    def process(self, video: Video) -> ItemOutcome:
        return run_one(self.stage, video)

    def teardown(self) -> None:
        self.stage.teardown()


def placeable_workers(resources: Resources, wanted: int, cluster: dict[str, float]) -> tuple[int, str | None]:
    """How many actors of ``resources`` the cluster can hold at once (at most ``wanted``; actors that could never
    be placed would leave their videos waiting forever), or 0 and the reason when it can hold none."""
    needs = {"CPU": resources.cpus, "GPU": resources.gpus, "memory": resources.memory_gb * 2**30}
    fits = wanted
    for key, need in needs.items():
        if need > 0:
            fits = min(fits, int(cluster.get(key, 0.0) // need))
    if fits >= 1:
        return fits, None

    def show(amount: float, key: str) -> str:
        return f"{amount / 2**30:.3g} GiB memory" if key == "memory" else f"{amount:g} {key}"

    have = ", ".join(show(cluster.get(k, 0.0), k) for k, need in needs.items() if need > 0)
    want = ", ".join(show(need, k) for k, need in needs.items() if need > 0)
    return 0, f"the Ray cluster has {have}; one worker of this stage needs {want} (see the config's resources:)"


class RayExecutor:
    def __init__(
        self,
        workers: int = 1,
        address: str | None = None,
        temp_dir: str | None = None,
        num_cpus: int | None = None,
        node_ip_address: str | None = None,
    ):
        self.workers = max(1, int(workers))
        self.address = address
        self.temp_dir = temp_dir or os.environ.get("V60K_RAY_TMPDIR")
        self.num_cpus = num_cpus
        self.node_ip_address = node_ip_address or os.environ.get("V60K_RAY_NODE_IP")
        self._started_here = False

    def _ensure_ray(self) -> Any:
        import ray

        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if self.address:
                kwargs["address"] = self.address
            else:
                kwargs["num_cpus"] = self.num_cpus or max(self.workers, os.cpu_count() or 1)
                if self.temp_dir:
                    kwargs["_temp_dir"] = self.temp_dir
                if self.node_ip_address:
                    kwargs["_node_ip_address"] = self.node_ip_address
                # a local cluster's workers import stage classes from wherever the driver does
                paths = [p for p in sys.path if p and os.path.isdir(p)]
                kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}
            ray.init(**kwargs)
            self._started_here = True
        return ray

    def run(self, spec: StageSpec, videos: Iterable[Video]) -> Iterator[ItemOutcome]:
        source = iter(videos)
        first = next(source, None)
        if first is None:
            return
        ray = self._ensure_ray()
        resources = spec.resources
        options: dict[str, Any] = {"num_cpus": resources.cpus, "num_gpus": resources.gpus, "max_restarts": 0}
        if resources.memory_gb:
            options["memory"] = int(resources.memory_gb * 2**30)
        workers, shortage = placeable_workers(resources, resources.workers or self.workers, ray.cluster_resources())
        if shortage:  # no actor could ever start: say so for every video instead of waiting forever
            for video in itertools.chain([first], source):
                yield crashed(spec.stage_class.name, video, shortage, NO_RESOURCES)
            return
        actor_class = ray.remote(_StageActor).options(**options)
        actors = [actor_class.remote(spec) for _ in range(workers)]
        idle = list(actors)
        in_flight: dict[Any, tuple[Any, Video]] = {}
        pending_video: Video | None = first
        try:
            while True:
                while idle and (pending_video is not None):
                    actor = idle.pop()
                    in_flight[actor.process.remote(pending_video)] = (actor, pending_video)
                    pending_video = next(source, None)
                if not in_flight:
                    return
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                ref = ready[0]
                actor, video = in_flight.pop(ref)
                try:
                    outcome = ray.get(ref)
                    idle.append(actor)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                    outcome = crashed(spec.stage_class.name, video, f"Ray actor died: {type(exc).__name__}")
                    idle.append(actor_class.remote(spec))  # replace the dead actor
                except ray.exceptions.RayError as exc:
                    outcome = crashed(spec.stage_class.name, video, f"Ray task failed: {exc}")
                    idle.append(actor)
                yield outcome
        finally:
            alive = list({id(a): a for a in actors + idle}.values())
            with contextlib.suppress(Exception):  # each actor releases what setup() took; a dead one cannot
                ray.wait([a.teardown.remote() for a in alive], num_returns=len(alive), timeout=TEARDOWN_TIMEOUT_S)
            for actor in alive:
                with contextlib.suppress(Exception):  # already dead
                    ray.kill(actor, no_restart=True)

    def close(self) -> None:
        if self._started_here:
            import ray

            ray.shutdown()
            self._started_here = False
