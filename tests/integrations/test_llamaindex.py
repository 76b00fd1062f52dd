"""The LlamaIndex components with LlamaIndex's real classes: the reranker as a node postprocessor (alone, and in a
query engine over a vector index), the retriever over pipeline specs."""

from __future__ import annotations

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import Document, MetadataMode, NodeWithScore, QueryBundle, TextNode

from routerank.api import Reranker
from routerank.data.types import Corpus, Query
from routerank.data.types import Document as RouterankDocument
from routerank.errors import RouterankError, SpecError
from routerank.integrations.common import EXPERT, EXPERT_CONFIDENCE, ID, RANK, ROUTE, SCORE
from routerank.integrations.llamaindex import RouterankRerank, RouterankRetriever
from routerank.pipeline import build
from tests.integrations.conftest import RERANKED


def as_nodes(documents: list[RouterankDocument]) -> list[TextNode]:
    return [TextNode(id_=d.id, text=d.full_text, metadata={"source": "scifact"}) for d in documents]


@pytest.mark.slow
def test_the_postprocessor_orders_like_routerank_and_scores_in_0_1(starter, expected, sample):
    nodes = [NodeWithScore(node=node, score=10.0 - i) for i, node in enumerate(as_nodes(expected.documents))]
    out = RouterankRerank(starter, top_n=3).postprocess_nodes(nodes, query_str=expected.query.text)

    assert [n.node.node_id for n in out] == [expected.documents[i].id for i in expected.ranked.indices[:3]]
    assert out[0].node.node_id in sample.relevant[RERANKED] and nodes[1].node.node_id == out[0].node.node_id
    for rank, (node, result) in enumerate(zip(out, expected.ranked, strict=False), start=1):
        assert node.score == pytest.approx(expected.relevance[result.index], abs=1e-5) and 0 <= node.score <= 1
        metadata = node.node.metadata
        assert metadata[SCORE] == pytest.approx(result.score, abs=1e-4) and metadata[RANK] == rank
        assert metadata[EXPERT] == expected.decision.choice == "scifact"
        assert metadata[EXPERT_CONFIDENCE] == pytest.approx(expected.decision.confidence, abs=1e-5)
        llm_text = node.node.get_content(metadata_mode=MetadataMode.LLM)
        assert "source: scifact" in llm_text and "routerank" not in llm_text  # the scores stay out of the prompt
    assert nodes[1].score == 9.0 and nodes[1].node.metadata == {"source": "scifact"}  # the caller's nodes unchanged


@pytest.mark.slow
def test_the_postprocessor_reranks_a_vector_index_in_a_query_engine(starter, expected, sample):
    index = VectorStoreIndex(as_nodes(expected.documents), embed_model=MockEmbedding(embed_dim=8))
    rerank = RouterankRerank(starter, top_n=2)
    engine = RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=6), llm=MockLLM(), node_postprocessors=[rerank]
    )
    response = engine.query(expected.query.text)  # the mock embeddings tie: the order is the reranker's alone
    assert [n.node.node_id for n in response.source_nodes] == [
        expected.documents[i].id for i in expected.ranked.indices[:2]
    ]
    assert response.source_nodes[0].node.metadata[EXPERT] == "scifact" and rerank.last_route.expert == "scifact"


@pytest.mark.slow
def test_the_postprocessor_takes_empty_and_short_lists(starter):
    rerank = RouterankRerank(starter, top_n=10)
    assert rerank.postprocess_nodes([], query_str="anything") == []
    nodes = [
        NodeWithScore(node=TextNode(text="Statins lower cholesterol.")),
        NodeWithScore(node=TextNode(text="Aspirin.")),
    ]
    out = rerank.postprocess_nodes(nodes, QueryBundle("does aspirin prevent heart attacks"))
    assert [n.node.get_content() for n in out] == ["Aspirin.", "Statins lower cholesterol."]


def test_the_postprocessor_refuses_bad_input_before_scoring():
    unused = Reranker.from_backend(object(), "unused")
    rerank = RouterankRerank(unused)
    assert rerank.model == "unused" and rerank.class_name() == "RouterankRerank"
    with pytest.raises(RouterankError, match="needs the query"):
        rerank.postprocess_nodes([NodeWithScore(node=TextNode(text="a"))])
    with pytest.raises(RouterankError, match="node 0 is a TextNode, not a llama_index NodeWithScore"):
        rerank.postprocess_nodes([TextNode(text="a")], query_str="q")
    with pytest.raises(RouterankError, match="top_n must be"):
        RouterankRerank("starter", top_n=-1)
    with pytest.raises(SpecError, match="unknown reranker"):
        RouterankRerank("nonsense")


def test_the_retriever_returns_routeranks_bm25_ranking_as_the_callers_nodes(sample):
    nodes = as_nodes(list(sample.corpus.documents))
    nodes[0] = Document(id_=nodes[0].node_id, text=nodes[0].text)  # a Document is a node too
    query = sample.queries["5"].text
    retriever = RouterankRetriever("bm25", nodes, similarity_top_k=3, cache=False)
    out = retriever.retrieve(query)

    own = build("bm25", Corpus(RouterankDocument(n.node_id, n.get_content()) for n in nodes), cache=False)
    ranking = own.search([Query("q", query)], 3)["q"]
    assert [n.node.node_id for n in out] == [n.node.metadata[ID] for n in out] == list(ranking.doc_ids)
    assert [n.score for n in out] == pytest.approx(list(ranking.scores))
    assert [n.node.metadata[RANK] for n in out] == [1, 2, 3] and out[0].node.node_id in sample.relevant["5"]
    assert all(ID not in n.metadata for n in nodes)  # copies: the caller's nodes are unchanged
    assert retriever.last_route.retriever is None


def test_the_retriever_searches_a_dataset_and_plain_strings(scifact, sample):
    out = RouterankRetriever("bm25", scifact, similarity_top_k=2, cache=False).retrieve(sample.queries["49"].text)
    node = out[0].node
    assert node.node_id in sample.relevant["49"] and node.metadata["title"] == scifact.corpus[node.node_id].title
    assert node.get_content(metadata_mode=MetadataMode.LLM) == scifact.corpus[node.node_id].full_text  # title once
    texts = ["Statins lower cholesterol.", "Aspirin prevents heart attacks.", "Paris is in France."]
    out = RouterankRetriever("bm25", texts, similarity_top_k=2, cache=False).retrieve("aspirin")
    assert [n.node.get_content() for n in out] == [texts[1]] and out[0].node.node_id == "1"


def test_the_retriever_refuses_bad_input(sample):
    nodes = as_nodes(list(sample.corpus.documents))
    with pytest.raises(SpecError, match="unknown retriever"):
        RouterankRetriever("bm26", nodes)
    with pytest.raises(RouterankError, match="document 1 is a dict, not a llama_index document or a string"):
        RouterankRetriever("bm25", [nodes[0], {"text": "x"}], cache=False)
    with pytest.raises(RouterankError, match="similarity_top_k must be"):
        RouterankRetriever("bm25", nodes, similarity_top_k=0, cache=False)


@pytest.mark.slow
def test_the_retriever_routes_with_r3ag_and_abstains_on_r0(r3ag_router, sample):
    retriever = RouterankRetriever(f"r3ag:{r3ag_router.folder}", as_nodes(list(sample.corpus.documents)), cache=False)
    out = retriever.retrieve(r3ag_router.scifact_query)
    assert len(out) == 2 and out[0].node.node_id in sample.relevant[RERANKED]
    assert {n.node.metadata[ROUTE] for n in out} == {"bm25"} and retriever.last_route.retriever == "bm25"
    assert retriever.retrieve(r3ag_router.finance_query) == []
    assert retriever.last_route.abstained and retriever.last_route.retriever == "R0"


@pytest.mark.slow
def test_the_retriever_reports_the_expert_of_an_interpolated_rerank_stage(starter, sample):
    nodes = as_nodes(list(sample.corpus.documents))
    retriever = RouterankRetriever("bm25>>starter@5~auto", nodes, similarity_top_k=3, cache=False)
    query = sample.queries[RERANKED].text
    out = retriever.retrieve(query)
    own = retriever.searcher.pipeline.search([Query("q", query)], 3)["q"]
    assert [n.node.node_id for n in out] == list(own.doc_ids) and [n.score for n in out] == pytest.approx(own.scores)
    [decision] = starter.route([query])
    assert {n.node.metadata[EXPERT] for n in out} == {decision.choice} and retriever.last_route.expert == "scifact"
    assert out[0].node.node_id in sample.relevant[RERANKED]
