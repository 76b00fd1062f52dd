"""What every executor shares: the worker-factory type and the progress bar over shards.

Both the in-process executor (`routerank.scale.executor`) and the Ray one (`routerank.scale.ray_pool`) import this
module; neither imports the other's internals, so the two never import each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

WorkerFactory = Callable[[], Any]


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar over shards; hidden for one shard or when progress is off."""
    from tqdm.auto import tqdm  # tqdm.auto probes for notebooks: load it only when a bar is drawn

    return tqdm(total=total, desc=desc, unit="shard", disable=not enabled or total <= 1)


__all__ = ["WorkerFactory", "progress_bar"]
