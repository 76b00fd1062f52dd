"""/v1/route and /v1/search over HTTP.

Routing uses a real SoftmaxRouter on MiniLM query embeddings inside a real R2RReranker. Its expert bank is a
small stand-in that scores with the test cross-encoder and records which expert each pair was sent to: a real
LoRA bank needs the SmolLM2 backbone and trained adapters (tests/rerank/test_experts.py covers it), and what is
under test here is the server's use of the router and of expert-aware scoring.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.serve.conftest import config_for, expected_order, serving

SCIENCE = [
    "protein folding in cells",
    "gene expression in tumours",
    "vitamin d and bone density",
    "antibiotic resistance in bacteria",
    "neurons and synaptic plasticity",
    "vaccine immune response",
]
FINANCE = [
    "quarterly revenue growth",
    "net income after tax",
    "dividend payout ratio",
    "operating cash flow in 2019",
    "total assets and liabilities",
    "earnings per share change",
]


class RecordingBank:
    domains = ["science", "finance"]
    backbone = "ce:test"  # experts over a cross-encoder: scores are logits

    def __init__(self, ce):
        self.ce, self.calls = ce, []

    def score_pairs(self, pairs, experts):
        self.calls.append((list(pairs), list(experts)))
        return self.ce.backend.score_pairs(pairs)


@pytest.fixture(scope="module")
def r2r(ce):
    import routerank
    from routerank.r2r.reranker import R2RReranker
    from routerank.r2r.routers import SoftmaxRouter
    from routerank.retrieve.dense import DenseRetriever

    encoder = DenseRetriever(progress=False)
    router = SoftmaxRouter(["science", "finance"], lambda texts: encoder.encode(texts, progress=False))
    router.fit(SCIENCE + FINANCE, ["science"] * len(SCIENCE) + ["finance"] * len(FINANCE), epochs=100)
    bank = RecordingBank(ce)
    return routerank.Reranker.from_backend(R2RReranker(bank, router), "r2r:test"), bank, router


def test_route_returns_the_routers_choice_and_rerank_uses_that_expert(fresh_ce, ce, r2r, keys):
    ranker, bank, router = r2r
    from routerank.serve.config import parse_config

    config = parse_config(
        {
            "models": {"ce": {"spec": f"ce:{fresh_ce}"}, "r2r": {"spec": "r2r:test"}},
            "auth": {"api_keys_env": "ROUTERANK_TEST_KEYS"},
        }
    )
    queries = ["how do bacteria resist antibiotics", "what was the dividend per share"]
    with serving(config, ce, models={"ce": ce, "r2r": ranker}) as (url, _, _app):
        routed = httpx.post(f"{url}/v1/route", json={"queries": queries}, headers=keys, timeout=30)
        assert routed.status_code == 200
        body = routed.json()
        assert body["model"] == "r2r"
        direct = router.route(queries)
        assert [r["choice"] for r in body["results"]] == [d.choice for d in direct] == ["science", "finance"]
        for result, decision in zip(body["results"], direct, strict=True):
            assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
            assert result["confidence"] == pytest.approx(decision.confidence, abs=1e-6)

        docs = ["Dividends were 2 dollars per share.", "Bacteria gain resistance by mutation.", "Rain."]
        bank.calls.clear()
        reranked = httpx.post(
            f"{url}/v2/rerank", json={"model": "r2r", "query": queries[1], "documents": docs}, headers=keys, timeout=30
        )
        assert reranked.status_code == 200
        order, relevance = expected_order(ce, queries[1], docs)
        assert [r["index"] for r in reranked.json()["results"]] == order
        assert [r["relevance_score"] for r in reranked.json()["results"]] == pytest.approx(relevance[order], abs=1e-5)
        assert {e for _, experts in bank.calls for e in experts} == {"finance"}
        assert sorted(d for pairs, _ in bank.calls for _, d in pairs) == sorted(docs)


def test_search_retrieves_then_reranks_with_the_configured_model(fresh_ce, ce, tiny_beir, keys):
    from routerank.serve.state import load_searches

    config = config_for(
        fresh_ce, search={"tiny": {"dataset": str(tiny_beir), "pipeline": "bm25", "model": "ce", "depth": 3}}
    )
    with serving(config, ce, searches=load_searches(config)) as (url, _, _app):
        query = "aspirin or statins for heart attacks and cholesterol"
        response = httpx.post(f"{url}/v1/search", json={"query": query, "top_n": 2}, headers=keys, timeout=30)
        assert response.status_code == 200
        body = response.json()
        assert body["index"] == "tiny" and body["model"] == "ce" and len(body["results"]) == 2
        from routerank.data.registry import load_dataset

        corpus = load_dataset(str(tiny_beir), splits=[]).corpus
        retrieved = [r["doc_id"] for r in body["results"]]
        assert all(d in corpus for d in retrieved)
        scores = {r["doc_id"]: r["relevance_score"] for r in body["results"]}
        assert list(scores.values()) == sorted(scores.values(), reverse=True)
        for r in body["results"]:
            assert r["text"] == corpus[r["doc_id"]].text and r["title"] == corpus[r["doc_id"]].title
            raw = ce.backend.score_pairs([(query, corpus[r["doc_id"]].full_text)])[0]
            assert r["relevance_score"] == pytest.approx(1 / (1 + np.exp(-raw)), abs=1e-5)
        unknown = httpx.post(f"{url}/v1/search", json={"index": "nope", "query": query}, headers=keys)
        assert unknown.status_code == 400 and "unknown index" in unknown.json()["message"]
