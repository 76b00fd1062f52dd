"""RM3 against plain BM25 on SciFact: it reads exact term distributions from the BM25 index, equals BM25 when the
feedback weight is 0, and retrieves differently without losing recall."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from routerank.errors import SpecError
from routerank.evaluate import evaluate
from routerank.pipeline import build, make_retriever
from routerank.retrieve import BM25Retriever
from routerank.retrieve.rm3 import RM3Retriever


@pytest.fixture(scope="module")
def bm25(scifact):
    retriever = BM25Retriever()
    retriever.index(scifact.corpus)
    return retriever


@pytest.fixture(scope="module")
def queries(scifact):
    return scifact.split_queries("test")[:50]


def test_term_distributions_come_back_exactly_from_the_bm25_index(bm25, scifact):
    rm3 = RM3Retriever(bm25, max_df=1.0)
    for doc in scifact.corpus.documents[:20]:
        [terms] = bm25.terms([doc.full_text])
        counts = Counter(terms)
        expected = {t: c / len(terms) for t, c in counts.items()}
        recovered = rm3.doc_terms(doc.id)
        assert set(recovered) == {t for t in expected if len(t) <= 20}  # longer terms never expand a query
        assert max(abs(recovered[t] - expected[t]) for t in recovered) < 1e-4


def test_without_feedback_rm3_ranks_as_bm25(bm25, queries):
    plain = bm25.search(queries, 10)
    same = RM3Retriever(bm25, original_weight=1.0).search(queries, 10)
    assert sum(plain[q.id].doc_ids == same[q.id].doc_ids for q in queries) >= 48  # float ties aside


def test_rm3_retrieves_differently_and_keeps_recall(bm25, scifact, queries):
    rm3 = RM3Retriever(bm25)
    plain, expanded = bm25.search(queries, 100), rm3.search(queries, 100)
    qrels = scifact.split_qrels("test").subset([q.id for q in queries])
    base, fed = evaluate(plain, qrels, "R@100 nDCG@10"), evaluate(expanded, qrels, "R@100 nDCG@10")
    # measured: BM25 R@100 0.960, nDCG@10 0.808; RM3 0.956, 0.740 (on all 300: 0.913/0.686 vs 0.902/0.653)
    assert fed["R@100"] >= base["R@100"] - 0.02
    assert fed["nDCG@10"] >= base["nDCG@10"] - 0.10  # SciFact's claims drift with feedback, as reported for RM3
    changed = sum(plain[q.id].doc_ids[:10] != expanded[q.id].doc_ids[:10] for q in queries)
    assert changed >= 25
    weights = rm3.expand(queries[0])
    assert sum(weights.values()) == pytest.approx(1.0)
    [original] = bm25.terms([queries[0].text])
    assert set(original) < set(weights) and len(weights) <= len(set(original)) + 10


def test_rm3_helps_where_feedback_is_known_to_help(nfcorpus):
    """NFCorpus's short queries gain from expansion: measured R@100 0.247 -> 0.323, nDCG@10 0.321 -> 0.349."""
    bm25 = BM25Retriever()
    bm25.index(nfcorpus.corpus)
    queries, qrels = nfcorpus.split_queries("test"), nfcorpus.split_qrels("test")
    base = evaluate(bm25.search(queries, 100), qrels, "nDCG@10 R@100")
    fed = evaluate(RM3Retriever(bm25).search(queries, 100), qrels, "nDCG@10 R@100")
    assert fed["R@100"] >= base["R@100"] + 0.04
    assert fed["nDCG@10"] >= base["nDCG@10"] + 0.01


def test_rm3_specs_and_errors():
    rm3 = make_retriever("rm3:fb_docs=5,k1=0.9,original_weight=0.3")
    assert isinstance(rm3, RM3Retriever) and (rm3.fb_docs, rm3.fb_terms, rm3.original_weight) == (5, 10, 0.3)
    assert rm3.bm25.k1 == 0.9 and make_retriever("bm25+rm3").config() == RM3Retriever().config()
    for bad in ("rm3:fb_docs=x", "rm3:original_weight=2", "rm3:method=bm25l", "rm3:q=1", "rm3:fb_terms=0"):
        with pytest.raises(SpecError):
            make_retriever(bad)
    assert [c.name for c in make_retriever("rrf(rm3:fb_docs=3,dense)").retrievers] == ["bm25+rm3", "dense"]


def test_rm3_shares_the_bm25_index_cache(tiny_beir, tmp_path):
    from routerank.data.beir import load_beir

    corpus = load_beir(tiny_beir).corpus
    rm3 = build("rm3", corpus, cache_dir=tmp_path / "cache")
    build("bm25", corpus, cache_dir=tmp_path / "cache")
    assert [p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()] == ["bm25"]
    run = rm3.search(["aspirin heart"], 2)
    assert run["q0"].doc_ids[0] == "d1" and np.all(np.diff(run["q0"].scores) <= 0)
