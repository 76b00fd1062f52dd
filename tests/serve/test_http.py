"""The server over real HTTP on a loopback port: schemas, order, every error code, auth, limits, truncation."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest

from tests.serve.conftest import KEY, config_for, expected_order, pending, serving, wait_until

QUERY = "does vitamin d lower cancer risk"
DOCS = [
    "Cats purr when they are content.",
    "Vitamin D supplementation and cancer incidence in a randomized trial.",
    "The stock market fell sharply on Monday.",
    "Low vitamin D levels are associated with higher cancer mortality.",
    "A recipe for lemon cake.",
]


@pytest.fixture(scope="module")
def server(fresh_ce, ce):
    import os

    os.environ["ROUTERANK_TEST_KEYS"] = KEY
    try:
        with serving(config_for(fresh_ce), ce) as (url, _, app):
            yield url, app
    finally:
        os.environ.pop("ROUTERANK_TEST_KEYS", None)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as c:
        yield c


def test_v1_and_v2_follow_cohere_schema_and_the_model_order(client, ce):
    order, relevance = expected_order(ce, QUERY, DOCS)
    v2 = client.post("/v2/rerank", json={"model": "ce", "query": QUERY, "documents": DOCS, "top_n": 3})
    assert v2.status_code == 200
    body = v2.json()
    assert set(body) == {"id", "results", "meta"}
    assert [r["index"] for r in body["results"]] == order[:3]
    assert all("document" not in r for r in body["results"])
    assert body["meta"]["api_version"]["version"] == "2"
    assert body["meta"]["billed_units"]["search_units"] == 1
    for r in body["results"]:
        assert 0.0 <= r["relevance_score"] <= 1.0
        assert r["relevance_score"] == pytest.approx(relevance[r["index"]], abs=1e-5)

    docs = [{"text": d} for d in DOCS]
    v1 = client.post("/v1/rerank", json={"query": QUERY, "documents": docs, "return_documents": True}).json()
    assert [r["index"] for r in v1["results"]] == order
    assert [r["document"]["text"] for r in v1["results"]] == [DOCS[i] for i in order]
    assert v1["meta"]["api_version"]["version"] == "1"


def test_rank_fields_pick_the_object_fields_to_rank_on(client, ce):
    docs = [{"title": d, "body": "unrelated filler"} for d in DOCS]
    got = client.post("/v1/rerank", json={"query": QUERY, "documents": docs, "rank_fields": ["title"]}).json()
    assert [r["index"] for r in got["results"]] == expected_order(ce, QUERY, DOCS)[0]


def test_ties_keep_input_order(client):
    got = client.post("/v2/rerank", json={"model": "ce", "query": QUERY, "documents": ["same text"] * 4}).json()
    assert [r["index"] for r in got["results"]] == [0, 1, 2, 3]


def test_auth_is_required_and_checked(server):
    url = server[0]
    payload = {"model": "ce", "query": QUERY, "documents": DOCS}
    missing = httpx.post(f"{url}/v2/rerank", json=payload)
    wrong = httpx.post(f"{url}/v2/rerank", json=payload, headers={"Authorization": "Bearer not-the-key"})
    basic = httpx.post(f"{url}/v2/rerank", json=payload, headers={"Authorization": f"Basic {KEY}"})
    for response in (missing, wrong, basic):
        assert response.status_code == 401
        assert "Bearer" in response.json()["message"]
        assert KEY not in response.text
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{url}/ready").status_code == 200


@pytest.mark.parametrize(
    ("payload", "code", "says"),
    [
        ({"model": "nope", "query": QUERY, "documents": DOCS}, 400, "unknown model"),
        ({"model": "ce", "query": "   ", "documents": DOCS}, 400, "query is empty"),
        ({"model": "ce", "query": QUERY, "documents": "not a list"}, 422, "documents"),
        ({"model": "ce", "query": QUERY, "documents": DOCS, "top_n": 0}, 422, "top_n"),
        ({"model": "ce", "documents": DOCS}, 422, "query"),
        ({"model": "ce", "query": QUERY, "documents": [{"title": "no text field"}]}, 422, "rank_fields"),
        ({"model": "ce", "query": QUERY, "documents": ["d"] * 1001}, 413, "limit is 1000"),
        ({"model": "ce", "query": "q" * 4001, "documents": DOCS}, 413, "shorten it"),
    ],
)
def test_bad_requests_get_a_clear_json_error(client, payload, code, says):
    response = client.post("/v2/rerank", json=payload)
    assert response.status_code == code
    body = response.json()
    assert body["code"] == code and says in body["message"]


def test_route_on_a_model_without_router_is_a_400(client):
    response = client.post("/v1/route", json={"queries": [QUERY]})
    assert response.status_code == 400 and "no router" in response.json()["message"]
    assert client.post("/v1/search", json={"query": QUERY}).status_code == 400


def test_body_size_is_limited_with_or_without_content_length(fresh_ce, ce, keys):
    config = config_for(fresh_ce, limits={"max_body_bytes": 2000})
    big = {"model": "ce", "query": QUERY, "documents": ["word " * 100] * 10}
    with serving(config, ce) as (url, _, _app):
        declared = httpx.post(f"{url}/v2/rerank", json=big, headers=keys)
        assert declared.status_code == 413 and "limit" in declared.json()["message"]

        import json

        def chunks():
            data = json.dumps(big).encode()
            for i in range(0, len(data), 500):
                yield data[i : i + 500]

        streamed = httpx.post(
            f"{url}/v2/rerank", content=chunks(), headers={**keys, "content-type": "application/json"}
        )
        assert streamed.status_code == 413
        small = httpx.post(
            f"{url}/v2/rerank", json={"model": "ce", "query": QUERY, "documents": DOCS[:2]}, headers=keys
        )
        assert small.status_code == 200


def test_long_documents_are_truncated_never_refused(client, ce):
    long_doc = "vitamin d and cancer " * 2000
    response = client.post("/v2/rerank", json={"model": "ce", "query": QUERY, "documents": [long_doc, DOCS[0]]})
    assert response.status_code == 200
    cut = client.post(
        "/v2/rerank", json={"model": "ce", "query": QUERY, "documents": [DOCS[1]], "max_tokens_per_doc": 3}
    ).json()
    spans = ce.tokenizer(DOCS[1], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    head = DOCS[1][: spans[2][1]]
    assert head.lower().startswith("vitamin d") and len(head) < 25
    expected = 1 / (1 + np.exp(-ce.backend.score_pairs([(QUERY, head)])[0]))
    assert cut["results"][0]["relevance_score"] == pytest.approx(expected, abs=1e-5)
    metrics = client.get("/metrics").text
    assert 'routerank_truncated_documents_total{model="ce"}' in metrics


def test_chunked_scoring_takes_the_best_chunk(client, ce):
    filler = "The stock market fell sharply on Monday. " * 30
    doc = filler + DOCS[3]
    truncated = client.post("/v1/rerank", json={"query": QUERY, "documents": [doc]}).json()
    chunked = client.post("/v1/rerank", json={"query": QUERY, "documents": [doc], "max_chunks_per_doc": 10}).json()
    from routerank.serve.text import DocumentFitter

    pieces = DocumentFitter(ce.tokenizer, ce.max_length).fit(
        QUERY, [doc], max_tokens_per_doc=4096, chunk=True, max_chunks=10
    )
    assert len(pieces.texts) > 1
    best = 1 / (1 + np.exp(-ce.backend.score_pairs([(QUERY, t) for t in pieces.texts]).max()))
    assert chunked["results"][0]["relevance_score"] == pytest.approx(best, abs=1e-5)
    assert chunked["results"][0]["relevance_score"] >= truncated["results"][0]["relevance_score"] - 1e-6
    assert chunked["meta"]["billed_units"]["search_units"] == 1


def test_metrics_count_requests_batches_and_errors(client):
    client.post("/v2/rerank", json={"model": "ce", "query": QUERY, "documents": DOCS})
    httpx.post(f"{client.base_url}/v2/rerank", json={"model": "ce", "query": QUERY, "documents": DOCS})
    text = httpx.get(f"{client.base_url}/metrics").text
    assert 'routerank_requests_total{code="200",endpoint="/v2/rerank"}' in text
    assert 'routerank_errors_total{code="401"}' in text
    assert 'routerank_batch_pairs_count{model="ce"}' in text
    assert "routerank_request_seconds_bucket" in text and "routerank_queue_pairs" in text
    assert httpx.get(f"{client.base_url}/openapi.json").json()["paths"].keys() >= {"/v1/rerank", "/v2/rerank"}


def test_a_full_queue_is_a_429_and_a_slow_request_a_503(fresh_ce, ce, keys):
    config = config_for(
        fresh_ce, batching={"max_wait_ms": 1500}, limits={"max_queued_pairs": 8}, server={"request_timeout_s": 60}
    )
    payload = {"model": "ce", "query": QUERY, "documents": DOCS}
    with serving(config, ce) as (url, _, app):
        first: list = []
        waiting = threading.Thread(
            target=lambda: first.append(httpx.post(f"{url}/v2/rerank", json=payload, headers=keys, timeout=60))
        )
        waiting.start()
        wait_until(lambda: pending(app) == len(DOCS))  # the first request sits in the batcher's 1.5 s wait
        second = httpx.post(f"{url}/v2/rerank", json=payload, headers=keys, timeout=60)
        waiting.join()
        assert second.status_code == 429 and "retry" in second.json()["message"]
        assert first[0].status_code == 200
        too_big = httpx.post(f"{url}/v2/rerank", json={**payload, "documents": DOCS * 2}, headers=keys)
        assert too_big.status_code == 413 and "queue holds" in too_big.json()["message"]

    slow = config_for(fresh_ce, batching={"max_wait_ms": 1500}, server={"request_timeout_s": 0.2})
    with serving(slow, ce) as (url, _, _app):
        response = httpx.post(f"{url}/v2/rerank", json=payload, headers=keys, timeout=60)
        assert response.status_code == 503 and "longer than" in response.json()["message"]


def test_concurrency_limit_is_a_429(fresh_ce, ce, keys):
    config = config_for(fresh_ce, batching={"max_wait_ms": 1500}, limits={"max_concurrent_requests": 1})
    payload = {"model": "ce", "query": QUERY, "documents": DOCS}
    with serving(config, ce) as (url, _, app):
        first: list = []
        waiting = threading.Thread(
            target=lambda: first.append(httpx.post(f"{url}/v2/rerank", json=payload, headers=keys, timeout=60))
        )
        waiting.start()
        wait_until(lambda: pending(app) == len(DOCS))
        second = httpx.post(f"{url}/v2/rerank", json=payload, headers=keys, timeout=60)
        waiting.join()
        assert second.status_code == 429 and "concurrent" in second.json()["message"]
        assert second.headers["retry-after"] == "1"
        assert first[0].status_code == 200


def test_graceful_shutdown_finishes_requests_in_flight(fresh_ce, ce, keys):
    config = config_for(fresh_ce, batching={"max_wait_ms": 1000})
    payload = {"model": "ce", "query": QUERY, "documents": DOCS}
    results: list = []
    with serving(config, ce) as (url, server, app):

        def call(i):
            docs = DOCS[i:] + DOCS[:i]
            response = httpx.post(f"{url}/v2/rerank", json={**payload, "documents": docs}, headers=keys, timeout=60)
            results.append((docs, response))

        threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: pending(app) == 4 * len(DOCS))  # all four wait in the batcher
        server.stop()
        for t in threads:
            t.join()
        assert not server.thread.is_alive()
    assert len(results) == 4
    for docs, response in results:
        assert response.status_code == 200
        assert sorted(r["index"] for r in response.json()["results"]) == list(range(len(docs)))
