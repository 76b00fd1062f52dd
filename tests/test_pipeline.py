from __future__ import annotations

from types import MappingProxyType

import pytest

from routerank.api import Reranker
from routerank.data.documents import DocumentMap
from routerank.data.types import Corpus, Document
from routerank.errors import SpecError
from routerank.pipeline import build, make_retriever, parse
from routerank.retrieve import BM25Retriever, FusionRetriever, NullRetriever


def test_specs_parse():
    assert parse("hybrid") == parse("rrf(bm25,dense)")
    nested = parse("weighted(0.3*bm25:k1=0.9,0.7*rrf(dense:st:/m,null))")
    assert nested.weights == (0.3, 0.7)
    assert nested.children[0].arg == "k1=0.9" and nested.children[1].children[0].arg == "st:/m"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "bm26",
        "rrf(bm25,dense",
        "rrf(bm25))",
        "mean(bm25,dense)",
        "weighted(0.3*bm25,dense)",
        "bm25:k1=abc",
        "bm25:q=1",
        "weighted(x*bm25,0.5*null)",
    ],
)
def test_bad_specs_raise_spec_errors(bad):
    with pytest.raises(SpecError):
        make_retriever(bad)


def test_make_retriever_configures_leaves():
    retriever = make_retriever("rrf(bm25:k1=0.9,b=0.4,null)")
    assert isinstance(retriever, FusionRetriever)
    bm25, null = retriever.retrievers
    assert isinstance(bm25, BM25Retriever) and (bm25.k1, bm25.b) == (0.9, 0.4) and isinstance(null, NullRetriever)


def test_build_uses_the_cache(tiny_beir, tmp_path):
    from routerank.data.beir import load_beir

    corpus = load_beir(tiny_beir).corpus
    first = build("bm25", corpus, cache_dir=tmp_path)
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("bm25-")]) == 1
    second = build("bm25", corpus, cache_dir=tmp_path)
    assert second.search(["aspirin"], 3).as_dict() == first.search(["aspirin"], 3).as_dict()


def _paged_corpus():
    corpus = Corpus(
        [
            Document("t1", "Segment | 2019\nCloud revenue | 12"),
            Document("p1", "Cloud revenue rose with new customers."),
            Document("p2", "The auditor signed the report."),
            Document("t2", "Item | 2019\nLeases | 3"),
            Document("p3", "Lease payments fell after the move."),
        ]
    )
    documents = DocumentMap(
        parts=MappingProxyType({"d1": ("t1", "p1", "p2"), "d2": ("t2", "p3")}),
        kinds=MappingProxyType({"t1": "table", "p1": "text", "p2": "text", "t2": "table", "p3": "text"}),
    )
    return corpus, documents


def test_docs_spec_returns_the_passages_of_the_top_documents_and_reranks_them():
    corpus, documents = _paged_corpus()
    coarse = build("docs:merge=bm25,depth=1", corpus, documents=documents, cache=False)
    run = coarse.search(["why did lease payments fall"], k=10)
    assert run["q0"].doc_ids == ("t2", "p3")  # the lease page only, in document order
    assert coarse.last_scored == {"q0": 2}
    assert coarse.document_of("p3") == "d2"


@pytest.mark.slow
def test_a_rerank_stage_after_docs_is_the_fine_stage():
    corpus, documents = _paged_corpus()
    reranked = build("docs:merge=bm25,depth=1>>ce:starter@10", corpus, documents=documents, cache=False)
    query = "why did lease payments fall"
    ranking = reranked.search([query], k=10)["q0"]
    direct = Reranker("ce:starter").score(query, [corpus["t2"].text, corpus["p3"].text])
    expected = ("t2", "p3") if direct[0] >= direct[1] else ("p3", "t2")
    assert ranking.doc_ids == expected  # only the lease page's passages, in the cross-encoder's order
    assert sorted(ranking.scores, reverse=True) == pytest.approx(sorted(direct, reverse=True), abs=1e-4)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("docs:merge=mean", "needs the documents"),
        ("docs:merge=bm25,size=3", "bad docs option"),
        ("docs:depth=x", "depth"),
    ],
)
def test_bad_docs_specs_are_one_clear_error(spec, message):
    corpus, documents = _paged_corpus()
    with pytest.raises(SpecError, match=message):
        build(spec, corpus, documents=None if "needs" in message else documents, cache=False)
