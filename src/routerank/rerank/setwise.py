"""Setwise LLM reranking (Zhuang et al., SIGIR 2024): sort the candidates by asking "which of these k is best?".

A pairwise comparison tells the sort one bit per LLM call; a set of k tells it which of k is best, so a sort
needs far fewer calls. Zhuang et al. plug such set comparisons into heapsort (a heap with k-1 children per node)
and bubble sort (a window of k sliding up k-1 at a time), and sort only the top `top` positions: a reranker judged
by nDCG@10 needs the best 10 in order, not a full sort. Documents below `top` keep the first-stage order.

Each comparison is one forward pass over the query and k labelled passages, read from the label tokens'
next-token logits (`choice.LabelChooser`); the sorts themselves live in `sorting.py`, with no LLM in them.

Cost for n candidates: heapsort about n/(k-1) comparisons to build the heap, then about log_{k-1}(n) per position
sorted; bubble sort about (n-t)/(k-1) per position t. `last_stats` counts the prompts, forward passes and seconds
of the last query; `stats` sums them.
"""

from __future__ import annotations

from typing import Any

from routerank.errors import RouterankError
from routerank.models.llm import DEFAULT_LLM
from routerank.rerank.choice import ComparisonReranker
from routerank.rerank.sorting import Judge, setwise_bubblesort, setwise_heapsort

METHODS = {"heapsort": setwise_heapsort, "bubblesort": setwise_bubblesort}


class SetwiseReranker(ComparisonReranker):
    """`setwise[:llm][,k=4,method=heapsort,top=10]`.

    k: passages per prompt (2-20); 4 keeps a CPU prompt near 600 tokens at 128 tokens a passage.
    method: heapsort (fewest LLM calls for a small `top`) or bubblesort.
    top: positions sorted; 10 is what nDCG@10 looks at.
    max_doc_tokens: each passage is cut to this many tokens (128, as for listwise and ICR here).
    template: prompt family, chatml (SmolLM2, Qwen2.5) or qwen3.
    token_budget: tokens per padded batch; only matters for batched questions, which setwise does not ask.
    chooser: anything with `choose(query, sets) -> positions` in place of the LLM (tests, other backends).
    """

    kind = "setwise"
    defaults = {"k": 4, "method": "heapsort", "top": 10}

    def __init__(self, model: str = DEFAULT_LLM, *, k: int = 4, method: str = "heapsort", top: int = 10, **shared: Any):
        self.k, self.method, self.top = int(k), method, int(top)
        super().__init__(model, **shared)

    def settings(self) -> dict[str, object]:
        k, top, labels = self.k, self.top, len(self.template.labels)
        if self.method not in METHODS:
            raise RouterankError(
                f"unknown setwise method {self.method!r}", fix=f"use method={' or method='.join(METHODS)}"
            )
        if not 2 <= k <= labels or top < 1:
            raise RouterankError(
                f"bad setwise settings (k={k}, top={top})", fix=f"use 2 <= k <= {labels} and top >= 1, e.g. k=4 top=10"
            )
        return {"k": k, "method": self.method, "top": top}

    def order(self, n: int, judge: Judge) -> list[int]:
        return METHODS[self.method](n, judge, k=self.k, top=self.top)
