from __future__ import annotations

from types import MappingProxyType

import pytest

from routerank.data.types import Query, Ranking, Run
from routerank.errors import SpecError
from routerank.evaluate import evaluate
from routerank.retrieve import BM25Retriever, FusionRetriever, NullRetriever, rrf, weighted


def run_of(**rankings) -> Run:
    return Run(MappingProxyType({q: Ranking(tuple(d), tuple(s)) for q, (d, s) in rankings.items()}))


def test_null_retriever_returns_nothing_and_scores_zero(scifact):
    null = NullRetriever()
    null.index(scifact.corpus)
    queries = scifact.split_queries("test")
    run = null.search(queries, k=100)
    assert set(run) == {q.id for q in queries} and all(len(r) == 0 for r in run.rankings.values())
    scores = evaluate(run, scifact.split_qrels("test"), "nDCG@10")
    assert scores["nDCG@10"] == 0.0 and scores.num_queries == 300


def test_rrf_by_hand():
    a = run_of(q=(["x", "y"], [9.0, 1.0]))
    b = run_of(q=(["y", "z"], [0.9, 0.8]))
    fused = rrf([a, b], k=3, rrf_k=60)
    expected = {"x": 1 / 61, "y": 1 / 62 + 1 / 61, "z": 1 / 62}
    assert fused["q"].doc_ids == ("y", "x", "z")
    assert fused["q"].as_dict() == pytest.approx(expected)


def test_weighted_minmax_by_hand():
    a = run_of(q=(["x", "y"], [10.0, 0.0]))
    b = run_of(q=(["y", "z"], [1.0, 0.5]))
    fused = weighted([a, b], weights=[0.25, 0.75])
    assert fused["q"].as_dict() == pytest.approx({"x": 0.25, "y": 0.75, "z": 0.0})


def test_fusion_needs_valid_setup():
    with pytest.raises(SpecError):
        FusionRetriever([NullRetriever()])
    with pytest.raises(SpecError):
        FusionRetriever([NullRetriever(), NullRetriever()], method="mean")


def test_fusion_of_bm25_variants_on_scifact(scifact):
    fused = FusionRetriever([BM25Retriever(), BM25Retriever(k1=0.9, b=0.4)], method="rrf")
    fused.index(scifact.corpus)
    queries = scifact.split_queries("test")
    run = fused.search(queries, k=100)
    assert all(len(r) <= 100 for r in run.rankings.values())
    assert evaluate(run, scifact.split_qrels("test"), "nDCG@10")["nDCG@10"] >= 0.67
    with_null = FusionRetriever([BM25Retriever(), NullRetriever()], method="weighted", weights=[1.0, 0.0])
    with_null.index(scifact.corpus)
    assert (
        with_null.search([Query("q", "vitamin d")], 5)["q"].doc_ids
        == BM25Retriever.search(with_null.retrievers[0], [Query("q", "vitamin d")], 5)["q"].doc_ids
    )
