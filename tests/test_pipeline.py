from __future__ import annotations

import pytest

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
