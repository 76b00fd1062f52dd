from __future__ import annotations

import math
import random

import pytest

from routerank.errors import RouterankError
from routerank.rerank.sorting import (
    CachedJudge,
    debiased,
    pairwise_allpair,
    pairwise_bubblesort,
    setwise_bubblesort,
    setwise_heapsort,
)


class GradeJudge:
    """Knows every document's grade and picks the highest; equal grades go to the first slot shown."""

    def __init__(self, grades: list[int]):
        self.grades = grades
        self.batches: list[int] = []

    def best(self, sets):
        self.batches.append(len(sets))
        return [max(range(len(s)), key=lambda i: (self.grades[s[i]], -i)) for s in sets]


class FirstSlotJudge:
    """A judge with pure position bias: whatever it is shown, the first passage wins."""

    def best(self, sets):
        return [0] * len(sets)


class CoinJudge:
    """Answers at random but consistently per set (seeded by the set), so it contradicts itself across orders."""

    def __init__(self, seed: int):
        self.seed = seed

    def best(self, sets):
        return [random.Random(hash((self.seed, tuple(s)))).randrange(len(s)) for s in sets]


def shuffled_grades(n: int, seed: int) -> list[int]:
    grades = list(range(n))
    random.Random(seed).shuffle(grades)
    return grades


def expected(grades: list[int], top: int) -> list[int]:
    best = sorted(range(len(grades)), key=lambda i: -grades[i])[:top]
    return best + sorted(set(range(len(grades))) - set(best))


SETWISE = [setwise_heapsort, setwise_bubblesort]


@pytest.mark.parametrize("sort", SETWISE)
@pytest.mark.parametrize("k", [2, 3, 4, 5])
@pytest.mark.parametrize("n", [1, 2, 7, 20, 33])
@pytest.mark.parametrize("top", [1, 5, 10])
def test_setwise_sorts_find_the_true_top_with_a_perfect_judge(sort, k, n, top):
    grades = shuffled_grades(n, seed=n * 100 + k)
    assert sort(n, CachedJudge(GradeJudge(grades)), k=k, top=top) == expected(grades, top)


@pytest.mark.parametrize("sort", SETWISE)
def test_setwise_sorts_handle_ties_and_an_empty_list(sort):
    assert sort(0, GradeJudge([]), k=4, top=10) == []
    grades = [1, 3, 1, 3, 2, 0]
    out = sort(6, CachedJudge(GradeJudge(grades)), k=3, top=3)
    assert sorted(out[:2]) == [1, 3] and out[2:] == [4, 0, 2, 5]


def bubble_windows(n: int, k: int, top: int) -> int:
    """Windows setwise bubble sort opens, before any cache hit: pass t slides k-1 at a time from n-k to t."""
    return sum(1 + math.ceil((max(n - k, t) - t) / (k - 1)) for t in range(min(top, n - 1)))


def test_heapsort_asks_far_fewer_set_comparisons_than_bubble_sort_for_top_10_of_100():
    n, k, top = 100, 4, 10
    grades = shuffled_grades(n, seed=3)
    heap, bubble = CachedJudge(GradeJudge(grades)), CachedJudge(GradeJudge(grades))
    assert (
        setwise_heapsort(n, heap, k=k, top=top) == setwise_bubblesort(n, bubble, k=k, top=top) == expected(grades, top)
    )
    height = math.ceil(math.log(n, k - 1))
    assert heap.judged <= 2 * n / (k - 1) + top * height  # build ~n/(k-1), then ~log_{k-1}(n) per pop
    assert bubble.asked == bubble_windows(n, k, top) > 300  # ~(n-t)/(k-1) per pass
    assert 2 * heap.judged < bubble.judged
    assert all(size == 1 for size in heap.judge.batches)  # sequential: one set per question


def test_bubble_passes_reuse_windows_that_did_not_move():
    n, k, top = 20, 4, 10
    judge = CachedJudge(GradeJudge(list(range(n, 0, -1))))  # first stage already perfect: nothing moves
    assert setwise_bubblesort(n, judge, k=k, top=top) == list(range(n))
    assert judge.asked == bubble_windows(n, k, top)
    assert judge.judged < judge.asked and judge.judged == len(judge.memo)


def test_cached_judge_asks_each_ordered_set_once_and_checks_answers():
    inner = GradeJudge([5, 1, 9])
    judge = CachedJudge(inner)
    assert judge.best([(0, 1), (1, 0), (0, 1), (2,)]) == [0, 1, 0, 0]
    assert judge.best([(0, 1, 2), (1, 0)]) == [2, 1]
    assert inner.batches == [2, 1] and (judge.asked, judge.judged, judge.cache_hits) == (6, 3, 3)
    with pytest.raises(RouterankError, match="one position per set"):
        CachedJudge(type("Bad", (), {"best": lambda self, sets: [3] * len(sets)})()).best([(0, 1)])


@pytest.mark.parametrize("n", [2, 5, 12])
def test_allpair_with_a_perfect_judge_gives_the_true_order_in_one_batch(n):
    grades = shuffled_grades(n, seed=n)
    judge = CachedJudge(GradeJudge(grades))
    assert pairwise_allpair(n, judge) == expected(grades, n)
    assert judge.judged == n * (n - 1) and judge.judge.batches == [n * (n - 1)]


@pytest.mark.parametrize("n, top", [(2, 1), (9, 3), (20, 10)])
def test_pairwise_bubblesort_with_a_perfect_judge_finds_the_true_top(n, top):
    grades = shuffled_grades(n, seed=top)
    judge = CachedJudge(GradeJudge(grades))
    assert pairwise_bubblesort(n, judge, top=top) == expected(grades, top)
    assert judge.judged <= 2 * sum(n - 1 - t for t in range(min(top, n - 1)))
    assert set(judge.judge.batches) == {2}  # both orders of one pair, together


def test_debiasing_turns_a_first_slot_judge_into_the_first_stage_order():
    assert debiased(FirstSlotJudge(), [(0, 1), (3, 2)]) == [0, 0]
    assert debiased(GradeJudge([0, 5, 9, 1]), [(0, 1), (2, 3)]) == [-1, 1]
    assert pairwise_allpair(9, FirstSlotJudge()) == list(range(9))
    assert pairwise_bubblesort(9, FirstSlotJudge(), top=5) == list(range(9))
    # without debiasing a first-slot judge is not harmless: setwise heapsort reorders the list
    assert setwise_heapsort(9, FirstSlotJudge(), k=3, top=9) != list(range(9))


def test_ties_fall_back_to_the_first_stage_rank():
    grades = [1, 3, 1, 3, 2]  # equal grades: the judge picks the first slot, so both orders disagree → a tie
    assert pairwise_allpair(5, GradeJudge(grades)) == [1, 3, 4, 0, 2]
    assert pairwise_bubblesort(5, GradeJudge(grades), top=5) == [1, 3, 4, 0, 2]


@pytest.mark.parametrize("seed", range(5))
def test_inconsistent_judges_still_give_deterministic_permutations(seed):
    n = 23
    for sort, ranks_all in (
        (lambda j: setwise_heapsort(n, j, k=4, top=10), False),
        (lambda j: setwise_bubblesort(n, j, k=3, top=10), False),
        (lambda j: pairwise_allpair(n, j), True),
        (lambda j: pairwise_bubblesort(n, j, top=10), False),
    ):
        first, again = sort(CachedJudge(CoinJudge(seed))), sort(CachedJudge(CoinJudge(seed)))
        assert sorted(first) == list(range(n)) and first == again
        assert ranks_all or first[10:] == sorted(first[10:])  # below top: first-stage order


def test_bad_settings_raise():
    for kwargs in ({"k": 1}, {"top": 0}):
        with pytest.raises(RouterankError, match="k >= 2"):
            setwise_heapsort(5, FirstSlotJudge(), **kwargs)
