from __future__ import annotations

import random
import re

import pytest

from routerank.errors import RouterankError
from routerank.rerank import registry
from routerank.rerank.pairwise import PairwiseReranker
from tests.conftest import graded_docs


class GradeChooser:
    """A fake LLM: picks the passage with the higher "grade N" written in it; equal grades go to the first slot."""

    def __init__(self, first_slot_only: bool = False):
        self.first_slot_only = first_slot_only
        self.sets: list[list[str]] = []

    def choose(self, query, sets):
        self.sets.extend(sets)
        if self.first_slot_only:
            return [0] * len(sets)
        grades = [[int(re.search(r"grade (\d+)", p).group(1)) for p in s] for s in sets]
        return [max(range(len(g)), key=lambda i, g=g: (g[i], -i)) for g in grades]


def test_allpair_with_a_perfect_chooser_gives_the_true_order_from_every_ordered_pair():
    grades = list(range(9))
    random.Random(0).shuffle(grades)
    chooser = GradeChooser()
    reranker = PairwiseReranker(chooser=chooser)
    ranking = reranker.rerank("grades", graded_docs(grades))
    assert ranking.doc_ids == tuple(f"d{i}" for i in sorted(range(9), key=lambda i: -grades[i]))
    assert reranker.last_stats.prompts == len(chooser.sets) == 9 * 8 and all(len(s) == 2 for s in chooser.sets)


@pytest.mark.parametrize("method", ["allpair", "bubblesort"])
def test_a_chooser_that_always_picks_slot_a_leaves_the_first_stage_order(method):
    reranker = PairwiseReranker(chooser=GradeChooser(first_slot_only=True), method=method, top=5)
    assert reranker.rerank("q", graded_docs([0, 9, 1, 8, 2, 7, 3])).doc_ids == tuple(f"d{i}" for i in range(7))


def test_equal_grades_tie_and_keep_the_first_stage_rank():
    for method in ("allpair", "bubblesort"):
        ranking = PairwiseReranker(chooser=GradeChooser(), method=method, top=5).rerank(
            "q", graded_docs([1, 3, 1, 3, 2])
        )
        assert ranking.doc_ids == ("d1", "d3", "d4", "d0", "d2")


def test_bubblesort_sorts_the_top_and_asks_about_2_top_n_prompts():
    grades = list(range(20))
    random.Random(3).shuffle(grades)
    reranker = PairwiseReranker(chooser=GradeChooser(), method="bubblesort", top=10)
    ranking = reranker.rerank("q", graded_docs(grades))
    best = sorted(range(20), key=lambda i: -grades[i])[:10]
    assert ranking.doc_ids == tuple(f"d{i}" for i in best + sorted(set(range(20)) - set(best)))
    stats = reranker.last_stats
    assert stats.prompts <= 2 * sum(19 - t for t in range(10)) and stats.cache_hits > 0


def test_tiny_llm_batches_allpair_and_pairs_the_orders_in_bubblesort(tiny):
    docs = graded_docs(range(6))
    allpair = PairwiseReranker.from_model(*tiny, max_doc_tokens=16)
    first = allpair.rerank("which passage has the best grade", docs)
    assert sorted(first.doc_ids) == sorted(d.id for d in docs)
    assert allpair.last_stats.prompts == 30 and allpair.last_stats.forward_passes < 5  # batched
    again = PairwiseReranker.from_model(*tiny, max_doc_tokens=16)
    assert again.rerank("which passage has the best grade", docs) == first
    bubble = PairwiseReranker.from_model(*tiny, method="bubblesort", top=2, max_doc_tokens=16)
    assert sorted(bubble.rerank("q", docs).doc_ids) == sorted(d.id for d in docs)
    assert bubble.last_stats.forward_passes * 2 == bubble.last_stats.prompts <= 2 * (5 + 4)
    assert bubble.name == "pairwise:custom,method=bubblesort,top=2"


def test_bad_settings_raise_errors_with_a_fix():
    for kwargs, message in [({"method": "sliding"}, "unknown pairwise method"), ({"top": 0}, "top must be positive")]:
        with pytest.raises(RouterankError, match=message) as error:
            PairwiseReranker(chooser=GradeChooser(), **kwargs)
        assert error.value.fix
    assert registry.reranker_class("pairwise") is PairwiseReranker
    assert registry.make_reranker("pairwise:method=bubblesort", chooser=GradeChooser()).name == (
        "pairwise:smollm2,method=bubblesort"
    )
