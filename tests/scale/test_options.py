import subprocess
import sys

import pytest

from routerank.errors import RouterankError
from routerank.scale import InProcess, RayOptions, ShardStore, chunks, ray_options


def test_ray_option_values():
    assert ray_options(None) is None and ray_options(False) is None
    assert ray_options(True) == RayOptions()
    assert ray_options("local") == RayOptions() and ray_options("") == RayOptions()
    assert ray_options("10.0.0.1:6379").address == "10.0.0.1:6379"
    assert ray_options({"workers": 2}).workers == 2
    with pytest.raises(RouterankError, match="bad \\[ray\\] settings"):
        ray_options({"wokers": 2})
    with pytest.raises(RouterankError, match="ray= takes"):
        ray_options(3.5)


def test_chunks_keep_order_and_reject_zero():
    assert chunks(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert chunks([], 3) == []
    with pytest.raises(ValueError):
        chunks([1], 0)


def test_shard_store_round_trips_and_resumes(tmp_path):
    import numpy as np

    store = ShardStore(tmp_path / "job")
    calls = []

    class Worker:
        def run(self, x):
            calls.append(x)
            return np.full(2, x, dtype=np.float32) if x % 2 else {"x": x}

    first = InProcess(progress=False).map(Worker, "run", [1, 2, 3], store=store)
    assert calls == [1, 2, 3] and store.done() == [0, 1, 2]
    again = InProcess(progress=False).map(Worker, "run", [1, 2, 3], store=store)
    assert calls == [1, 2, 3]  # nothing recomputed
    assert again[1] == {"x": 2} and np.array_equal(again[0], first[0]) and again[2].dtype == np.float32


def test_shard_store_split_loads_stored_and_lists_pending(tmp_path):
    import numpy as np

    store = ShardStore(tmp_path / "job")
    assert store.split(3) == ({}, [0, 1, 2])
    store.save(1, {"x": 1})
    store.save(3, np.arange(2))
    stored, pending = store.split(5)
    assert pending == [0, 2, 4] and sorted(stored) == [1, 3]
    assert stored[1] == {"x": 1} and np.array_equal(stored[3], np.arange(2))
    assert store.split(0) == ({}, [])


def test_nothing_imports_ray_without_the_switch(tiny_beir):
    code = f"""
import sys
import routerank, routerank.cli, routerank.pipeline, routerank.scale
from routerank.data.registry import load_dataset
ds = load_dataset({str(tiny_beir)!r})
routerank.pipeline.build("bm25", ds.corpus, cache=False).search(ds.split_queries("test"), 3)
sys.argv = ["routerank", "search", "-d", {str(tiny_beir)!r}, "-p", "bm25", "--query", "heart disease"]
try:
    routerank.cli.main()
except SystemExit:
    pass
assert "ray" not in sys.modules, sorted(m for m in sys.modules if m.startswith("ray"))
print("NO-RAY-OK")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "NO-RAY-OK" in out.stdout, out.stderr[-2000:]


def test_cli_ray_switch_takes_an_optional_address():
    from routerank.cli import normalise_ray_flag

    assert normalise_ray_flag(["index", "--ray", "-d", "x"]) == ["index", "--ray=local", "-d", "x"]
    assert normalise_ray_flag(["index", "-d", "x", "--ray"]) == ["index", "-d", "x", "--ray=local"]
    assert normalise_ray_flag(["index", "--ray", "host:6379"]) == ["index", "--ray", "host:6379"]
    assert normalise_ray_flag(["index", "-d", "x"]) == ["index", "-d", "x"]


def test_lazy_shards_build_on_demand():
    from routerank.scale import LazyShards

    built = []
    shards = LazyShards(3, lambda i: built.append(i) or i * 10)
    assert len(shards) == 3 and built == []
    assert InProcess(progress=False).map(_Echo, "run", shards) == [0, 10, 20]
    assert built == [0, 1, 2] and shards[-1] == 20
    with pytest.raises(IndexError):
        shards[3]


class _Echo:
    def run(self, x):
        return x
