from __future__ import annotations

import random
from types import MappingProxyType

import numpy as np
import pytest

from routerank.data.types import Corpus, Document, Query, Ranking, Run
from routerank.errors import RouterankError, SpecError
from routerank.rerank import registry
from routerank.rerank.icr import ICRReranker, doc_mass, eager_attention, layer_range
from routerank.rerank.templates import ICR_CALIBRATION_QUERY, ICR_TEMPLATE

TOPICS = [
    "aspirin and heart attacks",
    "statins lower cholesterol",
    "vitamin d and bone density",
    "insulin resistance in obesity",
    "antibiotics and gut bacteria",
]


def make_docs(n: int) -> list[Document]:
    return [
        Document(f"d{i}", f"Study {i} reports on {TOPICS[i % len(TOPICS)]} in a cohort of adults.") for i in range(n)
    ]


class PassCounter:
    """Counts calls into the decoder itself, independently of the reranker's own bookkeeping."""

    def __init__(self, model):
        self.calls = 0
        self._handle = model.base_model.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.calls += 1

    def close(self):
        self._handle.remove()


def by_hand(model, reranker: ICRReranker, query: str, texts: list[str], exclude_sink: bool = True) -> np.ndarray:
    """Whole prompt in one eager forward, then the definition read off with plain loops: [layers, heads, docs]."""
    import torch

    prefix, spans = reranker.prefix_ids(texts)
    query_ids = reranker.query_ids(query)
    ids = torch.tensor([prefix + query_ids])
    with torch.no_grad(), eager_attention(model):
        attentions = model(input_ids=ids, output_attentions=True).attentions
    out = np.zeros((len(attentions), attentions[0].shape[1], len(texts)))
    for layer, weights in enumerate(attentions):
        w = weights[0].double().numpy()
        for head in range(w.shape[0]):
            for row in range(len(prefix), len(prefix) + len(query_ids)):
                attn = w[head, row]
                total = attn[1:].sum() if exclude_sink else 1.0
                for d, (start, end) in enumerate(spans):
                    out[layer, head, d] += attn[start:end].sum() / total / len(query_ids)
    return out


def test_prompt_template_exact_text():
    assert ICR_TEMPLATE.render("does aspirin help", ["Aspirin thins blood.", "Cats purr."]) == (
        "<|im_start|>user\nHere are some passages:\n"
        "\n[1] Aspirin thins blood."
        "\n[2] Cats purr."
        "\n\nFind the information relevant to this query in the passages above.\nQuery: does aspirin help"
    )


def test_prompt_ids_match_whole_prompt_and_spans_cover_each_document(tiny):
    model, tokenizer = tiny
    reranker = ICRReranker.from_model(model, tokenizer, max_doc_tokens=1000)
    texts = [d.text for d in make_docs(3)]
    prefix, spans = reranker.prefix_ids(texts)
    whole = tokenizer(ICR_TEMPLATE.render("what lowers cholesterol", texts), add_special_tokens=False)["input_ids"]
    assert prefix + reranker.query_ids("what lowers cholesterol") == whole
    for (start, end), text in zip(spans, texts, strict=True):
        assert tokenizer.decode(prefix[start:end]) == " " + text
    short = ICRReranker.from_model(model, tokenizer, max_doc_tokens=4)
    assert all(end - start == 4 for start, end in short.prefix_ids(texts)[1])


@pytest.mark.parametrize("n", [10, 20, 50])
def test_exactly_two_forward_passes_for_any_n(tiny, n):
    reranker = ICRReranker.from_model(*tiny)
    counter = PassCounter(tiny[0])
    try:
        ranking = reranker.rerank("statins and cholesterol", make_docs(n))
    finally:
        counter.close()
    assert counter.calls == 2 and reranker.forward_passes == 2
    assert reranker.stats.chunks == 1 and reranker.stats.extra_passes == 0
    assert sorted(ranking.doc_ids) == sorted(d.id for d in make_docs(n))


def test_prompt_over_budget_is_chunked_and_extra_passes_are_reported(tiny):
    docs = make_docs(12)
    reranker = ICRReranker.from_model(*tiny, max_prompt_tokens=120)
    counter = PassCounter(tiny[0])
    try:
        ranking = reranker.rerank("statins and cholesterol", docs)
    finally:
        counter.close()
    groups = reranker.chunks(len(reranker.query_ids("statins and cholesterol")), [d.text for d in docs])
    assert len(groups) > 1 and [i for g in groups for i in g] == list(range(12))
    for group in groups:
        prefix, _ = reranker.prefix_ids([docs[i].text for i in group])
        assert len(prefix) + len(reranker.query_ids("statins and cholesterol")) <= 120
    assert reranker.stats.chunks == len(groups) and counter.calls == reranker.forward_passes == 2 * len(groups)
    assert reranker.stats.extra_passes == 2 * len(groups) - 2
    assert len(ranking) == 12
    with pytest.raises(RouterankError, match="over the budget"):
        ICRReranker.from_model(*tiny, max_prompt_tokens=40).rerank("statins and cholesterol", docs)


@pytest.mark.parametrize("exclude_sink", [True, False])
def test_cached_two_pass_scores_equal_the_whole_prompt_definition(tiny, exclude_sink):
    model, _ = tiny
    reranker = ICRReranker.from_model(*tiny, exclude_sink=exclude_sink)
    texts = [d.text for d in make_docs(6)]
    attention = reranker.attention("insulin resistance", texts)
    assert np.allclose(attention.query, by_hand(model, reranker, "insulin resistance", texts, exclude_sink), atol=1e-5)
    assert np.allclose(
        attention.calibration, by_hand(model, reranker, ICR_CALIBRATION_QUERY, texts, exclude_sink), atol=1e-5
    )


def test_attention_sink_is_excluded_and_renormalised_away():
    import torch

    rng = np.random.default_rng(0)
    rest = torch.tensor(rng.dirichlet(np.ones(11), size=(1, 2, 3)), dtype=torch.float32)  # [batch, heads, q, keys-1]
    starts, ends, rows = [1, 4, 8], [4, 8, 12], [3]

    def with_sink(mass: float):
        return torch.cat([torch.full((1, 2, 3, 1), mass), rest * (1 - mass)], dim=-1)

    light, heavy = with_sink(0.05), with_sink(0.95)
    assert torch.allclose(doc_mass(light, starts, ends, rows), doc_mass(heavy, starts, ends, rows), atol=1e-5)
    expected = torch.stack([rest[..., s - 1 : e - 1].sum(-1) for s, e in zip(starts, ends, strict=True)], -1).mean(2)
    assert torch.allclose(doc_mass(heavy, starts, ends, rows), expected, atol=1e-5)
    kept = doc_mass(heavy, starts, ends, rows, exclude_sink=False)
    assert torch.allclose(kept, expected * 0.05, atol=1e-5)  # without exclusion the sink drowns the signal
    with pytest.raises(RouterankError, match="sink"):
        doc_mass(heavy, [0, 4], [4, 8], rows)


def test_padded_query_rows_average_only_their_own_tokens():
    import torch

    weights = torch.zeros((2, 1, 3, 6))
    weights[:, :, :, 0] = 0.5
    weights[0, :, :, 1] = 0.5  # row 0: all three positions look at doc 0
    weights[1, :, 0, 3] = 0.5  # row 1: one real position looks at doc 1, padding looks at doc 0
    weights[1, :, 1:, 1] = 0.5
    mass = doc_mass(weights, [1, 3], [3, 6], [3, 1])
    assert torch.allclose(mass[:, 0], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_calibration_subtracts_the_content_free_query(tiny):
    texts = [d.text for d in make_docs(8)]
    calibrated = ICRReranker.from_model(*tiny).attention("vitamin d", texts)
    raw = ICRReranker.from_model(*tiny, calibrate="false")
    assert raw.calibrate is False
    plain = raw.score("vitamin d", texts)
    scores = ICRReranker.from_model(*tiny).score("vitamin d", texts)
    assert not np.allclose(plain, scores)
    assert np.allclose(scores, plain - calibrated.calibration.sum(axis=(0, 1)), atol=1e-6)
    assert np.all(calibrated.calibration > 0)


def test_layer_option_selects_a_range_of_layers(tiny):
    assert layer_range("all", 30) == range(30)
    assert layer_range("mid", 30) == range(7, 23)
    assert layer_range("8:22", 30) == range(8, 22)
    assert layer_range(":10", 30) == range(10)
    assert layer_range(5, 30) == range(5, 6)
    for bad in ("top", "3:40", "a:b", "5:5"):
        with pytest.raises(SpecError):
            layer_range(bad, 30)
    texts = [d.text for d in make_docs(5)]
    attention = ICRReranker.from_model(*tiny).attention("aspirin", texts)
    last = ICRReranker.from_model(*tiny, layers="1:2").score("aspirin", texts)
    assert np.allclose(last, attention.query[1].sum(0) - attention.calibration[1].sum(0), atol=1e-6)


def test_registry_names_icr_and_rerank_run_keeps_the_tail(tiny):
    assert registry.reranker_class("icr") is ICRReranker
    docs = make_docs(6)
    corpus = Corpus(docs)
    run = Run(MappingProxyType({"q1": Ranking(tuple(d.id for d in docs), tuple(float(-i) for i in range(6)))}))
    reranker = ICRReranker.from_model(*tiny)
    out = reranker.rerank_run([Query("q1", "statins")], run, corpus, depth=4)
    assert set(out["q1"].doc_ids[:4]) == {"d0", "d1", "d2", "d3"} and out["q1"].doc_ids[4:] == ("d4", "d5")
    assert reranker.forward_passes == 2
    assert ICRReranker.from_model(*tiny).rerank("x", []) == Ranking()


def test_spec_options_inline_reach_the_reranker(tiny, tmp_path):
    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    reranker = registry.make_reranker(f"icr:hf:{tmp_path / 'tiny'},layers=1,calibrate=false")
    assert reranker.model_spec == f"hf:{tmp_path / 'tiny'}"
    assert reranker.layers == range(1, 2) and reranker.calibrate is False


@pytest.mark.slow
def test_real_smollm2_ranks_relevant_scifact_docs_above_chance(smollm2, scifact):
    """Six seeded SciFact test queries, BM25 top 10 shuffled (so retriever order cannot leak through position)."""
    from routerank.pipeline import build

    qrels = scifact.split_qrels("test")
    queries = random.Random(7).sample(scifact.split_queries("test"), 40)
    run = build("bm25", scifact.corpus).search(queries, 10)
    picked = [q for q in queries if qrels.relevant(q.id) & set(run[q.id].doc_ids)][:6]
    reranker = ICRReranker.from_model(*smollm2, max_doc_tokens=64, layers="mid")
    ranks = []
    for i, query in enumerate(picked):
        ids = list(run[query.id].doc_ids)
        random.Random(i).shuffle(ids)
        ranking = reranker.rerank(query, [scifact.corpus[d] for d in ids])
        ranks += [ranking.doc_ids.index(d) + 1 for d in qrels.relevant(query.id) if d in ids]
    assert reranker.forward_passes == 2 * len(picked)
    assert np.mean(ranks) < 5.5 - 1.0  # chance is 5.5 for 10 candidates
