"""Finished shards on disk, so that a rerun, or a Ray task retried after a crash, never redoes them.

A job's store is a folder keyed by everything that determines its output (model, config, inputs, shard size).
Each shard's result is written atomically when it arrives: an array (or a dict of arrays) as safetensors,
anything else as JSON. A half-written shard never exists, so a store is always safe to resume from.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from safetensors.numpy import load_file, save

from routerank.fsutil import atomic_write, cache_root

T = TypeVar("T")
ARRAY_KEY = "value"


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """`items` cut in order into runs of `size` (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"shard size must be >= 1, got {size}")
    return [items[start : start + size] for start in range(0, len(items), size)]


class LazyShards(Sequence):
    """Shard i is built by `make(i)` only when an executor asks for it, so the driver never holds every shard's
    input at once (100k queries' candidate texts would not fit)."""

    def __init__(self, count: int, make: Callable[[int], Any]):
        self.count, self.make = count, make

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.make(i) for i in range(*index.indices(self.count))]
        if not -self.count <= index < self.count:
            raise IndexError(index)
        return self.make(index % self.count)


def job_key(kind: str, spec: dict[str, Any]) -> str:
    """A job's store folder name: `kind` and 16 hex digits of the hash of `kind` and `spec`."""
    blob = json.dumps({"kind": kind, **spec}, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


class ShardStore:
    """`store.save(i, result)` once shard i is done; `store.has(i)`/`store.load(i)` on the next attempt."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def for_job(cls, kind: str, spec: dict[str, Any], root: str | Path | None = None) -> ShardStore:
        """The store of a job: at `root` when given, else `<cache>/shards/<job_key(kind, spec)>`."""
        return cls(Path(root) if root is not None else cache_root() / "shards" / job_key(kind, spec))

    def _array_path(self, index: int) -> Path:
        return self.root / f"{index:06d}.safetensors"

    def _json_path(self, index: int) -> Path:
        return self.root / f"{index:06d}.json"

    def has(self, index: int) -> bool:
        """Whether shard `index` is stored."""
        return self._array_path(index).exists() or self._json_path(index).exists()

    def split(self, count: int) -> tuple[dict[int, Any], list[int]]:
        """Shards `0..count-1` split into those already stored (index -> loaded result) and the indices still to
        run, in order."""
        stored: dict[int, Any] = {}
        pending: list[int] = []
        for index in range(count):
            if self.has(index):
                stored[index] = self.load(index)
            else:
                pending.append(index)
        return stored, pending

    def done(self) -> list[int]:
        """Indices of the stored shards, ascending."""
        return sorted(int(p.stem) for p in self.root.glob("[0-9]*.*") if p.suffix in (".json", ".safetensors"))

    def save(self, index: int, result: Any) -> None:
        """Store shard `index`'s result atomically: an array, or a non-empty dict of arrays, as safetensors; anything
        else as JSON."""
        if isinstance(result, np.ndarray) or (
            isinstance(result, dict) and result and all(isinstance(v, np.ndarray) for v in result.values())
        ):
            arrays = {ARRAY_KEY: result} if isinstance(result, np.ndarray) else result
            blob = save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
            with atomic_write(self._array_path(index), "wb") as handle:
                handle.write(blob)
        else:
            with atomic_write(self._json_path(index)) as handle:
                json.dump(result, handle)

    def load(self, index: int) -> Any:
        """Shard `index`'s stored result: the array or dict of arrays as saved, else the JSON value."""
        path = self._array_path(index)
        if path.exists():
            arrays = load_file(str(path))
            return arrays[ARRAY_KEY] if set(arrays) == {ARRAY_KEY} else arrays
        return json.loads(self._json_path(index).read_text())

    def clear(self) -> None:
        """Delete the store's folder with every shard in it."""
        shutil.rmtree(self.root, ignore_errors=True)
