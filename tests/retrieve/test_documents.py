from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pytest

from routerank.data.documents import DocumentMap, load_documents
from routerank.data.registry import load_dataset
from routerank.data.types import Corpus, Qrels, Query
from routerank.errors import SpecError, UnknownIdError
from routerank.evaluate import evaluate
from routerank.retrieve import DenseRetriever, cached_index
from routerank.retrieve.documents import MERGES, DocumentRetriever
from routerank.retrieve.pooling import AttentionPooling, normalise, train_attention_pooling
from routerank.retrieve.store import index_key
from tests.conftest import shared_dataset

SIZE = 20  # documents in the slice: about 110 passages, a few seconds to encode on two cores


@dataclass(frozen=True)
class Slice:
    documents: DocumentMap
    corpus: Corpus
    queries: list[Query]
    qrels: Qrels


def restricted(documents: DocumentMap, doc_ids) -> DocumentMap:
    parts = {doc: documents.passages(doc) for doc in doc_ids}
    kinds = {p: documents.kinds[p] for ids in parts.values() for p in ids}
    return DocumentMap(parts=MappingProxyType(parts), kinds=MappingProxyType(kinds))


@pytest.fixture(scope="module")
def tatqa():
    return load_dataset(str(shared_dataset("tatqa")))


@pytest.fixture(scope="module")
def slice_(tatqa) -> Slice:
    """The first SIZE documents (by id) that train queries are about, their passages and those queries."""
    full = load_documents(tatqa)
    qrels = full.lift_qrels(tatqa.split_qrels("train"))
    asked = Counter(d for q in qrels for d in qrels[q])
    chosen = sorted(asked)[:SIZE]
    documents = restricted(full, chosen)
    corpus = tatqa.corpus.subset(p for doc in chosen for p in documents.passages(doc))
    queries = [q for q in tatqa.split_queries("train") if q.id in qrels and set(qrels[q.id]) <= set(chosen)]
    return Slice(documents, corpus, queries, qrels.subset(q.id for q in queries))


def built(slice_: Slice, merge: str = "mean", **options) -> DocumentRetriever:
    retriever = DocumentRetriever(slice_.documents, merge=merge, **options)
    retriever.index(slice_.corpus)
    return retriever


@pytest.fixture(scope="module")
def mean(slice_) -> DocumentRetriever:
    return built(slice_, "mean")


def passage_groups(retriever: DocumentRetriever, documents: DocumentMap) -> list[np.ndarray]:
    return [retriever.passage_vectors(documents.passages(doc)) for doc in retriever.document_ids]


def test_mean_max_and_first_are_the_numpy_merges_of_the_passage_vectors(slice_, mean):
    groups = passage_groups(mean, slice_.documents)
    assert all(np.allclose(np.linalg.norm(g, axis=1), 1, atol=1e-5) for g in groups)
    expected = {
        "mean": [normalise(g.mean(axis=0)) for g in groups],
        "max": [normalise(g.max(axis=0)) for g in groups],
        "first": [g[0] for g in groups],
    }
    for merge, vectors in expected.items():
        retriever = mean if merge == "mean" else built(slice_, merge)
        assert retriever.document_ids == sorted(slice_.documents.document_ids)
        assert np.allclose(retriever.document_vectors, np.stack(vectors), atol=1e-6), merge


def test_another_merge_reuses_the_cached_passage_encoding(slice_, mean, monkeypatch):
    calls = []
    monkeypatch.setattr(DenseRetriever, "encode", lambda self, texts, progress=None: calls.append(len(texts)))
    for merge in ("max", "first", "maxp"):
        retriever = built(slice_, merge)
        assert np.array_equal(retriever.passage_vectors(slice_.corpus.ids), mean.passage_vectors(slice_.corpus.ids))
    assert calls == []


def test_attention_pooling_at_its_start_is_mean_pooling(slice_, mean):
    pooling = AttentionPooling.initial(mean.passage_vectors(slice_.corpus.ids[:1]).shape[1], seed=3)
    attention = built(slice_, "attention", pooling=pooling)
    assert np.abs(attention.document_vectors - mean.document_vectors).max() < 1e-5
    group = passage_groups(mean, slice_.documents)[0]
    assert np.allclose(pooling.attention(group), 1 / len(group))


@pytest.mark.slow
def test_maxp_is_the_lifted_passage_search(slice_, mean):
    passages = DenseRetriever(progress=False)
    passages.index(slice_.documents.passage_corpus(slice_.corpus))  # encoded afresh, not from the cache
    assert np.allclose(passages.embeddings, mean.passage_vectors(slice_.corpus.ids), atol=1e-5)
    queries = slice_.queries[:15]
    lifted = slice_.documents.lift_run(passages.search(queries, len(slice_.corpus)), k=10)
    maxp = built(slice_, "maxp").search(queries, 10)
    for query in queries:
        assert maxp[query.id].doc_ids == lifted[query.id].doc_ids
        assert maxp[query.id].scores == pytest.approx(lifted[query.id].scores, abs=1e-5)


def test_concat_encodes_each_document_as_one_text(slice_, mean):
    concat = built(slice_, "concat")
    texts = slice_.documents.document_corpus(slice_.corpus)
    vectors = mean.encoder.encode([texts[doc].full_text for doc in concat.document_ids], progress=False)
    assert np.allclose(concat.document_vectors, vectors, atol=1e-5)
    assert not np.allclose(concat.document_vectors, mean.document_vectors, atol=1e-2)


def test_passage_scores_are_cosines_with_the_stored_vectors(slice_, mean):
    ids = slice_.documents.passages(mean.document_ids[0])
    query = slice_.queries[0].text
    expected = mean.passage_vectors(ids) @ normalise(mean.encoder.encode([query], progress=False))[0]
    assert np.allclose(mean.passage_scores(query, ids), expected, atol=1e-6)
    with pytest.raises(UnknownIdError, match="not in this index"):
        mean.passage_vectors(["p-nowhere"])


def ndcg(retriever: DocumentRetriever, slice_: Slice) -> float:
    return evaluate(retriever.search(slice_.queries, 10), slice_.qrels, "nDCG@10")["nDCG@10"]


def test_training_lowers_the_loss_deterministically(slice_, mean, tmp_path):
    pooling, metrics = train_attention_pooling(
        mean, slice_.documents, slice_.queries, slice_.qrels, epochs=8, seed=0, state_dir=tmp_path / "pooling"
    )
    again, _ = train_attention_pooling(mean, slice_.documents, slice_.queries, slice_.qrels, epochs=8, seed=0)
    assert pooling.digest == again.digest
    assert metrics["best_epoch"] == 8 and len(metrics["train_loss"]) == 9
    assert metrics["train_loss"][-1] < metrics["train_loss"][0] - 0.05
    assert AttentionPooling.load(tmp_path / "pooling").digest == pooling.digest
    assert ndcg(built(slice_, "attention", pooling=pooling), slice_) >= ndcg(mean, slice_)


def test_a_dev_set_keeps_the_epoch_of_lowest_dev_loss(slice_, mean):
    half = len(slice_.queries) // 2
    train, dev = slice_.queries[:half], slice_.queries[half:]
    pooling, metrics = train_attention_pooling(
        mean, slice_.documents, train, slice_.qrels, dev_queries=dev, dev_qrels=slice_.qrels, epochs=4
    )
    assert metrics["best_epoch"] == int(np.argmin(metrics["dev_loss"]))
    assert metrics["dev_queries"] == len(dev) and pooling.digest == metrics["digest"]


def test_the_cache_key_follows_merge_map_table_style_and_pooling(slice_):
    def key(documents=slice_.documents, **options) -> str:
        retriever = DocumentRetriever(documents, **options)
        return index_key(retriever.kind, retriever.config(), slice_.corpus.fingerprint)

    base = key()
    fewer = restricted(slice_.documents, sorted(slice_.documents.document_ids)[1:])
    variants = [key(merge=m) for m in MERGES if m not in ("mean", "attention")]
    variants += [key(documents=fewer), key(table_style="statements"), key(max_length=128)]
    variants += [key(merge="attention", pooling=AttentionPooling.initial(384, seed=s)) for s in (0, 1)]
    assert len({base, *variants}) == len(variants) + 1
    assert key() == base


def test_a_saved_index_loads_back_with_the_same_results(slice_, tmp_path):
    pooling = AttentionPooling.initial(384, seed=1)
    pooling = AttentionPooling(pooling.weight, pooling.bias, np.full(64, 0.5, np.float32))  # not mean pooling
    for merge, options in (("maxp", {}), ("attention", {"pooling": pooling})):
        retriever = built(slice_, merge, **options)
        retriever.save(tmp_path / merge)
        loaded = DocumentRetriever.load(tmp_path / merge, corpus=slice_.corpus)
        assert loaded.config() == retriever.config()
        before, after = retriever.search(slice_.queries[:10], 5), loaded.search(slice_.queries[:10], 5)
        for query in slice_.queries[:10]:
            assert after[query.id].doc_ids == before[query.id].doc_ids
            assert after[query.id].scores == pytest.approx(before[query.id].scores, abs=1e-6)
    cached = cached_index(DocumentRetriever(slice_.documents, merge="first"), slice_.corpus, cache_dir=tmp_path / "c")
    again = cached_index(DocumentRetriever(slice_.documents, merge="first"), slice_.corpus, cache_dir=tmp_path / "c")
    assert again is not cached and np.array_equal(again.document_vectors, cached.document_vectors)


def test_settings_that_cannot_work_are_refused(slice_):
    with pytest.raises(SpecError, match="needs pooling"):
        DocumentRetriever(slice_.documents, merge="attention")
    with pytest.raises(SpecError, match="attention"):
        DocumentRetriever(slice_.documents, merge="mean", pooling=AttentionPooling.initial(8))
    with pytest.raises(SpecError, match="unknown merge"):
        DocumentRetriever(slice_.documents, merge="median")
