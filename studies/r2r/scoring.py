"""Scoring (query, document) pairs with the adapter named per pair, and reranking a run with one adapter or a
query -> adapter map: through the expert bank here, on Ray actors when the experiment runs there, and before any
expert exists with the bare backbone."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from routerank.data.types import Corpus, Query, Run
from routerank.errors import RouterankError
from routerank.r2r.bank import GENERALIST, ExpertBank
from routerank.r2r.trainer import ExpertConfig
from routerank.rerank.backbones import load_backbone
from routerank.rerank.base import assemble_run, candidates
from routerank.scale import ShardStore
from routerank.scale.executor import Executor
from studies.base import short_hash
from studies.r2r.config import LABEL_SHARD, R2RConfig
from studies.r2r.experts import Experts

Pairs = Sequence[tuple[str, str]]


class ExpertScorer:
    """Scores pairs for the R2R experiment; Ray shards are kept under `shards`. `executor` () -> the Ray executor
    or None (score in this process); `loaded` () -> a fresh (model, tokenizer) from a test factory, or None (the
    configured backbone)."""

    def __init__(
        self,
        config: R2RConfig,
        experts: Experts,
        shards: Path,
        *,
        executor: Callable[[], Executor | None],
        loaded: Callable[[], tuple | None],
        progress: bool = True,
    ):
        self.config = config
        self.experts = experts
        self.shards = shards  # finished Ray shards are kept under this folder
        self.executor = executor
        self.loaded = loaded
        self.progress = progress
        self._bank: ExpertBank | None = None
        self._generalist = None  # the bare-backbone scorer, used before any expert exists

    def forget_bank(self) -> None:
        """Drop the loaded bank (a new adapter was trained)."""
        self._bank = None

    def bank(self) -> ExpertBank:
        """The expert bank over every trained adapter, reloaded when that set changes."""
        ready = self.experts.ready_dirs()
        if self._bank is None or set(self._bank.domains) != set(ready):
            if not ready:
                raise RouterankError("no trained expert yet")
            self._bank = ExpertBank(
                ready,
                self.config.backbone,
                max_doc_tokens=self.config.max_doc_tokens,
                progress=self.progress,
                loaded=self.loaded(),
                dtype=self.config.dtype,
            )
        return self._bank

    def score_pairs(self, pairs: Pairs, adapters: Sequence[str]) -> np.ndarray:
        """Scores through the expert bank; before any expert exists, the generalist is the bare backbone (the
        same scorer and score-cache key as the bank's generalist)."""
        if set(adapters) <= {GENERALIST} and not any(self.experts.ready(a) for a in self.experts.configs):
            return self._bare_backbone().score_pairs(pairs)
        if self.executor() is not None:
            return self._score_on_ray(pairs, adapters)
        return self.bank().score_pairs(pairs, adapters)

    def _bare_backbone(self):
        if self._generalist is None:
            backbone = load_backbone(
                self.config.backbone,
                template=ExpertConfig("-", "-").template,
                max_doc_tokens=self.config.max_doc_tokens,
                progress=self.progress,
                loaded=self.loaded(),
                dtype=self.config.dtype,
            )
            self._generalist = backbone.scorer(self.config.backbone, cache=True)
        return self._generalist

    def _score_on_ray(self, pairs: Pairs, adapters: Sequence[str]) -> np.ndarray:
        """Shards of `LABEL_SHARD` pairs on Ray actors that each load the bank once; finished shards are kept."""
        ready = {a: str(folder) for a, folder in self.experts.ready_dirs().items()}
        adapters = list(adapters)
        digest = short_hash([pairs, adapters, ready], 16)
        shards = [
            (pairs[i : i + LABEL_SHARD], adapters[i : i + LABEL_SHARD]) for i in range(0, len(pairs), LABEL_SHARD)
        ]
        factory = partial(
            ExpertBank,
            ready,
            self.config.backbone,
            max_doc_tokens=self.config.max_doc_tokens,
            progress=False,
            dtype=self.config.dtype,
        )
        store = ShardStore(self.shards / f"score-{digest}")
        parts = self.executor().map(factory, "score_labelled", shards, store=store, desc=f"score {len(pairs):,} pairs")
        return np.concatenate(parts) if parts else np.zeros(0)

    def rerank(
        self, queries: Sequence[Query], run: Run, corpus: Corpus, experts: str | Mapping[str, str], name: str
    ) -> tuple[Run, list[str], float]:
        """(`run`'s top `depth` of each query reranked by one adapter or a query -> adapter map, the adapter of
        every scored pair, the seconds scoring took)."""
        depth = self.config.depth
        per_query = [(q, candidates(run, q.id, corpus, depth)) for q in queries]
        pairs, names = [], []
        for query, docs in per_query:
            adapter = experts if isinstance(experts, str) else experts[query.id]
            pairs += [(query.text, d.full_text) for d in docs]
            names += [adapter] * len(docs)
        start = time.perf_counter()
        scores = self.score_pairs(pairs, names).tolist()
        seconds = time.perf_counter() - start
        return assemble_run(per_query, scores, run, depth, name), names, seconds
