from __future__ import annotations

import random
import re
from types import MappingProxyType

import pytest

from routerank.data.types import Corpus, Document, Query, Ranking, Run
from routerank.errors import RouterankError, SpecError
from routerank.rerank import choice, registry
from routerank.rerank.setwise import SetwiseReranker
from tests.conftest import graded_docs


class GradeChooser:
    """A fake LLM: picks the passage with the highest "grade N" written in it; equal grades go to the first slot."""

    def __init__(self):
        self.sets: list[list[str]] = []

    def choose(self, query, sets):
        self.sets.extend(sets)
        grades = [[int(re.search(r"grade (\d+)", p).group(1)) for p in s] for s in sets]
        return [max(range(len(g)), key=lambda i, g=g: (g[i], -i)) for g in grades]


def by_grade(grades, top: int) -> tuple[str, ...]:
    best = sorted(range(len(grades)), key=lambda i: -grades[i])[:top]
    return tuple(f"d{i}" for i in best + sorted(set(range(len(grades))) - set(best)))


@pytest.mark.parametrize("method", ["heapsort", "bubblesort"])
def test_a_perfect_chooser_sorts_the_top_and_keeps_the_rest_in_first_stage_order(method):
    grades = list(range(30))
    random.Random(1).shuffle(grades)
    chooser = GradeChooser()
    reranker = SetwiseReranker(chooser=chooser, method=method)
    ranking = reranker.rerank("grades", graded_docs(grades))
    assert ranking.doc_ids == by_grade(grades, 10)
    assert list(ranking.scores) == sorted(ranking.scores, reverse=True) and len(set(ranking.scores)) == 30
    assert reranker.last_stats.prompts == len(chooser.sets) and reranker.last_stats.forward_passes == 0
    assert all(2 <= len(s) <= 4 for s in chooser.sets)
    assert reranker.rerank("grades", graded_docs(grades), top_k=3).doc_ids == by_grade(grades, 10)[:3]
    assert reranker.stats.queries == 2 and reranker.calls == reranker.stats.prompts == 2 * reranker.last_stats.prompts


def test_heapsort_asks_fewer_sets_than_bubble_sort():
    grades = list(range(40))
    random.Random(2).shuffle(grades)
    prompts = {}
    for method in ("heapsort", "bubblesort"):
        reranker = SetwiseReranker(chooser=GradeChooser(), method=method, k=4, top=10)
        reranker.rerank("q", graded_docs(grades))
        prompts[method] = reranker.last_stats.prompts
    assert prompts["heapsort"] < prompts["bubblesort"] <= sum(1 + -(-(36 - t) // 3) for t in range(10))


def test_rerank_run_sorts_the_depth_and_keeps_the_tail():
    docs = graded_docs([1, 5, 3, 9, 7, 8])
    run = Run(MappingProxyType({"q1": Ranking(tuple(d.id for d in docs), (6.0, 5.0, 4.0, 3.0, 2.0, 1.0))}))
    reranker = SetwiseReranker(chooser=GradeChooser(), k=3, top=2)
    out = reranker.rerank_run([Query("q1", "grades")], run, Corpus(docs), depth=4)
    assert out["q1"].doc_ids == ("d3", "d1", "d0", "d2", "d4", "d5")
    assert out.name == "run>>setwise:smollm2,k=3,top=2"
    assert SetwiseReranker(chooser=GradeChooser()).rerank("q", ["only one"]).doc_ids == ("0",)


def test_tiny_llm_is_deterministic_and_counts_its_calls(tiny):
    docs = graded_docs(range(12))
    reranker = SetwiseReranker.from_model(*tiny, k=3, max_doc_tokens=16)
    first = reranker.rerank("which passage has the best grade", docs)
    stats = reranker.last_stats
    assert sorted(first.doc_ids) == sorted(d.id for d in docs)
    assert stats.queries == 1 and stats.seconds > 0
    assert 0 < stats.prompts == stats.forward_passes == reranker.chooser.prompts  # one set per forward pass
    again = SetwiseReranker.from_model(*tiny, k=3, max_doc_tokens=16)
    assert again.rerank("which passage has the best grade", docs) == first
    bubble = SetwiseReranker.from_model(*tiny, k=3, method="bubblesort", top=3, max_doc_tokens=16)
    assert sorted(bubble.rerank("q", docs).doc_ids) == sorted(d.id for d in docs)
    assert bubble.last_stats.prompts <= sum(1 + -(-(9 - t) // 2) for t in range(3))


def test_pipeline_specs_run_setwise_and_pairwise_stages(tiny, monkeypatch):
    from routerank.pipeline import build

    monkeypatch.setattr(choice, "load_causal_lm", lambda *args, **kwargs: tiny)
    corpus = Corpus(
        Document(f"d{i}", text)
        for i, text in enumerate(
            [
                "Aspirin reduces the risk of heart attack.",
                "Aspirin can cause stomach bleeding.",
                "Heart attacks follow blocked arteries.",
                "Statins lower cholesterol in adults.",
                "Cholesterol and heart disease risk.",
                "Cats purr when content.",
            ]
        )
    )
    queries = [Query("q1", "aspirin heart attack"), Query("q2", "cholesterol statins")]
    first = build("bm25", corpus, cache=False).search(queries, 20)
    for spec, name in [
        ("bm25>>setwise@20", "setwise"),
        ("bm25>>setwise:k=3,method=bubblesort,top=3@20", "setwise:smollm2,k=3,method=bubblesort,top=3"),
        ("bm25>>pairwise:smollm2@20", "pairwise"),
        ("bm25>>pairwise:method=bubblesort,top=2@20", "pairwise:smollm2,method=bubblesort,top=2"),
    ]:
        pipeline = build(spec, corpus, cache=False)
        run = pipeline.search(queries, 20)
        assert pipeline.name == f"bm25>>{name}@20"
        for query in queries:
            assert sorted(run[query.id].doc_ids) == sorted(first[query.id].doc_ids)
        assert build(spec, corpus, cache=False).search(queries, 20).as_dict() == run.as_dict()


def test_bad_settings_raise_errors_with_a_fix():
    for kwargs, message in [
        ({"method": "quicksort"}, "unknown setwise method"),
        ({"k": 1}, "bad setwise settings"),
        ({"k": 21}, "bad setwise settings"),
        ({"top": 0}, "bad setwise settings"),
        ({"max_doc_tokens": 0}, "max_doc_tokens"),
    ]:
        with pytest.raises(RouterankError, match=message) as error:
            SetwiseReranker(chooser=GradeChooser(), **kwargs)
        assert error.value.fix
    with pytest.raises(SpecError, match="does not take that option"):
        registry.make_reranker("setwise:k=3,window=4", chooser=GradeChooser())
    assert registry.reranker_class("setwise") is SetwiseReranker
