"""Pairwise ranking prompting (PRP, Qin et al., NAACL 2024 findings): sort by "which of A and B is more relevant?".

An LLM shown two passages leans towards one slot whatever they say. PRP asks every pair in both orders and counts
a win only when the answers agree; a judge that just follows the slot contradicts itself on every pair, and then
all-pairs ties everything and bubble sort never swaps, both leaving the first-stage order.

- allpair: every doc gets 1 point per pair won in both orders and 1/2 per contradiction; equal points keep the
  first-stage order. n(n-1) prompts, all independent, so they are batched into few forward passes.
- bubblesort (PRP-Sliding): `top` bubble passes from the bottom, swapping only on an agreed win. About
  2 * top * n prompts, sequential, each pair's two orders sharing one forward pass; pairs whose documents did not
  move are answered from the per-query memo.

Each answer is the argmax of the next-token logits over " A" and " B" after the cue `Passage`
(`choice.LabelChooser`): one forward pass, no generation. The sorts live in `sorting.py`, with no LLM in them.
"""

from __future__ import annotations

from typing import Any

from routerank.errors import RouterankError
from routerank.models.llm import DEFAULT_LLM
from routerank.rerank.choice import ComparisonReranker
from routerank.rerank.sorting import Judge, pairwise_allpair, pairwise_bubblesort

METHODS = ("allpair", "bubblesort")


class PairwiseReranker(ComparisonReranker):
    """`pairwise[:llm][,method=allpair,top=10]`.

    method: allpair (PRP's best; n(n-1) prompts, batched) or bubblesort (PRP-Sliding; fewer prompts for small `top`).
    top: positions bubble sort sorts; all-pairs ranks every candidate.
    max_doc_tokens: each passage is cut to this many tokens (128, as for listwise and ICR here).
    template: prompt family, chatml (SmolLM2, Qwen2.5) or qwen3.
    token_budget: tokens per padded batch of prompts (default 4096 on CPU, 65536 on GPU).
    chooser: anything with `choose(query, sets) -> positions` in place of the LLM (tests, other backends).
    """

    kind = "pairwise"
    defaults = {"method": "allpair", "top": 10}

    def __init__(self, model: str = DEFAULT_LLM, *, method: str = "allpair", top: int = 10, **shared: Any):
        self.method, self.top = method, int(top)
        super().__init__(model, **shared)

    def settings(self) -> dict[str, object]:
        """`method`, and `top` for bubble sort, checked: a RouterankError for an unknown method or a `top` below 1."""
        if self.method not in METHODS:
            raise RouterankError(
                f"unknown pairwise method {self.method!r}", fix="use method=allpair or method=bubblesort"
            )
        if self.top < 1:
            raise RouterankError(f"top must be positive, got {self.top}", fix="e.g. top=10")
        return {"method": self.method} | ({"top": self.top} if self.method == "bubblesort" else {})

    def order(self, n: int, judge: Judge) -> list[int]:
        """range(n) best first: by all-pairs points, or after `top` PRP-Sliding passes."""
        if self.method == "allpair":
            return pairwise_allpair(n, judge)
        return pairwise_bubblesort(n, judge, top=self.top)
