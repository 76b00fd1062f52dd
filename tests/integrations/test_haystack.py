"""The Haystack components in real `haystack.Pipeline`s: the ranker behind Haystack's in-memory BM25 retriever and
behind the routerank retriever, the retriever over pipeline specs (R3AG included), and serialisation."""

from __future__ import annotations

import inspect

import pytest
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore

from routerank.api import Reranker
from routerank.data.types import Corpus, Query
from routerank.data.types import Document as RouterankDocument
from routerank.errors import RouterankError, SpecError
from routerank.integrations.common import EXPERT, EXPERT_CONFIDENCE, ID, RANK, ROUTE, SCORE
from routerank.integrations.haystack import RouterankRanker, RouterankRetriever
from routerank.pipeline import build
from tests.integrations.conftest import RERANKED


def as_haystack(documents: list[RouterankDocument]) -> list[Document]:
    return [Document(id=d.id, content=d.full_text, meta={"source": "scifact"}) for d in documents]


@pytest.mark.slow
def test_the_ranker_reranks_haystacks_bm25_retriever_in_a_pipeline(starter, expected, sample):
    store = InMemoryDocumentStore()
    store.write_documents(as_haystack(expected.documents))
    pipe = Pipeline()
    pipe.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=6))
    pipe.add_component("ranker", RouterankRanker(starter, top_k=3))
    pipe.connect("retriever.documents", "ranker.documents")
    query = expected.query.text
    out = pipe.run({"retriever": {"query": query}, "ranker": {"query": query}})["ranker"]["documents"]

    assert [d.id for d in out] == [expected.documents[i].id for i in expected.ranked.indices[:3]]
    assert out[0].id in sample.relevant[RERANKED]
    for rank, (doc, result) in enumerate(zip(out, expected.ranked, strict=False), start=1):
        assert doc.content == result.text and doc.meta["source"] == "scifact"
        assert doc.score == pytest.approx(expected.relevance[result.index], abs=1e-5) and 0 <= doc.score <= 1
        assert doc.meta[SCORE] == pytest.approx(result.score, abs=1e-4) and doc.meta[RANK] == rank
        assert doc.meta[EXPERT] == expected.decision.choice == "scifact"
        assert doc.meta[EXPERT_CONFIDENCE] == pytest.approx(expected.decision.confidence, abs=1e-5)
    assert all(set(d.meta) == {"source"} for d in store.filter_documents())  # the stored documents are unchanged


@pytest.mark.slow
def test_the_ranker_takes_empty_and_short_lists_and_a_per_call_top_k(starter):
    ranker = RouterankRanker(starter, top_k=10)
    assert ranker.run(query="anything", documents=[]) == {"documents": []}
    docs = [Document(content="Statins lower cholesterol."), Document(content="Aspirin prevents heart attacks.")]
    out = ranker.run(query="does aspirin prevent heart attacks", documents=docs)["documents"]
    assert [d.content for d in out] == [docs[1].content, docs[0].content] and docs[1].score is None
    assert len(ranker.run(query="aspirin", documents=docs, top_k=1)["documents"]) == 1


@pytest.mark.slow
def test_the_generalist_ranks_without_routing(sample):
    ranker = RouterankRanker("starter:generalist", top_k=2)
    assert ranker._reranker is None  # the model loads in warm_up, as Haystack rankers do
    ranker.warm_up()
    query, docs = sample.queries[RERANKED].text, as_haystack(sample.candidates[RERANKED])
    out = ranker.run(query=query, documents=docs)["documents"]
    ranked = ranker.reranker.rank(query, [d.content for d in docs])
    assert [d.id for d in out] == [docs[i].id for i in ranked.indices[:2]] and out[0].id in sample.relevant[RERANKED]
    assert EXPERT not in out[0].meta and ranker.last_route.expert is None and not ranker.reranker.has_router


def test_the_ranker_serialises_with_its_pipeline_without_loading_a_model():
    pipe = Pipeline()
    pipe.add_component("ranker", RouterankRanker("starter", top_k=4, reranker_options={"max_length": 128}))
    trusted = {"allowed_modules": ["routerank.integrations.haystack"]}  # Haystack 3 loads allow-listed modules only
    if "allowed_modules" not in inspect.signature(Pipeline.loads).parameters:
        trusted = {}  # Haystack 2 has no allowlist
    loaded = Pipeline.loads(pipe.dumps(), **trusted).get_component("ranker")
    assert isinstance(loaded, RouterankRanker) and loaded._reranker is None
    assert (loaded.model, loaded.top_k, loaded.reranker_options) == ("starter", 4, {"max_length": 128})


def test_the_ranker_refuses_bad_input_before_scoring():
    unused = RouterankRanker(Reranker.from_backend(object(), "unused"))
    with pytest.raises(RouterankError, match="document 1 is a str, not a haystack Document"):
        unused.run(query="q", documents=[Document(content="a"), "b"])
    with pytest.raises(RouterankError, match="cannot be serialised"):
        unused.to_dict()
    with pytest.raises(RouterankError, match="top_k must be"):
        RouterankRanker("starter", top_k=0)
    with pytest.raises(RouterankError, match="reranker_options apply"):
        RouterankRanker(unused.reranker, reranker_options={"device": "cpu"})
    with pytest.raises(SpecError, match="unknown reranker"):
        RouterankRanker("nonsense").warm_up()


def test_the_retriever_returns_routeranks_bm25_ranking_as_the_callers_documents(sample):
    docs = as_haystack(list(sample.corpus.documents))
    query = sample.queries["5"].text
    retriever = RouterankRetriever("bm25", docs, top_k=3, cache=False)
    out = retriever.run(query=query)["documents"]

    own = build("bm25", Corpus(RouterankDocument(d.id, d.content) for d in docs), cache=False)
    ranking = own.search([Query("q", query)], 3)["q"]
    assert [d.id for d in out] == [d.meta[ID] for d in out] == list(ranking.doc_ids)
    assert [d.score for d in out] == pytest.approx(list(ranking.scores)) and out[0].id in sample.relevant["5"]
    assert [d.meta[RANK] for d in out] == [1, 2, 3] and all(d.meta["source"] == "scifact" for d in out)
    assert all(d.score is None and set(d.meta) == {"source"} for d in docs)  # the caller's documents are unchanged
    assert len(retriever.run(query=query, top_k=1)["documents"]) == 1


def test_the_retriever_searches_a_dataset(scifact, sample):
    out = RouterankRetriever("bm25", scifact, top_k=2, cache=False).run(query=sample.queries["49"].text)["documents"]
    assert out[0].id in sample.relevant["49"] and out[0].meta["title"] == scifact.corpus[out[0].id].title


def test_the_retriever_refuses_bad_input(sample):
    docs = as_haystack(list(sample.corpus.documents))
    with pytest.raises(SpecError, match="unknown retriever"):
        RouterankRetriever("bm26", docs)
    with pytest.raises(RouterankError, match="document 1 is a NoneType, not a haystack document or a string"):
        RouterankRetriever("bm25", [docs[0], None], cache=False)
    with pytest.raises(RouterankError, match="top_k must be"):
        RouterankRetriever("bm25", docs, top_k=-2, cache=False)


@pytest.mark.slow
def test_the_retriever_feeds_the_ranker_in_a_pipeline(starter, sample):
    pipe = Pipeline()
    pipe.add_component("retriever", RouterankRetriever("bm25", as_haystack(list(sample.corpus.documents)), top_k=6))
    pipe.add_component("ranker", RouterankRanker(starter, top_k=2))
    pipe.connect("retriever", "ranker")
    query = sample.queries[RERANKED].text
    out = pipe.run({"retriever": {"query": query}, "ranker": {"query": query}})["ranker"]["documents"]
    assert len(out) == 2 and out[0].id in sample.relevant[RERANKED] and out[0].meta[ID] == out[0].id
    assert out[0].meta[EXPERT] == "scifact" and out[0].meta[RANK] == 1  # the ranker's rank replaces the retriever's


@pytest.mark.slow
def test_the_r3ag_retriever_abstains_in_a_pipeline(r3ag_router, sample):
    pipe = Pipeline()
    retriever = RouterankRetriever(f"r3ag:{r3ag_router.folder}", as_haystack(list(sample.corpus.documents)), top_k=3)
    pipe.add_component("retriever", retriever)
    out = pipe.run({"retriever": {"query": r3ag_router.scifact_query}})["retriever"]["documents"]
    assert len(out) == 3 and {d.meta[ROUTE] for d in out} == {"bm25"} and out[0].id in sample.relevant[RERANKED]
    assert pipe.run({"retriever": {"query": r3ag_router.finance_query}})["retriever"]["documents"] == []
    route = pipe.get_component("retriever").last_route
    assert route.abstained and route.retriever == "R0" and route.retrieval.probabilities["R0"] > 0.5
