"""The score cache is shared by the server's worker threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from routerank.rerank.score_cache import ScoreCache, pair_key


def test_one_cache_serves_several_threads(tmp_path):
    cache = ScoreCache("threads", tmp_path)

    def work(i: int) -> float:
        key = pair_key(f"q{i}", "d")
        cache.put_many({key: float(i)})
        return cache.get_many([key])[key]

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(work, range(40))) == [float(i) for i in range(40)]
    assert len(cache) == 40
