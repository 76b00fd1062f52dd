"""Sharded batch work, in-process or on Ray (`ray=`/`--ray`). Importing this package does not import Ray."""

from routerank.scale.executor import Executor, InProcess, executor_for
from routerank.scale.options import RayOptions, ray_options
from routerank.scale.shards import LazyShards, ShardStore, chunks

__all__ = ["Executor", "InProcess", "LazyShards", "RayOptions", "ShardStore", "chunks", "executor_for", "ray_options"]
