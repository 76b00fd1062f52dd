"""Run a job as shards: in this process, or on Ray actors that each hold their model once.

Every sharded job in routerank (dense encoding, reranking a run, label building) has the same shape: a
*worker factory* (a picklable callable that loads a model and returns an object), a *method* name, and a list
of *shards* (inputs). `executor.map(factory, method, shards)` returns each shard's result in shard order, so the
caller gathers them exactly as it would in a loop. The in-process executor is that loop; the Ray executor
(`routerank.scale.ray_pool`) spreads the shards over actors; Ray itself is only imported when `ray=` asks for it.
Both write finished shards to an optional `ShardStore`, and skip the shards already there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from routerank.scale.options import RayOptions, ray_options
from routerank.scale.ray_pool import RayExecutor
from routerank.scale.shards import ShardStore
from routerank.scale.work import WorkerFactory, progress_bar


class Executor(Protocol):
    """Runs a sharded job: `map` a worker's method over shards, or `run_tasks` for independent calls."""

    workers: int

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
        """`method` of a worker built by `factory` on each shard, results in shard order. Shards already in `store`
        are loaded, not run, and new results are saved there; `local` is a worker already built in this process, which
        an in-process executor uses instead of building one."""
        ...

    def run_tasks(self, fn: Callable[..., Any], calls: Sequence[tuple], *, gpus: float | None = None) -> list[Any]:
        """`fn(*args)` for each call, results in call order; `gpus`: each task's GPU share where tasks are placed."""
        ...


class InProcess:
    """The plain loop. `local` is a worker already built in this process (e.g. the retriever itself)."""

    workers = 1

    def __init__(self, progress: bool = True):
        self.progress = progress

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
        """`method` of one worker (`local`, else one built by `factory` when a shard needs it) on each shard not
        already in `store`, saving each result there as it finishes; results in shard order."""
        stored, pending = store.split(len(shards)) if store is not None else ({}, list(range(len(shards))))
        worker, results = local, [stored.get(index) for index in range(len(shards))]
        with progress_bar(len(shards), desc, self.progress) as bar:
            bar.update(len(stored))
            for index in pending:
                worker = worker if worker is not None else factory()
                result = getattr(worker, method)(shards[index])
                if store is not None:
                    store.save(index, result)
                results[index] = result
                bar.update(1)
        return results

    def run_tasks(self, fn: Callable[..., Any], calls: Sequence[tuple], *, gpus: float | None = None) -> list[Any]:
        """`fn(*args)` for each call, in order, in this process; `gpus` is ignored."""
        return [fn(*args) for args in calls]


def executor_for(ray: Any = None, progress: bool = True) -> Executor:
    """`ray=None` → the in-process loop; anything `ray_options` accepts → a Ray executor (imports Ray)."""
    options = ray_options(ray)
    if options is None:
        return InProcess(progress)
    return RayExecutor(options, progress)


__all__ = ["Executor", "InProcess", "RayOptions", "WorkerFactory", "executor_for", "progress_bar"]
