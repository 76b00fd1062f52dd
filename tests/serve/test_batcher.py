"""The cross-request batcher on its own: grouping, token budget, bounds, cancellation and failure isolation.

The scoring function here is a plain, deterministic one (text length), so each test can see exactly which
pairs went into which call.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from routerank.serve.batcher import Batcher, Overloaded, split_jobs


class Recorder:
    """Scores a pair by its document's length and records every call's pairs; 'boom' makes a call raise."""

    def __init__(self, delay: float = 0.0):
        self.calls: list[list[tuple[str, str]]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, pairs, experts):
        import time

        with self.lock:
            self.calls.append(list(pairs))
        time.sleep(self.delay)
        if any(doc == "boom" for _, doc in pairs):
            raise RuntimeError("bad input")
        return np.array([len(q) * 1000 + len(d) for q, d in pairs], dtype=np.float64)


def run(coro):
    return asyncio.run(coro)


def test_split_jobs_respects_budget_and_pair_cap_but_always_takes_one_pair():
    assert split_jobs([10, 10, 10, 10], budget=25, max_pairs=100) == [(0, 2), (2, 4)]
    assert split_jobs([50, 5], budget=25, max_pairs=100) == [(0, 1), (1, 2)]
    assert split_jobs([1] * 5, budget=100, max_pairs=2) == [(0, 2), (2, 4), (4, 5)]
    assert split_jobs([], budget=10, max_pairs=2) == []


def test_concurrent_requests_share_batches_and_get_their_own_scores():
    scorer = Recorder()

    async def main():
        batcher = Batcher(scorer, max_wait_ms=50, max_batch_tokens=10_000)
        await batcher.start()
        requests = [[(f"q{i}", "d" * (3 - j)) for j in range(3)] for i in range(8)]
        results = await asyncio.gather(*(batcher.score(r, [len(d) for _, d in r]) for r in requests))
        await batcher.stop()
        return requests, results, batcher.stats

    requests, results, stats = run(main())
    for pairs, scores in zip(requests, results, strict=True):
        assert scores.tolist() == [len(q) * 1000 + len(d) for q, d in pairs]
    assert len(scorer.calls) < 8 and stats.batches == len(scorer.calls)
    assert max(len(c) for c in scorer.calls) > 3  # at least one forward pass held several requests
    for call in scorer.calls:  # each request sent its docs longest first; a batch is scored shortest first
        lengths = [len(d) for _, d in call]
        assert lengths == sorted(lengths)


def test_baseline_mode_scores_one_request_per_call():
    scorer = Recorder()

    async def main():
        batcher = Batcher(scorer, cross_request=False, max_wait_ms=50)
        await batcher.start()
        await asyncio.gather(*(batcher.score([(f"q{i}", "doc"), (f"q{i}", "other")], [4, 4]) for i in range(5)))
        await batcher.stop()

    run(main())
    assert len(scorer.calls) == 5 and all(len({q for q, _ in call}) == 1 for call in scorer.calls)


def test_token_budget_caps_each_forward_pass():
    scorer = Recorder()

    async def main():
        batcher = Batcher(scorer, max_wait_ms=30, max_batch_tokens=100)
        await batcher.start()
        await asyncio.gather(*(batcher.score([(f"q{i}", "x")] * 4, [10] * 4) for i in range(6)))
        await batcher.stop()

    run(main())
    assert all(len(call) * 10 <= 100 for call in scorer.calls)
    assert sum(len(c) for c in scorer.calls) == 24


def test_a_failing_request_fails_alone_and_the_worker_goes_on():
    scorer = Recorder()

    async def main():
        batcher = Batcher(scorer, max_wait_ms=50)
        await batcher.start()
        good = batcher.score([("q", "fine")], [3])
        bad = batcher.score([("q", "boom")], [3])
        results = await asyncio.gather(good, bad, return_exceptions=True)
        after = await batcher.score([("q", "later")], [3])
        await batcher.stop()
        return results, after

    (good, bad), after = run(main())
    assert good.tolist() == [1004.0]
    assert isinstance(bad, RuntimeError)
    assert after.tolist() == [1005.0]


def test_a_full_queue_refuses_at_once_and_recovers():
    scorer = Recorder(delay=0.5)

    async def main():
        batcher = Batcher(scorer, max_wait_ms=1, max_queued_pairs=4)
        await batcher.start()
        first = asyncio.ensure_future(batcher.score([("q", "a")] * 4, [2] * 4))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):
            await batcher.score([("q", "b")], [2])
        await first
        later = await batcher.score([("q", "c")], [2])
        await batcher.stop()
        return batcher.pending_pairs, later

    pending, later = run(main())
    assert pending == 0 and later.tolist() == [1001.0]


def test_a_cancelled_request_is_skipped():
    scorer = Recorder(delay=0.5)

    async def main():
        batcher = Batcher(scorer, max_wait_ms=1)
        await batcher.start()
        busy = asyncio.ensure_future(batcher.score([("q", "busy")], [2]))
        await asyncio.sleep(0.02)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.score([("q", "gave-up")], [2]), 0.01)
        await busy
        await batcher.score([("q", "next")], [2])
        await batcher.stop()

    run(main())
    scored = [doc for call in scorer.calls for _, doc in call]
    assert "gave-up" not in scored and scored == ["busy", "next"]


def test_a_job_cancelled_between_live_ones_loses_none_of_them():
    scorer = Recorder(delay=0.5)

    async def main():
        batcher = Batcher(scorer, max_wait_ms=1)
        await batcher.start()
        busy = asyncio.ensure_future(batcher.score([("q", "busy")], [2]))
        await asyncio.sleep(0.05)  # the worker is scoring "busy"; the next three queue up behind it
        first = asyncio.ensure_future(batcher.score([("q", "first")], [2]))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.score([("q", "gave-up")], [2]), 0.01)
        last = asyncio.ensure_future(batcher.score([("q", "last")], [2]))
        results = await asyncio.wait_for(asyncio.gather(busy, first, last), 10)
        await batcher.stop()
        return [r.tolist() for r in results]

    assert run(main()) == [[1004.0], [1005.0], [1004.0]]
    assert "gave-up" not in [doc for call in scorer.calls for _, doc in call]
