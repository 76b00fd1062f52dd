from __future__ import annotations

import numpy as np
import pytest

from routerank.data.types import Document
from routerank.rerank.pointwise import PointwiseLLMReranker
from routerank.rerank.qlm import QueryLikelihoodReranker

PAIRS = [
    ("what does aspirin do", "Aspirin reduces pain, fever and the risk of heart attack."),
    ("what does aspirin do", "Cats are small carnivorous mammals."),
    ("statins and cholesterol", "Statins lower LDL cholesterol. " + "More trial details follow here. " * 30),
    ("statins and cholesterol", "Short."),
]


def by_hand(model, tokenizer, reranker, pairs):
    """One unbatched, unpadded forward per pair through the full model and its LM head."""
    import torch

    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    out = []
    for query, doc in pairs:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([reranker.prompt_ids(query, doc)])).logits[0, -1, [yes, no]]
        out.append(torch.softmax(logits.float(), -1)[0].item())
    return np.array(out)


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_batched_scores_equal_unbatched_forward(tiny, prefix_cache):
    reranker = PointwiseLLMReranker.from_model(
        *tiny, max_doc_tokens=48, prefix_cache=prefix_cache, progress=False, token_budget=150
    )
    scores = reranker.score_pairs(PAIRS)
    assert np.allclose(scores, by_hand(*tiny, reranker, PAIRS), atol=1e-4)
    assert reranker.forward_passes >= 3  # the token budget forced several batches


def test_forward_passes_count_the_prefix_pass_and_grow_with_more_documents(tiny):
    def passes(docs: int) -> int:
        reranker = PointwiseLLMReranker.from_model(*tiny, max_doc_tokens=16, max_batch=2, progress=False)
        assert reranker.forward_passes == 0
        reranker.score_pairs([("what does aspirin do", f"document number {i}") for i in range(docs)])
        return reranker.forward_passes

    one, six = passes(1), passes(6)
    assert one >= 1 and six > one
    assert (one, six) == (2, 4)  # one shared prefix pass per query + one per batch of at most 2 documents


def test_prompt_ids_match_whole_prompt_tokenization_and_truncate_only_the_doc(tiny):
    model, tokenizer = tiny
    reranker = PointwiseLLMReranker.from_model(model, tokenizer, max_doc_tokens=8, progress=False)
    query, doc = PAIRS[0]
    whole = tokenizer(reranker.template.render(query, doc, reranker.instruction), add_special_tokens=False)
    long_ids = PointwiseLLMReranker.from_model(model, tokenizer, max_doc_tokens=1000).prompt_ids(query, doc)
    assert long_ids == whole["input_ids"]
    short = reranker.prompt_ids(query, doc)
    assert len(long_ids) - len(short) == len(reranker._ids(" " + doc)) - 8
    assert short[-len(reranker._suffix_ids) :] == reranker._suffix_ids


def test_out_of_memory_batches_are_split_and_retried(tiny, monkeypatch):
    reranker = PointwiseLLMReranker.from_model(*tiny, progress=False)
    real = reranker._forward
    sizes = []

    def flaky(rows, prefix_kv):
        sizes.append(len(rows))
        if len(rows) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(rows, prefix_kv)

    monkeypatch.setattr(reranker, "_forward", flaky)
    scores = reranker.score_pairs(PAIRS[:2])
    assert sizes[0] == 2 and sizes.count(1) == 2
    assert np.allclose(scores, by_hand(*tiny, reranker, PAIRS[:2]), atol=1e-4)


def test_scores_are_cached_on_disk(tiny, tmp_path):
    reranker = PointwiseLLMReranker.from_model(*tiny, progress=False, cache=True, cache_dir=tmp_path)
    first = reranker.score_pairs(PAIRS)
    passes = reranker.forward_passes
    again = PointwiseLLMReranker.from_model(*tiny, progress=False, cache=True, cache_dir=tmp_path)
    assert np.array_equal(again.score_pairs(PAIRS), first) and again.forward_passes == 0
    assert passes > 0 and len(list(tmp_path.glob("*.sqlite"))) == 1


def test_rerank_returns_a_ranking_and_hidden_state_has_model_width(tiny):
    reranker = PointwiseLLMReranker.from_model(*tiny, progress=False)
    docs = [Document("a", PAIRS[0][1]), Document("b", PAIRS[1][1])]
    ranking = reranker.rerank("what does aspirin do", docs)
    assert set(ranking.doc_ids) == {"a", "b"} and ranking.scores[0] >= ranking.scores[1]
    states = reranker.hidden_state(["short", "a somewhat longer text"])
    assert states.shape == (2, tiny[0].config.hidden_size) and states.dtype == np.float32
    assert not np.allclose(states[0], states[1])


def test_int8_quantization_is_opt_in_and_close(tiny):
    plain = PointwiseLLMReranker.from_model(*tiny, progress=False)
    assert plain.quantize is None
    import copy

    quantized = PointwiseLLMReranker.from_model(copy.deepcopy(tiny[0]), tiny[1], progress=False, quantize="int8")
    assert np.allclose(quantized.score_pairs(PAIRS), plain.score_pairs(PAIRS), atol=0.05)


def test_query_likelihood_prefers_the_document_that_contains_the_query(tiny):
    model, tokenizer = tiny
    qlm = QueryLikelihoodReranker.from_model(model, tokenizer, progress=False)
    scores = qlm.score_pairs([("zebra striped zebra", "the zebra striped zebra grazes"), ("a", "b c")])
    assert scores.shape == (2,) and np.all(scores < 0)


@pytest.mark.slow
def test_real_smollm2_parity_and_query_likelihood_separates(smollm2, scifact):
    reranker = PointwiseLLMReranker.from_model(*smollm2, progress=False, max_doc_tokens=128)
    assert np.allclose(reranker.score_pairs(PAIRS), by_hand(*smollm2, reranker, PAIRS), atol=1e-4)
    qrels = scifact.split_qrels("test")
    queries = scifact.split_queries("test")[:6]
    negatives = scifact.corpus.documents[:2]
    qlm = QueryLikelihoodReranker.from_model(*smollm2, progress=False, max_doc_tokens=128)
    pos, neg = [], []
    for query in queries:
        positive = scifact.corpus[next(iter(qrels.relevant(query.id)))]
        scores = qlm.score_pairs([(query.text, d.full_text) for d in [positive, *negatives]])
        pos.append(scores[0])
        neg.extend(scores[1:])
    assert np.mean(pos) > np.mean(neg)
