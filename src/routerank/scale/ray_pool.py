"""The Ray executor: shards go to a pool of actors, each of which builds its worker (loads its model) once.

Placement: actors reserve `cpus_per_worker` (and `gpus_per_worker`) and are spread over the cluster's nodes.
Each actor runs one shard at a time; when a shard returns, the driver writes it to the job's `ShardStore` and
hands that actor the next shard, so fast actors take more shards and a slow node never holds the job back.

Faults: an actor whose process dies is restarted (`max_restarts`), which rebuilds its worker, and the shard it
was running is resubmitted (`max_task_retries`). Shards are pure functions of their input, so a retried shard
returns what the lost attempt would have, and the driver stores each shard once: nothing is lost or duplicated.
An exception raised by routerank's own code inside a shard (bad input) is not retried: it is re-raised in the
driver as that routerank error, with the shard named, not as a Ray traceback.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from routerank.errors import RouterankError
from routerank.scale.options import RayOptions, connect
from routerank.scale.shards import ShardStore
from routerank.scale.work import WorkerFactory, progress_bar


class ShardHost:
    """The actor body: one worker per actor, built from the factory when the actor (re)starts."""

    def __init__(self, factory: WorkerFactory):
        self.worker = factory()

    def call(self, method: str, shard: Any) -> tuple[Any, str, int]:
        """The worker's `method` on `shard`, with the node id and process id that ran it."""
        # heavy, optional: Ray loads only when ray= asks for it
        import ray

        return getattr(self.worker, method)(shard), ray.get_runtime_context().get_node_id(), os.getpid()

    def where(self) -> tuple[str, int]:
        """(node id, process id) of this actor."""
        # heavy, optional: Ray loads only when ray= asks for it
        import ray

        return ray.get_runtime_context().get_node_id(), os.getpid()


def _shard_error(exc: Exception, what: str) -> RouterankError:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, RouterankError):
        cause.add_note(f"raised in {what} on a Ray worker")
        return cause
    detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc).splitlines()[0]
    return RouterankError(f"{what} failed on a Ray worker: {detail}")


class RayExecutor:
    """`map` over actors; `run_tasks` as Ray tasks (training runs, one per domain or configuration)."""

    def __init__(self, options: RayOptions, progress: bool = True):
        self.options, self.progress = options, progress
        self.ray = connect(options)
        self.placements: dict[int, tuple[str, int]] = {}  # shard -> (node id, pid) of the last map

    @property
    def workers(self) -> int:
        """Actors per job: `options.workers`, else one per `cpus_per_worker` CPUs in the cluster (at least 1)."""
        if self.options.workers:
            return self.options.workers
        cpus = self.ray.cluster_resources().get("CPU", 1.0)
        return max(1, int(cpus // self.options.cpus_per_worker))

    def _remote_options(self, gpus: float) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.options.cpus_per_worker, "num_gpus": gpus}
        if self.options.spread:
            options["scheduling_strategy"] = "SPREAD"
        return options

    def map(
        self,
        factory: WorkerFactory,
        method: str,
        shards: Sequence[Any],
        *,
        store: ShardStore | None = None,
        local: Any = None,
        desc: str = "shards",
    ) -> list[Any]:
        """As `Executor.map`, over a pool of actors that each build their worker once and take the next shard when
        one returns; `local` is not used. Where each shard ran is kept in `placements`; a shard's routerank error is
        raised here, naming the shard."""
        ray = self.ray
        stored, todo = store.split(len(shards)) if store is not None else ({}, list(range(len(shards))))
        results: list[Any] = [stored.get(index) for index in range(len(shards))]
        pending: deque[int] = deque(todo)
        self.placements = {}
        if not pending:
            return results
        host = ray.remote(
            max_restarts=self.options.max_restarts,
            max_task_retries=self.options.max_task_retries,
            **self._remote_options(self.options.gpus_per_worker),
        )(ShardHost)
        actors = [host.remote(factory) for _ in range(min(self.workers, len(pending)))]
        in_flight: dict[Any, tuple[int, Any]] = {}

        def submit(actor: Any) -> None:
            index = pending.popleft()
            in_flight[actor.call.remote(method, shards[index])] = (index, actor)

        try:
            with progress_bar(len(shards), desc, self.progress) as bar:
                bar.update(len(shards) - len(pending))
                for actor in actors:
                    if pending:
                        submit(actor)
                while in_flight:
                    (ref,), _ = ray.wait(list(in_flight), num_returns=1)
                    index, actor = in_flight.pop(ref)
                    try:
                        value, node, pid = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        raise _shard_error(exc, f"{desc}: shard {index}") from None
                    except ray.exceptions.RayActorError as exc:
                        raise RouterankError(
                            f"{desc}: shard {index}: its Ray worker died {self.options.max_restarts + 1} times "
                            f"({str(exc).splitlines()[0]})",
                            fix="check the workers' memory, or raise RayOptions.max_restarts",
                        ) from None
                    if store is not None:
                        store.save(index, value)
                    results[index], self.placements[index] = value, (node, pid)
                    bar.update(1)
                    if pending:
                        submit(actor)
        finally:
            for actor in actors:
                ray.kill(actor, no_restart=True)
        return results

    def run_tasks(self, fn: Callable[..., Any], calls: Sequence[tuple], *, gpus: float | None = None) -> list[Any]:
        """`fn(*args)` for each call, as Ray tasks; a GPU cluster gives each task one GPU unless told otherwise."""
        ray = self.ray
        if gpus is None:
            gpus = self.options.gpus_per_worker or (1.0 if ray.cluster_resources().get("GPU", 0) else 0.0)
        remote = ray.remote(max_retries=self.options.max_task_retries, **self._remote_options(gpus))(fn)
        refs = [remote.remote(*args) for args in calls]
        out = []
        for position, ref in enumerate(refs):
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayTaskError as exc:
                raise _shard_error(exc, f"task {position} ({getattr(fn, '__name__', 'task')})") from None
        return out
