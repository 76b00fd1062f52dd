"""The same app on Ray Serve with 2 replicas, over real HTTP on a loopback port: order and scores, auth, errors,
the cohere SDK, both replicas answering, and the proxy gone after the context exits."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import httpx
import pytest

from tests.serve.conftest import KEY, config_for, expected_order

pytest.importorskip("ray.serve")

pytestmark = pytest.mark.slow

QUERY = "does vitamin d lower cancer risk"
DOCS = [
    "Cats purr when they are content.",
    "Vitamin D supplementation and cancer incidence in a randomized trial.",
    "The stock market fell sharply on Monday.",
    "Low vitamin D levels are associated with higher cancer mortality.",
    "A recipe for lemon cake.",
]


@pytest.fixture(scope="module")
def ray_session():
    """Ray for this module: the session's own if a test already started one, else a small local one, shut after.

    `address="local"` starts a new instance even while another process's cluster on this machine is the "current"
    one (`ray start`, `ray.cluster_utils.Cluster`), which a plain `ray.init()` would try to join.
    """
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(
            address="local", num_cpus=2, object_store_memory=150 * 2**20, include_dashboard=False, log_to_driver=False
        )
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def served(ray_session, fresh_ce):
    from routerank.serve.ray_serve import RayServed

    os.environ["ROUTERANK_TEST_KEYS"] = KEY
    try:
        server = RayServed(config_for(fresh_ce), replicas=2, host="127.0.0.1", port=0, cpus_per_replica=0.5)
        with server as url:
            yield url, server
    finally:
        os.environ.pop("ROUTERANK_TEST_KEYS", None)


@pytest.fixture(scope="module")
def client(served):
    with httpx.Client(base_url=served[0], headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        yield c


def test_v2_rerank_matches_the_in_process_reranker(client, ce):
    direct = ce.rank(QUERY, DOCS)  # routerank.Reranker in this process, on the same pairs
    response = client.post("/v2/rerank", json={"model": "ce", "query": QUERY, "documents": DOCS})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "results", "meta"}
    assert [r["index"] for r in body["results"]] == direct.indices
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx(list(ce.relevance(direct.scores)), abs=1e-5)
    assert body["meta"]["api_version"]["version"] == "2"
    top = client.post("/v2/rerank", json={"model": "ce", "query": QUERY, "documents": DOCS, "top_n": 3}).json()
    assert [r["index"] for r in top["results"]] == direct.indices[:3] == expected_order(ce, QUERY, DOCS)[0][:3]


def test_auth_errors_and_health_are_the_apps_own(served, client):
    url = served[0]
    payload = {"model": "ce", "query": QUERY, "documents": DOCS}
    for headers in ({}, {"Authorization": "Bearer not-the-key"}):
        response = httpx.post(f"{url}/v2/rerank", json=payload, headers=headers, timeout=60)
        assert response.status_code == 401 and "Bearer" in response.json()["message"]
        assert KEY not in response.text
    bad = client.post("/v2/rerank", json={**payload, "documents": "not a list"})
    assert bad.status_code == 422 and bad.json()["code"] == 422 and "documents" in bad.json()["message"]
    unknown = client.post("/v2/rerank", json={**payload, "model": "nope"})
    assert unknown.status_code == 400 and "unknown model" in unknown.json()["message"]
    assert httpx.get(f"{url}/health", timeout=60).json() == {"status": "ok"}
    assert httpx.get(f"{url}/ready", timeout=60).json()["status"] == "ready"


def test_the_cohere_sdk_works_through_the_proxy(served, ce):
    cohere = pytest.importorskip("cohere")
    order, relevance = expected_order(ce, QUERY, DOCS)
    response = cohere.ClientV2(api_key=KEY, base_url=served[0], timeout=60).rerank(
        model="ce", query=QUERY, documents=DOCS, top_n=2
    )
    assert [r.index for r in response.results] == order[:2]
    assert [r.relevance_score for r in response.results] == pytest.approx([relevance[i] for i in order[:2]], abs=1e-5)


def test_both_replicas_answer(client, ce):
    rotations = [DOCS[i % len(DOCS) :] + DOCS[: i % len(DOCS)] for i in range(20)]

    def call(docs):
        return docs, client.post("/v2/rerank", json={"model": "ce", "query": QUERY, "documents": docs})

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(call, rotations))
    for docs, response in answers:
        assert response.status_code == 200
        assert [r["index"] for r in response.json()["results"]] == expected_order(ce, QUERY, docs)[0]
    replicas = {response.headers["x-routerank-replica"] for _, response in answers}
    assert len(replicas) == 2, replicas


def test_the_url_is_the_configured_loopback_port(served):
    url, server = served
    assert urlparse(url).hostname == "127.0.0.1" and urlparse(url).port == server.port


def test_leaving_the_context_stops_the_server(served):
    """Runs last of the tests on `served`: the context's exit deletes the app and closes the proxy's port."""
    from ray import serve

    from routerank.serve.ray_serve import port_open

    url, server = served
    assert port_open("127.0.0.1", server.port)
    server.__exit__(None, None, None)  # what leaving `with RayServed(...)` does; the fixture's own exit is a no-op
    assert not server.running
    assert not port_open("127.0.0.1", server.port), "the Ray Serve proxy still listens after the context exited"
    assert "routerank" not in serve.status().applications
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=5)


def test_a_replica_answers_its_own_429_past_its_concurrency_limit(ray_session, fresh_ce, monkeypatch):
    """As with uvicorn: one request waits in the batcher, so a second one is refused by the guard at once.

    The wait is 20 s, not uvicorn's 1.5 s: here every poll of /metrics goes through Ray's proxy, which on busy CPUs
    can take longer than a short window lasts (an 8 s window was missed once in a clean-clone run of the suite).
    """
    import threading

    from routerank.serve.ray_serve import RayServed
    from tests.serve.conftest import wait_until

    monkeypatch.setenv("ROUTERANK_TEST_KEYS", KEY)
    config = config_for(fresh_ce, batching={"max_wait_ms": 20000}, limits={"max_concurrent_requests": 1})
    headers = {"Authorization": f"Bearer {KEY}"}
    payload = {"model": "ce", "query": QUERY, "documents": DOCS}
    with RayServed(config, replicas=1, host="127.0.0.1", port=0, cpus_per_replica=0.5) as url:
        first: list = []
        waiting = threading.Thread(
            target=lambda: first.append(httpx.post(f"{url}/v2/rerank", json=payload, headers=headers, timeout=60))
        )
        waiting.start()
        wait_until(
            lambda: bool(first) or "routerank_in_flight_requests 1.0" in httpx.get(f"{url}/metrics", timeout=30).text
        )
        assert not first, "the first request was answered before the test saw it in flight"
        second = httpx.post(f"{url}/v2/rerank", json=payload, headers=headers, timeout=60)
        waiting.join()
        assert second.status_code == 429 and "concurrent" in second.json()["message"]
        assert second.headers["retry-after"] == "1"
        assert first[0].status_code == 200


def test_bad_replica_counts_are_refused_before_ray_starts(fresh_ce, monkeypatch):
    from routerank.errors import RouterankError
    from routerank.serve.ray_serve import RayServed

    monkeypatch.setenv("ROUTERANK_TEST_KEYS", KEY)
    for replicas in (0, -1):
        with pytest.raises(RouterankError, match="--ray-replicas"):
            RayServed(config_for(fresh_ce), replicas=replicas)


def test_without_ray_installed_the_error_says_what_to_install(fresh_ce, monkeypatch):
    import sys

    from routerank.errors import MissingDependencyError
    from routerank.serve.ray_serve import RayServed

    monkeypatch.setenv("ROUTERANK_TEST_KEYS", KEY)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    with pytest.raises(MissingDependencyError, match=r"routerank\[ray\]"):
        RayServed(config_for(fresh_ce), replicas=2).start()
