"""The conditional NLL against a plain one-row-at-a-time loop, and what a helpful prefix does to it."""

from __future__ import annotations

import math

import pytest
import torch

from routerank.errors import RouterankError
from routerank.generate.perplexity import conditional_nll, perplexity
from routerank.models.llm import tiny_llm

PREFIXES = ["Vitamin D is made in the skin.", "", "A much longer prefix about bones, calcium and the sun, " * 3]
TARGETS = ["It helps bones take up calcium.", "Cats purr when content.", "The end."]


def plain_nll(model, tokenizer, prefix: str, target: str, keep: int | None = None) -> float:
    head = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else [tokenizer.bos_token_id]
    head = head[-keep:] if keep else head
    tail = tokenizer(target, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([head + tail])
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return -sum(float(logprobs[len(head) - 1 + j, token]) for j, token in enumerate(tail))


def test_batched_nll_matches_a_plain_loop():
    model, tokenizer = tiny_llm(seed=3)
    scored = conditional_nll(model, tokenizer, PREFIXES, TARGETS, batch_size=2)
    for (nll, n), prefix, target in zip(scored, PREFIXES, TARGETS, strict=True):
        assert n == len(tokenizer(target, add_special_tokens=False)["input_ids"])
        assert nll == pytest.approx(plain_nll(model, tokenizer, prefix, target), abs=1e-3)
    total = sum(nll for nll, _ in scored) / sum(n for _, n in scored)
    assert perplexity(scored) == pytest.approx(math.exp(total))


def test_prefix_cut_keeps_its_end_and_bad_input_is_refused():
    model, tokenizer = tiny_llm(seed=3)
    long_prefix = "filler words " * 200 + "Vitamin D is made in the skin."
    [cut] = conditional_nll(model, tokenizer, [long_prefix], [TARGETS[0]], max_prefix_tokens=8)
    assert cut[0] == pytest.approx(plain_nll(model, tokenizer, long_prefix, TARGETS[0], keep=8), abs=1e-3)
    with pytest.raises(RouterankError, match="one prefix per target"):
        conditional_nll(model, tokenizer, ["a"], ["b", "c"])
    with pytest.raises(RouterankError, match="no tokens"):
        conditional_nll(model, tokenizer, ["a"], [""])
    with pytest.raises(RouterankError, match="no scored tokens"):
        perplexity([])
