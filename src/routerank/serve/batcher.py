"""Batching across requests: concurrent requests to one model share forward passes, within a token budget.

Each request's pairs become one or more jobs of at most `max_batch_tokens` tokens (TEI's token budget). One
worker task per model takes the oldest job, then keeps taking jobs until the batch is full (tokens or pairs)
or `max_wait_ms` has passed since that oldest job arrived. A job that arrived while the model was busy has
waited already, so under load batches form with no extra delay; when idle, a lone request waits at most
`max_wait_ms`. Pairs are sorted by length before scoring, so the model's own mini-batches pad little; the
scores are put back in order. Scoring runs on a single thread per model, off the event loop.

Bounds: at most `max_queued_pairs` pairs are pending (queued, batching or scoring); past that `score` raises
`Overloaded` at once (the server answers 429), so a backlog never grows without limit. A caller that gives
up (timeout, disconnect) cancels its jobs, and the worker skips them. A batch that raises is retried job by
job, so one bad request fails alone and the worker keeps running.

`cross_request=False` is the baseline: each request is scored alone, in arrival order, as one call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

ScoreFn = Callable[[list[tuple[str, str]], list[str] | None], np.ndarray]


class Overloaded(Exception):
    """The queue is full; the caller should answer 429 and the client retry later."""


@dataclass
class _Job:
    pairs: list[tuple[str, str]]
    tokens: list[int]
    experts: list[str] | None
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)


@dataclass
class BatchStats:
    """Counts of what one batcher scored: batches, pairs, and the pairs in each of the last 1,000 batches."""

    batches: int = 0
    pairs: int = 0
    sizes: list[int] = field(default_factory=list)  # pairs per batch, most recent last (bounded)


def split_jobs(tokens: Sequence[int], budget: int, max_pairs: int) -> list[tuple[int, int]]:
    """[start, end) ranges of consecutive pairs, each within the token budget and pair cap (at least 1 pair)."""
    ranges, start, used = [], 0, 0
    for i, n in enumerate(tokens):
        if i > start and (used + n > budget or i - start >= max_pairs):
            ranges.append((start, i))
            start, used = i, 0
        used += n
    if start < len(tokens):
        ranges.append((start, len(tokens)))
    return ranges


class Batcher:
    """Scores one model's (query, document) pairs for concurrent requests, in shared batches within a token budget,
    with a bounded queue (the module docstring gives the policy).

    `score_fn(pairs, experts)` scores one batch on the model thread.
    name: the model's name, in the worker's thread and task names and in Overloaded messages.
    cross_request: batch jobs of several requests together (False: one request per call, in arrival order).
    max_batch_tokens / max_batch_pairs: a batch stops growing at either (TEI's default budget: 16,384).
    max_wait_ms: how long the oldest job waits for company when the queue runs dry.
    max_queued_pairs: pairs admitted and not yet answered; past it `score` raises Overloaded.
    on_batch(pairs, tokens): called once per batch, for metrics.
    """

    def __init__(
        self,
        score_fn: ScoreFn,
        *,
        name: str = "model",
        cross_request: bool = True,
        max_batch_tokens: int = 16384,
        max_batch_pairs: int = 256,
        max_wait_ms: float = 5.0,
        max_queued_pairs: int = 16384,
        on_batch: Callable[[int, int], None] | None = None,
    ):
        """A batcher for one model; the class docstring describes each setting."""
        self.score_fn, self.name, self.cross_request = score_fn, name, cross_request
        self.max_batch_tokens, self.max_batch_pairs = max_batch_tokens, max_batch_pairs
        self.max_wait = max_wait_ms / 1000.0
        self.max_queued_pairs = max_queued_pairs
        self.on_batch = on_batch
        self.pending_pairs = 0  # admitted and not yet answered: queued, batching or scoring
        self.stats = BatchStats()
        self._queue: deque[_Job] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._busy = False

    async def start(self) -> None:
        """Start the scoring thread and the worker task on the running event loop; `score` refuses work until then."""
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"score-{self.name}")
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Finish what is queued (up to `drain_timeout` seconds), then stop the worker."""
        deadline = time.monotonic() + drain_timeout
        while (self._queue or self._busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._queue:
            if not job.future.done():
                job.future.set_exception(Overloaded("the server is shutting down"))
        self._queue.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @property
    def running(self) -> bool:
        """True while the worker task is running (from `start` until `stop`, or until it fails)."""
        return self._task is not None and not self._task.done()

    async def score(
        self, pairs: list[tuple[str, str]], tokens: list[int], experts: list[str] | None = None
    ) -> np.ndarray:
        """Scores of `pairs` in order; raises Overloaded when the queue has no room for them."""
        if not pairs:
            return np.zeros(0, dtype=np.float64)
        if not self.running:
            raise Overloaded("the model worker is not running")
        if self.pending_pairs + len(pairs) > self.max_queued_pairs:
            raise Overloaded(
                f"{self.pending_pairs} pairs are pending for {self.name!r} (limit {self.max_queued_pairs})"
            )
        loop = asyncio.get_running_loop()
        ranges = (
            split_jobs(tokens, self.max_batch_tokens, self.max_batch_pairs) if self.cross_request else [(0, len(pairs))]
        )
        jobs = [
            _Job(pairs[a:b], list(tokens[a:b]), None if experts is None else list(experts[a:b]), loop.create_future())
            for a, b in ranges
        ]
        self._queue.extend(jobs)
        self.pending_pairs += len(pairs)
        self._wake.set()
        try:
            parts = await asyncio.gather(*(job.future for job in jobs))
        except BaseException:
            for job in jobs:
                job.future.cancel()  # the worker skips cancelled jobs
            raise
        finally:
            self.pending_pairs -= len(pairs)
        return np.concatenate(parts)

    async def call(self, fn: Callable, *args):
        """`fn(*args)` on the model's scoring thread, for work that shares the model (e.g. R2R routing)."""
        if not self.running:
            raise Overloaded("the model worker is not running")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _take(self) -> _Job | None:
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                return job
        return None

    async def _collect(self) -> list[_Job]:
        first = self._take()
        while first is None:
            self._wake.clear()
            await self._wake.wait()
            first = self._take()
        self._busy = True  # from here until the batch is answered, `stop` waits for it
        batch, tokens, pairs = [first], first.total_tokens, len(first.pairs)
        if not self.cross_request:
            return batch
        deadline = first.arrived + self.max_wait
        while tokens < self.max_batch_tokens and pairs < self.max_batch_pairs:
            if not self._queue:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except TimeoutError:
                    break
                continue
            nxt = self._queue[0]
            if nxt.future.done():
                self._queue.popleft()  # cancelled while queued
                continue
            if tokens + nxt.total_tokens > self.max_batch_tokens or pairs + len(nxt.pairs) > self.max_batch_pairs:
                break
            batch.append(self._take())
            tokens += nxt.total_tokens
            pairs += len(nxt.pairs)
        return batch

    def _score_sorted(self, pairs: list[tuple[str, str]], tokens: list[int], experts: list[str] | None):
        order = sorted(range(len(pairs)), key=lambda i: tokens[i])
        scores = self.score_fn([pairs[i] for i in order], None if experts is None else [experts[i] for i in order])
        out = np.empty(len(pairs), dtype=np.float64)
        out[order] = np.asarray(scores, dtype=np.float64).reshape(len(pairs))
        return out

    async def _score_jobs(self, jobs: list[_Job]) -> np.ndarray:
        pairs = [p for job in jobs for p in job.pairs]
        tokens = [t for job in jobs for t in job.tokens]
        experts = None
        if any(job.experts is not None for job in jobs):
            experts = [e for job in jobs for e in (job.experts or [""] * len(job.pairs))]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._score_sorted, pairs, tokens, experts)

    def _deliver(self, jobs: list[_Job], scores: np.ndarray) -> None:
        start = 0
        for job in jobs:
            end = start + len(job.pairs)
            if not job.future.done():
                job.future.set_result(scores[start:end])
            start = end

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            try:
                await self._process(batch)
            finally:
                self._busy = False

    async def _process(self, batch: list[_Job]) -> None:
        batch = [job for job in batch if not job.future.done()]
        if not batch:
            return
        pairs = sum(len(job.pairs) for job in batch)
        self.stats.batches += 1
        self.stats.pairs += pairs
        self.stats.sizes = [*self.stats.sizes[-999:], pairs]
        if self.on_batch is not None:
            self.on_batch(pairs, sum(job.total_tokens for job in batch))
        try:
            self._deliver(batch, await self._score_jobs(batch))
        except Exception as exc:  # noqa: BLE001 - isolate the failing request, keep the worker alive
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            for job in batch:
                try:
                    self._deliver([job], await self._score_jobs([job]))
                except Exception as job_exc:  # noqa: BLE001
                    if not job.future.done():
                        job.future.set_exception(job_exc)
