from __future__ import annotations

import numpy as np
import pytest

from routerank.data.types import Corpus
from routerank.evaluate import evaluate
from routerank.models import resolve_model
from routerank.pipeline import build
from routerank.retrieve import DenseRetriever


@pytest.fixture(scope="module")
def slice_(scifact):
    queries = scifact.split_queries("test")[:30]
    qrels = scifact.split_qrels("test")
    keep = set(scifact.corpus.ids[:200]) | {d for q in queries for d in qrels[q.id]}
    return Corpus(d for d in scifact.corpus.documents if d.id in keep), queries


@pytest.fixture(scope="module")
def dense(slice_):
    retriever = DenseRetriever(progress=False)
    retriever.index(slice_[0])
    return retriever


def test_packaged_minilm_resolves_to_a_local_folder():
    ref = resolve_model("minilm")
    assert ref.is_local and (ref.path / "modules.json").exists()


@pytest.mark.slow
def test_matches_plain_sentence_transformers_and_faiss(dense, slice_):
    import faiss
    from sentence_transformers import SentenceTransformer

    corpus, queries = slice_
    model = SentenceTransformer(resolve_model("minilm").location, device="cpu")
    docs = model.encode([d.full_text for d in corpus.documents], normalize_embeddings=True)
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(np.asarray(docs, dtype=np.float32))
    scores, ids = index.search(model.encode([q.text for q in queries], normalize_embeddings=True), 10)
    run = dense.search(queries, 10)
    for row, query in enumerate(queries):
        assert run[query.id].doc_ids == tuple(corpus.ids[j] for j in ids[row])
        assert np.allclose(run[query.id].scores, scores[row], atol=1e-4)


@pytest.mark.slow
def test_dense_finds_relevant_docs_on_the_slice(dense, slice_, scifact):
    run = dense.search(slice_[1], 10)
    qrels = scifact.split_qrels("test").subset(q.id for q in slice_[1])
    assert evaluate(run, qrels, "nDCG@10")["nDCG@10"] > 0.6


@pytest.mark.slow
def test_save_load_round_trip_needs_no_reencoding(dense, slice_, tmp_path):
    dense.save(tmp_path / "dense")
    loaded = DenseRetriever.load(tmp_path / "dense", corpus=slice_[0])
    assert np.array_equal(loaded.embeddings, dense.embeddings)
    again, before = loaded.search(slice_[1][:5], 5), dense.search(slice_[1][:5], 5)
    for qid in before:
        assert again[qid].doc_ids == before[qid].doc_ids
        assert again[qid].scores == pytest.approx(before[qid].scores, abs=1e-5)


@pytest.mark.slow
def test_full_scifact_dense_and_hybrid(scifact):
    """Dense MiniLM ≈ 0.645 (published); RRF hybrid at least the better of BM25 and dense."""
    qrels, queries = scifact.split_qrels("test"), scifact.split_queries("test")
    scores = {}
    for spec in ("bm25", "dense", "hybrid"):
        run = build(spec, scifact.corpus).search(queries, 100)
        scores[spec] = evaluate(run, qrels, "nDCG@10")["nDCG@10"]
    assert scores["dense"] == pytest.approx(0.645, abs=0.01)
    assert scores["hybrid"] >= max(scores["bm25"], scores["dense"])
