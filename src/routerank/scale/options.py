"""How to reach Ray, as one value: `--ray [ADDRESS]` on the CLI, `ray=` in Python and in experiment configs.

`None`/`False` means in-process, exactly as without Ray. `True`, `"local"` or `""` start a local Ray with this
machine's cores; any other string is the address of a running cluster (`ray://host:10001`, `host:6379`, `auto`).
Parsing never imports Ray: only `connect()` does, and only when a switch asks for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from routerank.errors import MissingDependencyError, RouterankError

LOCAL = "local"


@dataclass(frozen=True)
class RayOptions:
    """Where and how sharded work runs on Ray.

    address: None starts a local Ray (num_cpus cores, an object store of object_store_mb); a string joins a cluster.
    workers: actors per sharded job; None means one per `cpus_per_worker` CPUs the cluster has.
    cpus_per_worker / gpus_per_worker: each actor's reservation; a GPU cluster gets `gpus_per_worker=1` for training.
    max_restarts / max_task_retries: how often a killed actor is restarted and its in-flight shard retried.
    spread: place actors on as many nodes as possible (Ray's SPREAD strategy).
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    num_cpus: int | None = None
    object_store_mb: int = 512
    max_restarts: int = 3
    max_task_retries: int = 3
    spread: bool = True

    def with_workers(self, workers: int | None) -> RayOptions:
        """A copy with `workers` replaced."""
        return replace(self, workers=workers)


def ray_options(value: Any) -> RayOptions | None:
    """`None`/`False` → None (in-process); `True`/"local"/"" → a local Ray; "host:port" → that cluster."""
    if value is None or value is False:
        return None
    if isinstance(value, RayOptions):
        return value
    if value is True:
        return RayOptions()
    if isinstance(value, dict):
        try:
            return RayOptions(**value)
        except TypeError as exc:
            raise RouterankError(
                f"bad [ray] settings: {exc}", fix=f"keys are {sorted(RayOptions.__dataclass_fields__)}"
            ) from None
    if isinstance(value, str):
        text = value.strip()
        return RayOptions() if text in ("", LOCAL) else RayOptions(address=text)
    raise RouterankError(f"ray= takes True, an address or RayOptions, not {type(value).__name__}")


def import_ray():
    """The `ray` module; a MissingDependencyError that names `routerank[ray]` when it is not installed."""
    try:
        # heavy, optional: Ray loads only when ray= asks for it
        import ray
    except ImportError:
        raise MissingDependencyError("--ray needs Ray", fix="pip install 'routerank[ray]'") from None
    return ray


def connect(options: RayOptions):
    """Join (or start) Ray once per process and return the `ray` module."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    try:
        if options.address is None:
            ray.init(
                address="local",  # a new Ray of our own, never one named by RAY_ADDRESS or a running `ray start`
                num_cpus=options.num_cpus or os.cpu_count(),
                object_store_memory=options.object_store_mb * 2**20,
                include_dashboard=False,
                log_to_driver=False,
            )
        else:
            ray.init(address=options.address, log_to_driver=False)
    except ConnectionError as exc:
        raise RouterankError(
            f"cannot reach the Ray cluster at {options.address!r}: {exc}",
            fix="start it with `ray start --head`, or pass --ray with no address for a local one",
        ) from None
    return ray
