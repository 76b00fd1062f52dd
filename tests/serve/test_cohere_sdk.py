"""The official cohere SDK (7.x), pointed at a routerank server on a loopback port, through v1 and v2."""

from __future__ import annotations

import pytest

from tests.serve.conftest import KEY, config_for, expected_order, serving

cohere = pytest.importorskip("cohere")

QUERY = "which drugs lower cholesterol"
DOCS = [
    "Statins lower LDL cholesterol in adults at risk of heart disease.",
    "The river flooded the valley after a week of rain.",
    "Ezetimibe reduces cholesterol absorption in the intestine.",
    "Chess openings: the Sicilian defence.",
    "Dietary fibre modestly lowers blood cholesterol.",
    "A new smartphone was released this autumn.",
]


@pytest.fixture(scope="module")
def url(fresh_ce, ce):
    import os

    os.environ["ROUTERANK_TEST_KEYS"] = KEY
    try:
        with serving(config_for(fresh_ce), ce) as (base_url, _, _app):
            yield base_url
    finally:
        os.environ.pop("ROUTERANK_TEST_KEYS", None)


def test_client_v2_gets_the_model_order_and_top_n(url, ce):
    order, relevance = expected_order(ce, QUERY, DOCS)
    client = cohere.ClientV2(api_key=KEY, base_url=url, timeout=30)
    response = client.rerank(model="ce", query=QUERY, documents=DOCS, top_n=3)
    assert [r.index for r in response.results] == order[:3]
    assert [r.relevance_score for r in response.results] == pytest.approx([relevance[i] for i in order[:3]], abs=1e-5)
    assert response.meta.api_version.version == "2"
    assert response.meta.billed_units.search_units == 1
    assert response.id


def test_v1_client_returns_documents_in_the_model_order(url, ce):
    order, _ = expected_order(ce, QUERY, DOCS)
    client = cohere.Client(api_key=KEY, base_url=url, timeout=30)
    response = client.rerank(model="ce", query=QUERY, documents=DOCS, top_n=4, return_documents=True)
    assert [r.index for r in response.results] == order[:4]
    assert [r.document.text for r in response.results] == [DOCS[i] for i in order[:4]]
    objects = client.rerank(query=QUERY, documents=[{"text": d} for d in DOCS])  # v1: model optional, objects
    assert [r.index for r in objects.results] == order


def test_sdk_sees_auth_and_request_errors_as_its_own_exceptions(url):
    from cohere.core.api_error import ApiError

    with pytest.raises(ApiError) as unauthorized:
        cohere.ClientV2(api_key="wrong", base_url=url, timeout=30).rerank(model="ce", query=QUERY, documents=DOCS)
    assert unauthorized.value.status_code == 401
    with pytest.raises(ApiError) as bad:
        cohere.ClientV2(api_key=KEY, base_url=url, timeout=30).rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert bad.value.status_code == 400 and "unknown model" in str(bad.value.body)


def test_async_client_v2_concurrent_calls_each_get_their_own_answer(url, ce):
    import asyncio

    async def main():
        client = cohere.AsyncClientV2(api_key=KEY, base_url=url, timeout=30)
        rotations = [DOCS[i:] + DOCS[:i] for i in range(len(DOCS))]
        responses = await asyncio.gather(
            *(client.rerank(model="ce", query=QUERY, documents=docs) for docs in rotations)
        )
        return rotations, responses

    rotations, responses = asyncio.run(main())
    for docs, response in zip(rotations, responses, strict=True):
        assert [r.index for r in response.results] == expected_order(ce, QUERY, docs)[0]
