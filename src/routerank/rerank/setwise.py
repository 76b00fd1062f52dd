"""Setwise LLM reranking (Zhuang et al., SIGIR 2024): sort the candidates by asking "which of these k is best?".

A pairwise comparison tells the sort one bit per LLM call; a set of k tells it which of k is best, so a sort
needs far fewer calls. Zhuang et al. plug such set comparisons into heapsort (a heap with k-1 children per node)
and bubble sort (a window of k sliding up k-1 at a time), and sort only the top `top` positions: a reranker judged
by nDCG@10 needs the best 10 in order, not a full sort. Documents below `top` keep the first-stage order.

Each comparison is one forward pass over the query and k labelled passages, read from the label tokens'
next-token logits (`choice.LabelChooser`); the sorts themselves live in `sorting.py`, with no LLM in them.

Rank-R1 (`setwise:adapter=<folder>`, trained by `routerank train rank-r1`) was taught to reason before it answers:
with its template the comparisons generate `<think> ... </think> <answer>X</answer>` and read X
(`rerank.reasoning`), as the paper does; `think=0` reads the label logits after an empty think block instead, one
forward pass per comparison like the plain setwise reranker (much cheaper, though not what the model was trained on).

Cost for n candidates: heapsort about n/(k-1) comparisons to build the heap, then about log_{k-1}(n) per position
sorted; bubble sort about (n-t)/(k-1) per position t. `last_stats` counts the prompts, forward passes and seconds
of the last query; `stats` sums them.
"""

from __future__ import annotations

from typing import Any

from routerank.errors import RouterankError
from routerank.models.llm import DEFAULT_LLM
from routerank.rerank.base import as_flag
from routerank.rerank.choice import ComparisonReranker
from routerank.rerank.reasoning import ReasoningChooser
from routerank.rerank.sorting import Judge, setwise_bubblesort, setwise_heapsort

METHODS = {"heapsort": setwise_heapsort, "bubblesort": setwise_bubblesort}


class SetwiseReranker(ComparisonReranker):
    """`setwise[:llm][,k=4,method=heapsort,top=10]`.

    k: passages per prompt (2-20); 4 keeps a CPU prompt near 600 tokens at 128 tokens a passage.
    method: heapsort (fewest LLM calls for a small `top`) or bubblesort.
    top: positions sorted; 10 is what nDCG@10 looks at.
    max_doc_tokens: each passage is cut to this many tokens (128, as for listwise and ICR here).
    template: prompt family, chatml (SmolLM2, Qwen2.5), qwen3 or rank-r1; default the adapter's, else chatml.
    adapter: a Rank-R1 LoRA folder merged into the weights.
    think: generate the reasoning, then read `<answer>` (a reasoning template only); default on for one.
    max_new_tokens: the reasoning budget per comparison; default what the adapter was trained with, else 128.
    token_budget: tokens per padded batch; only matters for batched questions, which setwise does not ask.
    chooser: anything with `choose(query, sets) -> positions` in place of the LLM (tests, other backends).
    """

    kind = "setwise"
    defaults = {"k": 4, "method": "heapsort", "top": 10, "think": 1}

    def __init__(
        self,
        model: str = DEFAULT_LLM,
        *,
        k: int = 4,
        method: str = "heapsort",
        top: int = 10,
        think: bool | int | str | None = None,
        max_new_tokens: int | None = None,
        **shared: Any,
    ):
        self.k, self.method, self.top = int(k), method, int(top)
        self.think = None if think is None else as_flag(think, "think")
        self.max_new_tokens = None if max_new_tokens is None else int(max_new_tokens)
        super().__init__(model, **shared)

    def settings(self) -> dict[str, object]:
        """`k`, `method` and `top` (and `think` with a reasoning template), checked against the template; `think`
        defaults to whether the template reasons."""
        k, top, labels = self.k, self.top, len(self.template.labels)
        if self.method not in METHODS:
            raise RouterankError(
                f"unknown setwise method {self.method!r}", fix=f"use method={' or method='.join(METHODS)}"
            )
        if not 2 <= k <= labels or top < 1:
            raise RouterankError(
                f"bad setwise settings (k={k}, top={top})", fix=f"use 2 <= k <= {labels} and top >= 1, e.g. k=4 top=10"
            )
        if self.think is None:
            self.think = self.template.reasons
        if self.think and not self.template.reasons:
            raise RouterankError(
                f"think=1 needs a reasoning prompt; template {self.template.name!r} asks for the label alone",
                fix="use template=rank-r1 (or a Rank-R1 adapter), or drop think",
            )
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise RouterankError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        shown = {"think": int(self.think)} if self.template.reasons else {}
        return {"k": k, "method": self.method, "top": top, **shown}

    def make_chooser(self, model, tokenizer, *, max_doc_tokens: int, token_budget: int | None):
        """With `think` on, a ReasoningChooser whose budget is `max_new_tokens` (default the adapter's training
        length, else 128); otherwise the label-logit chooser."""
        if not self.think:
            return super().make_chooser(model, tokenizer, max_doc_tokens=max_doc_tokens, token_budget=token_budget)

        return ReasoningChooser(
            model,
            tokenizer,
            self.template,
            max_doc_tokens=max_doc_tokens,
            max_new_tokens=self.max_new_tokens or self.adapter_manifest.get("max_completion_length") or 128,
            token_budget=token_budget,
        )

    def order(self, n: int, judge: Judge) -> list[int]:
        """range(n) by setwise `method`: the best `top` in order, the rest in first-stage order."""
        return METHODS[self.method](n, judge, k=self.k, top=self.top)
