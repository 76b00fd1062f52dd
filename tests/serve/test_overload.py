"""Overload: a burst far past the limits gets 429/503, never a crash; every 200 answers its own request; the
server recovers. The burst is bounded (60 requests, 127.0.0.1 only, 60 s timeout)."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from tests.serve.conftest import KEY, config_for, serving

BURST = 60
TOPICS = ["heart disease", "tax law", "river floods", "protein folding", "football", "jazz"]


def request_for(i: int) -> dict:
    topic = TOPICS[i % len(TOPICS)]
    docs = [f"request {i} document {j}: a note about {TOPICS[(i + j) % len(TOPICS)]}" for j in range(5)]
    return {"model": "ce", "query": f"{topic} question number {i}", "documents": docs, "return_documents": True}


async def burst(url: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=BURST)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60, limits=limits
    ) as client:
        return await asyncio.gather(*(client.post("/v2/rerank", json=request_for(i)) for i in range(BURST)))


@pytest.mark.slow
def test_overload_gives_429_or_503_and_no_mixed_up_responses(fresh_ce, ce, keys):
    config = config_for(
        fresh_ce,
        limits={"max_concurrent_requests": 8, "max_queued_pairs": 25},
        batching={"max_wait_ms": 20},
        server={"request_timeout_s": 20},
    )
    with serving(config, ce) as (url, server, _app):
        responses = asyncio.run(burst(url))
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 429, 503}, codes
        assert codes.count(200) >= 5 and codes.count(429) >= 1
        for i, response in enumerate(responses):
            if response.status_code != 200:
                assert response.json()["code"] == response.status_code and response.json()["message"]
                continue
            sent = request_for(i)
            scores = ce.backend.score_pairs([(sent["query"], d) for d in sent["documents"]])
            results = response.json()["results"]
            assert sorted(r["index"] for r in results) == list(range(5))
            for r in results:
                assert r["document"]["text"] == sent["documents"][r["index"]]
                assert r["relevance_score"] == pytest.approx(1 / (1 + np.exp(-scores[r["index"]])), abs=1e-4)

        after = [httpx.post(f"{url}/v2/rerank", json=request_for(i), headers=keys, timeout=30) for i in range(3)]
        assert [r.status_code for r in after] == [200, 200, 200]
        assert server.thread.is_alive()
        metrics = httpx.get(f"{url}/metrics").text
        assert 'routerank_errors_total{code="429"}' in metrics
        assert "routerank_in_flight_requests 0.0" in metrics
