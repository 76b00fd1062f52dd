from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from routerank.errors import RouterankError, SpecError
from routerank.rerank.base import as_flag
from routerank.rerank.choice import ComparisonStats, LabelChooser, split_arg
from routerank.rerank.templates import get_choice_template

QUERY = "does aspirin prevent heart attacks"
PASSAGES = [
    "Aspirin reduces the risk of a first heart attack in adults at high risk.",
    "Cats are small carnivorous mammals.",
    "Statins lower LDL cholesterol. " + "More trial details follow here. " * 30,
    "Short.",
    "Heart attacks follow the blockage of a coronary artery.",
]


def by_hand(model, tokenizer, chooser: LabelChooser, sets) -> np.ndarray:
    """One unbatched, unpadded forward per prompt through the full model and its whole LM head."""
    import torch

    labels = [tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in chooser.template.answer_tokens(20)]
    out = np.full((len(sets), max(len(s) for s in sets)), -np.inf, dtype=np.float32)
    for i, passages in enumerate(sets):
        ids = tokenizer(chooser.prompt(QUERY, passages), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        out[i, : len(passages)] = logits[labels[: len(passages)]].numpy()
    return out


def test_batched_label_logits_equal_an_unbatched_forward_of_the_plain_model(tiny):
    chooser = LabelChooser(*tiny, get_choice_template("setwise", "chatml"), max_doc_tokens=24, token_budget=300)
    sets = [PASSAGES[:4], PASSAGES[1:3], PASSAGES[::-1], [PASSAGES[3], PASSAGES[0], PASSAGES[2]]]
    logits = chooser.label_logits(QUERY, sets)
    assert np.allclose(logits, by_hand(*tiny, chooser, sets), atol=1e-4)
    assert np.isneginf(logits[1, 2:]).all() and np.isfinite(logits[0, :4]).all() and np.isneginf(logits[0, 4])
    assert chooser.prompts == 4 and 1 < chooser.forward_passes < 4  # the budget split the four prompts
    assert chooser.choose(QUERY, sets) == logits.argmax(axis=1).tolist() and chooser.choose(QUERY, []) == []


def test_prompt_truncates_passages_and_ends_at_the_answer_cue(tiny):
    _, tokenizer = tiny
    chooser = LabelChooser(*tiny, get_choice_template("pairwise", "chatml"), max_doc_tokens=8)
    prompt = chooser.prompt(QUERY, [PASSAGES[2], "Two\nlines."])
    cut = chooser.truncate(PASSAGES[2])
    assert len(tokenizer(cut, add_special_tokens=False)["input_ids"]) <= 8 and PASSAGES[2].startswith(cut)
    assert f'Passage A: "{cut}"' in prompt and 'Passage B: "Two lines."' in prompt
    assert prompt.endswith("assistant\nPassage") and QUERY in prompt


def test_labels_must_be_single_tokens(tiny):
    template = replace(get_choice_template("setwise", "chatml"), answer=" Passage {label}")
    with pytest.raises(RouterankError, match="single-token labels"):
        LabelChooser(*tiny, template)


def test_spec_arguments_and_stats():
    assert split_arg("") == ("smollm2", {})
    assert split_arg("hf:/models/qwen, k=3 ,method=bubblesort") == ("hf:/models/qwen", {"k": 3, "method": "bubblesort"})
    assert split_arg("top=5") == ("smollm2", {"top": 5})
    # `false` is False, not the truthy string "false": a spec and --rerank-opt parse values alike
    assert split_arg("smollm2,cache=false,prefix_cache=True,alpha=0.5,layers=7:23") == (
        "smollm2",
        {"cache": False, "prefix_cache": True, "alpha": 0.5, "layers": "7:23"},
    )
    with pytest.raises(SpecError, match="two models"):
        split_arg("smollm2,qwen")
    total = ComparisonStats(1, 10, 2, 10, 1.5) + ComparisonStats(1, 30, 0, 5, 2.5)
    assert total == ComparisonStats(2, 40, 2, 15, 4.0)
    assert total.per_query() == {"prompts": 20, "cache_hits": 1, "forward_passes": 7.5, "seconds": 2.0}


def test_one_flag_parser_for_every_reranker_option():
    for truthy in (True, 1, "1", "true", " Yes", "on"):
        assert as_flag(truthy, "think") is True
    for falsy in (False, 0, "0", "False", "no", "off"):
        assert as_flag(falsy, "think") is False
    for bad in (2, "maybe", ""):
        with pytest.raises(SpecError, match="calibrate must be true or false"):
            as_flag(bad, "calibrate")


@pytest.mark.slow
def test_real_smollm2_setwise_and_pairwise_on_scifact(smollm2, scifact):
    """Three seeded SciFact test queries at BM25 top 10: full permutations, and the LLM calls the sorts predict.

    Pairwise runs as bubble sort here: all-pairs' exact count (n(n-1)) is tested on the tiny model, and its 90
    prompts a query would triple this test's time."""
    from routerank.pipeline import build
    from routerank.rerank.pairwise import PairwiseReranker
    from routerank.rerank.setwise import SetwiseReranker

    queries = random.Random(0).sample(scifact.split_queries("test"), 3)
    run = build("bm25", scifact.corpus).search(queries, 10)
    setwise = SetwiseReranker.from_model(*smollm2, k=4, max_doc_tokens=48)
    pairwise = PairwiseReranker.from_model(*smollm2, method="bubblesort", top=10, max_doc_tokens=48)
    for query in queries:
        docs = [scifact.corpus[d] for d in run[query.id].doc_ids]
        for reranker in (setwise, pairwise):
            ranking = reranker.rerank(query, docs)
            assert sorted(ranking.doc_ids) == sorted(run[query.id].doc_ids)
        assert 3 <= setwise.last_stats.prompts <= 10 / 3 + 10 * 2  # heap build + ~log_3(10) per pop
        assert setwise.last_stats.forward_passes == setwise.last_stats.prompts  # sequential: one set per pass
        assert 18 <= pairwise.last_stats.prompts <= 2 * sum(9 - t for t in range(9))  # pass 0 asks all 9 pairs
        assert pairwise.last_stats.forward_passes * 2 == pairwise.last_stats.prompts  # both orders in one pass
    assert setwise.stats.queries == pairwise.stats.queries == 3 and setwise.calls == setwise.stats.prompts
