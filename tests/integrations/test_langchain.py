"""The LangChain components with LangChain's real classes: the reranker as a document compressor (in a chain, and in
ContextualCompressionRetriever, from langchain-classic), the retriever over pipeline specs."""

from __future__ import annotations

import asyncio

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

from routerank.api import Reranker
from routerank.data.types import Corpus, Query
from routerank.data.types import Document as RouterankDocument
from routerank.errors import RouterankError, SpecError
from routerank.integrations.common import EXPERT, EXPERT_CONFIDENCE, ID, RANK, RELEVANCE, ROUTE, SCORE
from routerank.integrations.langchain import RouterankReranker, RouterankRetriever
from routerank.pipeline import build
from tests.integrations.conftest import RERANKED


def as_langchain(documents: list[RouterankDocument]) -> list[Document]:
    return [Document(page_content=d.full_text, metadata={"scifact_id": d.id, "source": "scifact"}) for d in documents]


@pytest.mark.slow
def test_the_reranker_orders_like_routerank_and_adds_scores_and_the_expert(starter, expected, sample):
    docs = as_langchain(expected.documents)
    before = [dict(d.metadata) for d in docs]
    out = RouterankReranker(starter, top_n=3).compress_documents(docs, expected.query.text)

    assert [d.metadata["scifact_id"] for d in out] == [expected.documents[i].id for i in expected.ranked.indices[:3]]
    assert docs[1].metadata["scifact_id"] in sample.relevant[RERANKED]  # BM25 had it second; the model puts it first
    assert out[0].metadata["scifact_id"] in sample.relevant[RERANKED]
    for rank, (doc, result) in enumerate(zip(out, expected.ranked, strict=False), start=1):
        assert doc.page_content == result.text and doc.metadata["source"] == "scifact"
        assert doc.metadata[SCORE] == pytest.approx(result.score, abs=1e-4)
        assert doc.metadata[RELEVANCE] == pytest.approx(expected.relevance[result.index], abs=1e-5)
        assert 0.0 <= doc.metadata[RELEVANCE] <= 1.0 and doc.metadata[RANK] == rank
        assert doc.metadata[EXPERT] == expected.decision.choice == "scifact"
        assert doc.metadata[EXPERT_CONFIDENCE] == pytest.approx(expected.decision.confidence, abs=1e-5)
    assert [d.metadata[SCORE] for d in out] == sorted((d.metadata[SCORE] for d in out), reverse=True)
    assert [d.metadata for d in docs] == before  # the caller's documents are not changed


@pytest.mark.slow
def test_the_reranker_compresses_a_retrievers_documents_in_a_chain(starter, sample):
    base = RouterankRetriever("bm25", as_langchain(list(sample.corpus.documents)), k=6, cache=False)
    compressor = RouterankReranker(starter, top_n=2)
    chain = RunnableParallel(docs=base, query=RunnablePassthrough()) | RunnableLambda(
        lambda x: compressor.compress_documents(x["docs"], x["query"])
    )
    out = chain.invoke(sample.queries[RERANKED].text)
    assert len(out) == 2 and out[0].metadata["scifact_id"] in sample.relevant[RERANKED]
    assert out[0].metadata[RELEVANCE] >= out[1].metadata[RELEVANCE] and out[0].metadata[EXPERT] == "scifact"
    assert compressor.last_route.expert == "scifact"


@pytest.mark.slow
def test_the_reranker_works_inside_contextual_compression_retriever(starter, sample):
    base = RouterankRetriever("bm25", as_langchain(list(sample.corpus.documents)), k=6, cache=False)
    compression = ContextualCompressionRetriever(
        base_compressor=RouterankReranker(starter, top_n=2), base_retriever=base
    )
    out = compression.invoke(sample.queries[RERANKED].text)
    assert len(out) == 2 and out[0].metadata["scifact_id"] in sample.relevant[RERANKED]
    assert out[0].metadata[EXPERT] == "scifact" and out[0].metadata[RANK] == 1


@pytest.mark.slow
def test_the_reranker_takes_empty_and_short_lists(starter):
    compressor = RouterankReranker(starter, top_n=5)
    assert compressor.compress_documents([], "anything") == []
    docs = [
        Document(page_content="Statins lower cholesterol."),
        Document(page_content="Aspirin prevents heart attacks."),
    ]
    query = "does aspirin prevent heart attacks"
    out = compressor.compress_documents(docs, query)  # top_n larger than the list: all of it
    assert [d.page_content for d in out] == [docs[1].page_content, docs[0].page_content]
    assert [d.page_content for d in asyncio.run(compressor.acompress_documents(docs, query))] == [
        d.page_content for d in out
    ]
    assert len(RouterankReranker(starter, top_n=None).compress_documents(docs, query)) == 2


def test_the_reranker_refuses_bad_input_before_scoring():
    unused = Reranker.from_backend(object(), "unused")  # never asked to score: every check comes first
    with pytest.raises(RouterankError, match="document 1 is a str, not a langchain Document"):
        RouterankReranker(unused).compress_documents([Document(page_content="a"), "text"], "query")
    with pytest.raises(RouterankError, match="the query is a int, not a string"):
        RouterankReranker(unused).compress_documents([Document(page_content="a")], 3)
    with pytest.raises(RouterankError, match="top_n must be"):
        RouterankReranker("starter", top_n=0)
    with pytest.raises(RouterankError, match="reranker_options apply"):
        RouterankReranker(unused, reranker_options={"device": "cpu"})
    with pytest.raises(SpecError, match="unknown reranker 'nonsense'"):
        RouterankReranker("nonsense")


def test_the_retriever_returns_routeranks_bm25_ranking_as_the_callers_documents(sample):
    docs = as_langchain(list(sample.corpus.documents))
    query = sample.queries["5"].text
    retriever = RouterankRetriever("bm25", docs, k=4, cache=False, tags=["mine"])
    out = retriever.invoke(query)

    own = build("bm25", Corpus(RouterankDocument(str(i), d.page_content) for i, d in enumerate(docs)), cache=False)
    ranking = own.search([Query("q", query)], 4)["q"]
    assert [d.metadata[ID] for d in out] == list(ranking.doc_ids)
    assert [d.metadata[SCORE] for d in out] == pytest.approx(list(ranking.scores))
    assert [d.metadata[RANK] for d in out] == [1, 2, 3, 4] and retriever.tags == ["mine"]
    for doc in out:
        original = docs[int(doc.metadata[ID])]
        assert (
            doc.page_content == original.page_content and doc.metadata["scifact_id"] == original.metadata["scifact_id"]
        )
        assert ID not in original.metadata  # a copy: the caller's document is unchanged
    assert out[0].metadata["scifact_id"] in sample.relevant["5"]
    assert len(retriever.invoke(query, k=2)) == 2 and len(asyncio.run(retriever.ainvoke(query))) == 4
    assert len(retriever.invoke(query, k=500)) <= len(docs)
    assert retriever.last_route.retriever is None and retriever.last_route.expert is None


def test_the_retriever_searches_a_routerank_dataset(scifact, sample):
    retriever = RouterankRetriever("bm25", scifact, k=3, cache=False)
    out = retriever.invoke(sample.queries["49"].text)
    assert len(out) == 3 and out[0].id in sample.relevant["49"] and out[0].metadata[ID] == out[0].id
    document = scifact.corpus[out[0].id]
    assert out[0].page_content == document.full_text and out[0].metadata["title"] == document.title


def test_the_retriever_refuses_bad_input(sample):
    docs = as_langchain(list(sample.corpus.documents))
    with pytest.raises(SpecError, match="unknown retriever"):
        RouterankRetriever("bm26", docs)
    with pytest.raises(RouterankError, match="document 2 is a int, not a langchain document or a string"):
        RouterankRetriever("bm25", [docs[0], "plain text is fine", 7], cache=False)
    with pytest.raises(RouterankError, match="k must be"):
        RouterankRetriever("bm25", docs, k=0, cache=False)


@pytest.mark.slow
def test_the_retriever_reports_both_routers_and_abstains_on_r0(r3ag_router, starter, sample):
    docs = as_langchain(list(sample.corpus.documents))
    retriever = RouterankRetriever(f"r3ag:{r3ag_router.folder}>>starter@5", docs, k=3, cache=False)

    out = retriever.invoke(r3ag_router.scifact_query)
    route = retriever.last_route
    assert route.retriever == "bm25" and not route.abstained and route.expert == "scifact"
    own = retriever.searcher.pipeline.search([Query("q", r3ag_router.scifact_query)], 3)["q"]
    assert [d.metadata[ID] for d in out] == list(own.doc_ids)  # the pipeline's own ranking, as documents
    assert out[0].metadata["scifact_id"] in sample.relevant[RERANKED]
    assert {d.metadata[ROUTE] for d in out} == {"bm25"} and {d.metadata[EXPERT] for d in out} == {"scifact"}
    assert 0.5 < out[0].metadata["routerank_route_confidence"] <= 1.0

    assert retriever.invoke(r3ag_router.finance_query) == []
    assert retriever.last_route.abstained and retriever.last_route.retriever == "R0"
