"""Comparison sorts for LLM rerankers, with no LLM in them.

Setwise heapsort and bubble sort (Zhuang et al., SIGIR 2024) and pairwise all-pairs and bubble sort (PRP, Qin et
al., NAACL 2024 findings) only ever ask one question: "of these documents, shown in this order, which is best?".
A `Judge` answers it, for a batch of such sets at once. Keeping the LLM out of this module is what lets the sorts be
tested against judges that know the true order, contradict themselves, or always pick the first slot.

Documents are named by their first-stage rank 0..n-1, so "keep the first-stage order" is "sort by index": the
documents below `top`, and every tie, fall back to it.

The judge is the cost, so:
- `CachedJudge` remembers each answer within one query: the same set in the same order is never asked twice (bubble
  passes re-ask many windows whose contents did not move);
- independent questions go to the judge in one batch (every pair for all-pairs, both orders of one pair for PRP's
  bubble sort), so an LLM judge can answer them in one padded forward pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Protocol

from routerank.errors import RouterankError


class Judge(Protocol):
    """Answers the sorts' one question, for a batch of sets at once: which document of each set is best."""

    def best(self, sets: Sequence[Sequence[int]]) -> list[int]:
        """For each set of document indices (in the order shown), the position of the one judged most relevant."""
        ...


class CachedJudge:
    """A judge's answers memoised for one query; counts questions asked and questions the judge really answered."""

    def __init__(self, judge: Judge):
        self.judge = judge
        self.memo: dict[tuple[int, ...], int] = {}
        self.asked = 0
        self.judged = 0

    @property
    def cache_hits(self) -> int:
        """Questions answered from the memo rather than by the judge."""
        return self.asked - self.judged

    def best(self, sets: Sequence[Sequence[int]]) -> list[int]:
        """For each set, the position of its best document. Known answers come from the memo, the rest go to the judge
        in one batch, each distinct set once; a one-document set is 0 without asking. A RouterankError when the judge's
        answers do not fit the sets."""
        keys = [tuple(s) for s in sets]
        self.asked += len(keys)
        for key in keys:
            if len(key) == 1:
                self.memo[key] = 0  # nothing to compare
        todo = list(dict.fromkeys(k for k in keys if k not in self.memo))
        if todo:
            answers = list(self.judge.best(todo))
            if len(answers) != len(todo) or any(not 0 <= a < len(s) for a, s in zip(answers, todo, strict=False)):
                raise RouterankError(
                    f"a judge answered {answers[:5]} for {len(todo)} sets, e.g. {todo[:2]}",
                    fix="a judge returns one position per set, each within its set",
                )
            self.memo.update(zip(todo, (int(a) for a in answers), strict=True))
            self.judged += len(todo)
        return [self.memo[k] for k in keys]


def _check(k: int, top: int) -> None:
    if k < 2 or top < 1:
        raise RouterankError(f"bad sort settings (k={k}, top={top})", fix="use a set size k >= 2 and top >= 1")


def setwise_heapsort(n: int, judge: Judge, k: int = 4, top: int = 10) -> list[int]:
    """The best `top` of range(n) in order, then the rest in first-stage order.

    A max-heap with k-1 children per node: one sift-down step shows a parent and its children (k documents), so
    building the heap costs about n/(k-1) questions and each of the `top` pops about log_{k-1}(n)."""
    _check(k, top)
    heap, arity = list(range(n)), k - 1

    def sift_down(node: int, size: int) -> None:
        while True:
            children = range(arity * node + 1, min(arity * node + arity + 1, size))
            if not children:
                return
            winner = judge.best([[heap[node], *(heap[c] for c in children)]])[0]
            if winner == 0:
                return
            child = children[winner - 1]
            heap[node], heap[child] = heap[child], heap[node]
            node = child

    for node in range((n - 2) // arity, -1, -1):
        sift_down(node, n)
    ranked, size = [], n
    while size and len(ranked) < top:
        ranked.append(heap[0])
        size -= 1
        heap[0] = heap[size]
        if len(ranked) < top:
            sift_down(0, size)
    return ranked + sorted(heap[:size])


def setwise_bubblesort(n: int, judge: Judge, k: int = 4, top: int = 10) -> list[int]:
    """The best `top` of range(n) in order, then the rest in first-stage order.

    Pass t slides a window of k from the bottom of the list up to position t, k-1 at a time; each window's winner
    moves to the window's top and so rides into the next window. One pass costs about (n-t)/(k-1) questions."""
    _check(k, top)
    order = list(range(n))
    for t in range(min(top, n - 1)):
        start = max(n - k, t)
        while True:
            window = order[start : start + k]
            winner = judge.best([window])[0]
            order[start : start + len(window)] = [window[winner], *window[:winner], *window[winner + 1 :]]
            if start == t:
                break
            start = max(start - (k - 1), t)
    return order[:top] + sorted(order[top:])


def debiased(judge: Judge, pairs: Sequence[tuple[int, int]]) -> list[int]:
    """PRP's answer for each pair (a, b), asked in both orders: +1 if a wins both, -1 if b wins both, 0 if the
    judge contradicts itself, which is what a judge that only follows the slot does."""
    answers = judge.best([shown for a, b in pairs for shown in ((a, b), (b, a))])
    outcomes = []
    for first, second in zip(answers[::2], answers[1::2], strict=True):
        a_wins = (first == 0) + (second == 1)
        outcomes.append(1 if a_wins == 2 else -1 if a_wins == 0 else 0)
    return outcomes


def pairwise_allpair(n: int, judge: Judge) -> list[int]:
    """range(n) by points: 1 per pair won in both orders, 1/2 per contradiction; equal points keep first-stage
    order. Asks all n(n-1) ordered pairs in one batch."""
    pairs = list(itertools.combinations(range(n), 2))
    points = [0.0] * n
    for (a, b), outcome in zip(pairs, debiased(judge, pairs), strict=True):
        points[a] += (1 + outcome) / 2
        points[b] += (1 - outcome) / 2
    return sorted(range(n), key=lambda i: (-points[i], i))


def pairwise_bubblesort(n: int, judge: Judge, top: int = 10) -> list[int]:
    """PRP-Sliding: `top` bubble passes from the bottom; a pair swaps only when the lower document wins in both
    orders, so a contradiction keeps the first-stage order. Pass t costs n-1-t pairs (2 questions each)."""
    _check(2, top)
    order = list(range(n))
    for t in range(min(top, n - 1)):
        for i in range(n - 2, t - 1, -1):
            if debiased(judge, [(order[i + 1], order[i])])[0] == 1:
                order[i], order[i + 1] = order[i + 1], order[i]
    return order[:top] + sorted(order[top:])
