"""Hybrid retrieval: fuse the runs of several retrievers by reciprocal rank or normalised score."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np

from routerank.data.types import Corpus, Query, Ranking, Run, documents_of
from routerank.errors import SpecError
from routerank.retrieve.base import Retriever, as_query_list

METHODS = ("rrf", "weighted", "mix")
NORMS = ("minmax", "zscore")


def rrf(
    runs: Sequence[Run], k: int = 100, rrf_k: int = 60, weights: Sequence[float] | None = None, name: str = "rrf"
) -> Run:
    """Reciprocal rank fusion: a document scores the sum over runs of weight / (rrf_k + its rank there), equal
    weights by default; each query any run has keeps its top `k`."""
    weights = list(weights) if weights is not None else [1.0] * len(runs)
    query_ids = dict.fromkeys(q for run in runs for q in run)
    fused: dict[str, Ranking] = {}
    for qid in query_ids:
        scores: dict[str, float] = {}
        for run, weight in zip(runs, weights, strict=True):
            if qid in run:
                for rank, doc_id in enumerate(run[qid].doc_ids, start=1):
                    scores[doc_id] = scores.get(doc_id, 0.0) + weight / (rrf_k + rank)
        fused[qid] = Ranking.from_scores(scores, k)
    return Run(MappingProxyType(fused), name, documents_of(runs))


def stack(runs: Sequence[Run], counts: Sequence[int], k: int = 100, name: str = "mix") -> Run:
    """Each run's first `counts[i]` documents, run after run in the order given (a document already taken is
    skipped): e.g. two retrieved passages, then one generated. Scores fall by one per place, from the count."""
    if len(counts) != len(runs) or any(c < 1 for c in counts):
        raise SpecError(f"give every run a count of at least 1, got {list(counts)} for {len(runs)} runs")
    query_ids = dict.fromkeys(q for run in runs for q in run)
    out: dict[str, Ranking] = {}
    for qid in query_ids:
        taken: list[str] = []
        for run, count in zip(runs, counts, strict=True):
            fresh = [d for d in (run[qid].doc_ids if qid in run else ()) if d not in taken]
            taken.extend(fresh[:count])
        taken = taken[:k]
        out[qid] = Ranking(tuple(taken), tuple(float(len(taken) - i) for i in range(len(taken))))
    return Run(MappingProxyType(out), name, documents_of(runs))


def _normalise(scores: np.ndarray, norm: str) -> np.ndarray:
    if scores.size == 0:
        return scores
    if norm == "minmax":
        span = scores.max() - scores.min()
        return (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
    std = scores.std()
    return (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)


def weighted(
    runs: Sequence[Run],
    k: int = 100,
    weights: Sequence[float] | None = None,
    norm: str = "minmax",
    name: str = "weighted",
) -> Run:
    """Per-query normalised scores, weighted and summed; a doc a run missed gets that run's floor."""
    if norm not in NORMS:
        raise SpecError(f"unknown score normalisation {norm!r}", fix=f"choose one of {NORMS}")
    weights = list(weights) if weights is not None else [1.0 / len(runs)] * len(runs)
    query_ids = dict.fromkeys(q for run in runs for q in run)
    fused: dict[str, Ranking] = {}
    for qid in query_ids:
        scores: dict[str, float] = {}
        per_run = []
        for run in runs:
            ranking = run[qid] if qid in run else Ranking()
            normed = _normalise(np.asarray(ranking.scores, dtype=np.float64), norm)
            per_run.append(
                (dict(zip(ranking.doc_ids, normed.tolist(), strict=True)), float(normed.min()) if normed.size else 0.0)
            )
        all_docs = dict.fromkeys(d for docs, _ in per_run for d in docs)
        for doc_id in all_docs:
            scores[doc_id] = sum(w * docs.get(doc_id, floor) for (docs, floor), w in zip(per_run, weights, strict=True))
        fused[qid] = Ranking.from_scores(scores, k)
    return Run(MappingProxyType(fused), name, documents_of(runs))


class FusionRetriever:
    """A retriever made of others: each child searches `depth` deep, then the runs are fused: by reciprocal rank
    (`rrf`), normalised score (`weighted`), or stacked (`mix`: each child's first `weights[i]` documents in turn)."""

    def __init__(
        self,
        retrievers: Sequence[Retriever],
        method: str = "rrf",
        weights: Sequence[float] | None = None,
        rrf_k: int = 60,
        norm: str = "minmax",
        depth: int = 1000,
    ):
        if method not in METHODS:
            raise SpecError(f"unknown fusion method {method!r}", fix=f"choose one of {METHODS}")
        if len(retrievers) < 2:
            raise SpecError("fusion needs at least two retrievers")
        if weights is not None and len(weights) != len(retrievers):
            raise SpecError(f"{len(weights)} weights for {len(retrievers)} retrievers")
        if method == "mix" and (weights is None or any(w < 1 or w != int(w) for w in weights)):
            raise SpecError("mix takes a whole count of documents for each retriever", fix="e.g. mix(2*bm25,1*genread)")
        self.retrievers = list(retrievers)
        self.method, self.weights, self.rrf_k, self.norm, self.depth = method, weights, rrf_k, norm, depth
        self.name = f"{method}({','.join(r.name for r in self.retrievers)})"

    def index(self, corpus: Corpus) -> None:
        """Index the corpus with every child retriever."""
        for retriever in self.retrievers:
            retriever.index(corpus)

    def search(self, queries: Iterable[Query] | Mapping[str, Query], k: int = 100) -> Run:
        """Each child's run, `depth` (or `k`, if more) deep, fused by the fusion method; each query's top `k`."""
        query_list = as_query_list(queries)
        runs = [r.search(query_list, max(k, self.depth)) for r in self.retrievers]
        if self.method == "rrf":
            return rrf(runs, k, self.rrf_k, self.weights, self.name)
        if self.method == "mix":
            return stack(runs, [int(w) for w in self.weights or ()], k, self.name)
        return weighted(runs, k, self.weights, self.norm, self.name)

    def save(self, path) -> None:
        """Save each child's index in its own subfolder of `path`, named by position and retriever name."""
        for i, retriever in enumerate(self.retrievers):
            retriever.save(Path(path) / f"{i}-{retriever.name.replace(':', '_').replace('/', '_')}")
