"""Shared by the framework tests: a small SciFact sample, the shipped starter model (loaded once per session), and a
tiny R3AG router trained in a fraction of a second that sends SciFact questions to BM25 and finance questions to
R0 (abstain)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from routerank.api import RankedResults, Reranker
from routerank.data.beir import read_queries
from routerank.data.types import Corpus, Document, Query
from routerank.pipeline import build
from routerank.route import RouteDecision
from tests.conftest import CachedFeatures, shared_dataset

RERANKED = "42"  # BM25's second document is the relevant one; the starter model puts it first
OTHERS = ("5", "49", "127")  # "5" routes to the generalist
DEPTH = 6  # candidates per query: BM25's top 6 over the whole SciFact corpus


@dataclass(frozen=True)
class Sample:
    """SciFact queries with BM25's top candidates over the whole corpus, and those candidates as a small corpus."""

    queries: dict[str, Query]
    candidates: dict[str, list[Document]]
    relevant: dict[str, set[str]]
    corpus: Corpus


@dataclass(frozen=True)
class Expected:
    """What `routerank.Reranker` itself says about the reranked query: its ranking and its routing decision."""

    query: Query
    documents: list[Document]
    ranked: RankedResults
    relevance: list[float]  # in input order
    decision: RouteDecision


@pytest.fixture(scope="session")
def sample(scifact) -> Sample:
    queries = {q: scifact.queries[q] for q in (RERANKED, *OTHERS)}
    run = build("bm25", scifact.corpus, cache=False).search(list(queries.values()), DEPTH)
    candidates = {q: [scifact.corpus[d] for d in run[q].doc_ids] for q in queries}
    qrels = scifact.split_qrels("test")
    relevant = {q: set(qrels.relevant(q)) for q in queries}
    wanted = {d.id for docs in candidates.values() for d in docs} | set().union(*relevant.values())
    return Sample(queries, candidates, relevant, scifact.corpus.subset(wanted))


@pytest.fixture(scope="session")
def starter() -> Reranker:
    """The shipped routed model (router, four domain experts, generalist), loaded once for every framework."""
    return Reranker("starter")


@pytest.fixture(scope="session")
def expected(sample, starter) -> Expected:
    query, documents = sample.queries[RERANKED], sample.candidates[RERANKED]
    ranked = starter.rank(query.text, [d.full_text for d in documents])
    relevance = starter.relevance([ranked.scores[ranked.indices.index(i)] for i in range(len(documents))])
    [decision] = starter.route([query.text])
    return Expected(query, documents, ranked, relevance.tolist(), decision)


@dataclass(frozen=True)
class TinyRouter:
    folder: Path
    features: CachedFeatures
    scifact_query: str  # routed to bm25
    finance_query: str  # routed to R0: abstain


@pytest.fixture(scope="session")
def tiny_router(tmp_path_factory, sample) -> TinyRouter:
    """R3AG over the pool {R0: null, bm25: bm25}, trained on 30 SciFact questions (bm25 serves them) and 30 TAT-QA
    finance questions (closed-book answers them best: R0), then saved as a router folder for `r3ag:<folder>`."""
    from routerank.r3ag.labels import RoutingLabels
    from routerank.r3ag.pool import PoolConfig
    from routerank.r3ag.router import R3AGConfig, R3AGRouter
    from routerank.r3ag.trainer import R3AGTrainer

    science = [q.text for q in read_queries(shared_dataset("scifact") / "queries.jsonl").values()]
    finance = [q.text for q in read_queries(shared_dataset("tatqa") / "queries.jsonl").values()]
    texts, n = science[:30] + finance[:30], 30
    labels = RoutingLabels(
        ("R0", "bm25"),
        tuple(f"t{i}" for i in range(2 * n)),
        tuple(texts),
        quality=np.array([[0.0, 0.8]] * n + [[0.0, 0.3]] * n),
        utility=np.array([[0.1, 0.8]] * n + [[0.8, 0.1]] * n),
        abstain=("R0",),
    )
    features = CachedFeatures()
    config = R3AGConfig(hidden=64, dim=32, space_dim=16, heads=2)
    pool = PoolConfig.from_specs({"R0": "null", "bm25": "bm25"})
    router = R3AGRouter(["R0", "bm25"], config, features=features, pool=pool)
    R3AGTrainer(router, labels, features=features(texts)).fit()
    scifact_query, finance_query = sample.queries[RERANKED].text, finance[200]
    assert [d.choice for d in router.route([scifact_query, finance_query])] == ["bm25", "R0"]
    return TinyRouter(router.save(tmp_path_factory.mktemp("r3ag") / "router"), features, scifact_query, finance_query)


@pytest.fixture
def r3ag_router(tiny_router, monkeypatch) -> TinyRouter:
    """The tiny router, with `r3ag:<folder>` pipelines reusing the session's MiniLM instead of loading their own."""
    monkeypatch.setattr("routerank.r3ag.router.encoder_features", lambda spec: tiny_router.features)
    return tiny_router
