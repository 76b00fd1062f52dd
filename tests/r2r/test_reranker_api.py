"""R2RReranker's public face (`routerank.route.RoutedScorer`), and `routerank.Reranker` using nothing else.

A keyword router and a bank that records where each pair went stand in for the real ones (tests/r2r/test_bank.py
covers those): what is under test is which expert scores which pair, and that the API asks the reranker for it.
"""

from __future__ import annotations

import numpy as np
import pytest

import routerank
from routerank.data.types import Query
from routerank.errors import RouterankError, SpecError
from routerank.r2r.reranker import R2RReranker
from routerank.route import GENERALIST, RouteDecision, RoutedScorer


class KeywordRouter:
    name = "keywords"
    labels = ("bio", "fin")

    def route(self, queries) -> list[RouteDecision]:
        out = []
        for query in queries:
            choice = "bio" if "cell" in query.text else "fin" if "tax" in query.text else GENERALIST
            out.append(RouteDecision(query.id, choice, 0.9, {"bio": 0.5, "fin": 0.5}))
        return out


class RecordingBank:
    domains = ("biology-expert", "finance-expert")

    def __init__(self, backbone: str = "smollm2"):
        self.backbone, self.calls = backbone, []

    def score_pairs(self, pairs, experts) -> np.ndarray:
        self.calls.append((list(pairs), list(experts)))
        scores = [
            len(doc) + 100 * self.domains.index(expert) if expert in self.domains else -1
            for (_, doc), expert in zip(pairs, experts, strict=True)
        ]
        return np.asarray(scores, dtype=np.float32)


EXPERTS = {"bio": "biology-expert", "fin": "finance-expert"}


@pytest.fixture
def r2r():
    bank = RecordingBank()
    return R2RReranker(bank, KeywordRouter(), experts=EXPERTS), bank


def test_route_gives_the_routers_decisions_for_queries_or_plain_texts(r2r):
    reranker, _ = r2r
    decisions = reranker.route(["cell walls", "tax rates", "rain"])
    assert [d.choice for d in decisions] == ["bio", "fin", GENERALIST]
    assert all(isinstance(d, RouteDecision) for d in decisions)
    assert [d.query_id for d in reranker.route([Query("a", "cell"), Query("b", "tax")])] == ["a", "b"]
    assert reranker.last_decisions == reranker.route([Query("a", "cell"), Query("b", "tax")])


def test_score_pairs_routes_each_query_once_and_maps_labels_to_the_banks_experts(r2r):
    reranker, bank = r2r
    pairs = [("cell walls", "doc"), ("tax rates", "a doc"), ("cell walls", "longer doc"), ("rain", "x")]
    scores = reranker.score_pairs(pairs)
    assert scores.dtype == np.float64
    assert scores.tolist() == [3.0, 105.0, 10.0, -1.0]
    assert bank.calls[-1][1] == ["biology-expert", "finance-expert", "biology-expert", GENERALIST]
    given = reranker.score_pairs(pairs[:2], ["fin", "bio"])
    assert given.tolist() == [103.0, 5.0]
    with pytest.raises(RouterankError, match="2 pairs but 1 experts"):
        reranker.score_pairs(pairs[:2], ["fin"])


def test_rerank_scores_with_the_expert_the_query_was_routed_to(r2r):
    reranker, bank = r2r
    ranking = reranker.rerank("tax rates", ["short", "a longer one"])
    assert ranking.doc_ids == ("1", "0")
    assert bank.calls[-1][1] == ["finance-expert", "finance-expert"]


def test_the_api_uses_the_routed_scorer_role(r2r):
    reranker, bank = r2r
    assert isinstance(reranker, RoutedScorer)
    ranker = routerank.Reranker.from_backend(reranker, "r2r:test")
    assert ranker.has_router and ranker.batchable
    assert [d.choice for d in ranker.route(["cell", "tax"])] == ["bio", "fin"]
    assert ranker.score_pairs([("tax", "abc")]).tolist() == [103.0]
    assert ranker.score_pairs([("tax", "abc")], ["bio"]).tolist() == [3.0]
    assert ranker.rank("cell walls", ["ab", "abcd"]).indices == [1, 0]
    assert ranker.score_kind() == "probability"
    over_ce = R2RReranker(RecordingBank("ce:/m"), KeywordRouter(), experts=EXPERTS)
    assert routerank.Reranker.from_backend(over_ce).score_kind() == "logit"


def test_a_reranker_without_a_router_is_not_routed():
    class Listwise:
        name = "listwise"

        def rerank(self, query, docs, top_k=None): ...

    ranker = routerank.Reranker.from_backend(Listwise())
    assert not ranker.has_router
    with pytest.raises(SpecError, match="has no router"):
        ranker.route(["q"])
