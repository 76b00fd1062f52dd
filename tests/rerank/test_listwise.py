from __future__ import annotations

import re
from types import MappingProxyType

import pytest

from routerank.data.types import Corpus, Query, Ranking, Run
from routerank.errors import RouterankError
from routerank.rerank import registry
from routerank.rerank.listwise import (
    ChatGenerator,
    ListwiseRanking,
    ListwiseReranker,
    Repairs,
    parse_permutation,
    window_starts,
)
from routerank.rerank.templates import LISTWISE_TEMPLATE
from tests.conftest import graded_docs


class ScriptedJudge:
    """A fake LLM: reads the numbered passages out of the prompt and ranks them by the grade written in each."""

    def __init__(self, answers: list[str] | None = None):
        self.prompts: list[str] = []
        self.answers = list(answers or [])

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if self.answers:
            return self.answers.pop(0)
        passages = re.findall(r"^\[(\d+)\] .*?grade (\d+)", prompt, flags=re.M)
        ranked = sorted(passages, key=lambda p: -int(p[1]))
        return " > ".join(f"[{ident}]" for ident, _ in ranked)


def test_prompt_template_exact_text():
    assert LISTWISE_TEMPLATE.render("does aspirin help", ["Aspirin thins blood.", "Cats purr."]) == (
        "Below are 2 passages, each with an identifier in square brackets.\n"
        "Query: does aspirin help\n"
        "\n"
        "[1] Aspirin thins blood.\n"
        "[2] Cats purr.\n"
        "\n"
        "Order all 2 passages by how relevant they are to the query: does aspirin help\n"
        "List the most relevant first, every identifier exactly once, in the form [2] > [1]. Write nothing else."
    )
    assert (
        LISTWISE_TEMPLATE.system
        == "You rank search results. You answer only with passage identifiers in order of relevance."
    )


@pytest.mark.parametrize(
    "text, order, repairs",
    [
        ("[2] > [1] > [3]", (1, 0, 2), Repairs(windows=1)),
        ("[2] > [1] > [3] > [2] > [2]", (1, 0, 2), Repairs(windows=1, duplicates=2, repaired_windows=1)),
        ("[3] > [9] > [0] > [1]", (2, 0, 1), Repairs(windows=1, out_of_range=2, missing=1, repaired_windows=1)),
        ("[4]", (3, 0, 1, 2), Repairs(windows=1, missing=3, repaired_windows=1)),
        (
            "Sure! Here is the ranking: [3] > [1] > [2]. Hope it helps.",
            (2, 0, 1),
            Repairs(windows=1, extra_text=1, repaired_windows=1),
        ),
        ("Of the 3 passages, [2] is best", (1, 0, 2), Repairs(windows=1, missing=2, extra_text=1, repaired_windows=1)),
        ("3 > 1 > 2", (2, 0, 1), Repairs(windows=1)),
        ("I cannot rank these passages.", (0, 1, 2), Repairs(windows=1, unparsed=1, repaired_windows=1)),
        ("", (0, 1, 2), Repairs(windows=1, unparsed=1, repaired_windows=1)),
        ("[ 2 ]>[3],[1]", (1, 2, 0), Repairs(windows=1)),
    ],
)
def test_parse_permutation_repairs_and_counts(text, order, repairs):
    n = 4 if text == "[4]" else 3
    parsed = parse_permutation(text, n)
    assert parsed.order == order and parsed.repairs == repairs
    assert sorted(parsed.order) == list(range(n))


def test_windows_slide_from_the_bottom_and_always_reach_the_top():
    assert window_starts(50, 20, 10) == [30, 20, 10, 0]
    assert window_starts(25, 20, 10) == [5, 0]
    assert window_starts(20, 20, 10) == [0]
    assert window_starts(7, 20, 10) == [0]
    assert window_starts(41, 20, 5) == [21, 16, 11, 6, 1, 0]


def test_sliding_window_bubbles_the_best_passages_up_from_the_bottom():
    grades = list(range(50))  # the best passages sit at the bottom of the input list
    judge = ScriptedJudge()
    reranker = ListwiseReranker(generate=judge)
    ranking = reranker.rerank("grades", graded_docs(grades))
    assert len(judge.prompts) == 4
    assert "passage 30 has" in judge.prompts[0] and "passage 49 has" in judge.prompts[0]
    assert "passage 29 has" not in judge.prompts[0]
    assert ranking.doc_ids[:10] == tuple(f"d{i}" for i in range(49, 39, -1))
    assert sorted(ranking.doc_ids) == sorted(f"d{i}" for i in range(50))
    assert list(ranking.scores) == sorted(ranking.scores, reverse=True)
    assert isinstance(ranking, Ranking) and ranking.repairs == Repairs(windows=4)
    assert reranker.rerank("grades", graded_docs(grades), top_k=3).doc_ids == ("d49", "d48", "d47")


def test_window_and_step_are_configurable():
    judge = ScriptedJudge()
    ListwiseReranker(generate=judge, window=4, step=2).rerank("q", graded_docs([0] * 10))
    assert len(judge.prompts) == len(window_starts(10, 4, 2)) == 4
    assert all(p.startswith("Below are 4 passages") for p in judge.prompts)
    for window, step in ((1, 1), (10, 0), (10, 10)):
        with pytest.raises(RouterankError, match="sliding window"):
            ListwiseReranker(generate=judge, window=window, step=step)


def test_repairs_are_reported_on_the_ranking_and_accumulated_on_the_reranker():
    messy = ["Ranking: [3] > [3] > [1]", "nothing useful", "[2] > [1]"]
    judge = ScriptedJudge(answers=messy)
    reranker = ListwiseReranker(generate=judge, window=3, step=1)
    first = reranker.rerank("q", graded_docs([1, 2, 3, 4]))  # windows start at 1, then 0
    assert isinstance(first, ListwiseRanking)
    assert first.repairs == Repairs(windows=2, duplicates=1, missing=1, extra_text=1, unparsed=1, repaired_windows=2)
    assert first.doc_ids == ("d0", "d3", "d1", "d2")  # window [d1 d2 d3] → d3 d1 d2; top window unchanged
    second = reranker.rerank("q", graded_docs([1, 2]))
    assert second.repairs == Repairs(windows=1) and second.doc_ids == ("d1", "d0")
    assert reranker.stats == first.repairs + second.repairs and reranker.stats.total == 4


def test_a_single_document_needs_no_generation():
    judge = ScriptedJudge()
    ranking = ListwiseReranker(generate=judge).rerank("q", ["only one"])
    assert ranking.doc_ids == ("0",) and judge.prompts == [] and ranking.repairs == Repairs()


def test_documents_are_truncated_to_a_token_budget(tiny):
    _, tokenizer = tiny
    long_text = "Statins lower LDL cholesterol in adults with diabetes. " * 20
    reranker = ListwiseReranker(generate=ScriptedJudge(), tokenizer=tokenizer, max_doc_tokens=12)
    short = reranker.truncate(long_text)
    assert len(tokenizer(short, add_special_tokens=False)["input_ids"]) <= 12 and long_text.startswith(short)
    assert reranker.truncate("Two\nlines.") == "Two lines."
    by_words = ListwiseReranker(generate=ScriptedJudge(), max_doc_tokens=5)
    assert by_words.truncate(long_text) == "Statins lower LDL cholesterol in"
    assert by_words.prompt("q", [long_text]).count("Statins") == 1


def test_default_generator_runs_greedy_chat_generation_on_a_real_model(tiny):
    model, tokenizer = tiny
    sized = ListwiseReranker.from_model(model, tokenizer, window=5, step=2)
    assert isinstance(sized.generate, ChatGenerator)
    assert (
        sized.generate.max_new_tokens
        == len(tokenizer("[5] > [4] > [3] > [2] > [1]", add_special_tokens=False)["input_ids"]) + 8
    )
    reranker = ListwiseReranker.from_model(model, tokenizer, window=3, step=1, max_doc_tokens=8, max_new_tokens=6)
    docs = graded_docs([3, 1, 4, 1])
    ranking = reranker.rerank("grades", docs)
    assert sorted(ranking.doc_ids) == sorted(d.id for d in docs)
    assert ranking.repairs.windows == 2
    assert 0 < reranker.forward_passes <= 2 * 6
    again = ListwiseReranker.from_model(model, tokenizer, window=3, step=1, max_doc_tokens=8, max_new_tokens=6)
    assert again.rerank("grades", docs) == ranking  # greedy, so repeatable


def test_registry_and_rerank_run_keep_the_tail():
    assert registry.reranker_class("listwise") is ListwiseReranker
    docs = graded_docs([1, 5, 3, 9, 7])
    run = Run(MappingProxyType({"q1": Ranking(tuple(d.id for d in docs), (5.0, 4.0, 3.0, 2.0, 1.0))}))
    out = ListwiseReranker(generate=ScriptedJudge()).rerank_run([Query("q1", "grades")], run, Corpus(docs), depth=3)
    assert out["q1"].doc_ids == ("d1", "d2", "d0", "d3", "d4")


def test_answers_of_a_model_loaded_by_spec_are_cached_on_disk(tiny, tmp_path):
    """A killed listwise run resumes: a second reranker over the same model reads every window from disk."""
    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    spec, cache = f"hf:{tmp_path / 'tiny'}", tmp_path / "answers"
    options = {"window": 3, "step": 1, "max_doc_tokens": 8, "max_new_tokens": 6, "cache_dir": cache}
    docs = graded_docs([3, 1, 4, 1])
    first = ListwiseReranker(spec, **options)
    ranking = first.rerank("grades", docs)
    assert first.forward_passes > 0 and len(list(cache.glob("listwise-*.sqlite"))) == 1
    again = ListwiseReranker(spec, **options)
    assert again.rerank("grades", docs) == ranking and again.forward_passes == 0  # every window from disk
    assert again.rerank("other query", docs).repairs.windows == 2 and again.forward_passes > 0  # new prompts run
    budget = ListwiseReranker(spec, **{**options, "max_new_tokens": 5})  # another answer budget: another file
    budget.rerank("grades", docs)
    assert budget.forward_passes > 0 and len(list(cache.glob("listwise-*.sqlite"))) == 2
    half = ListwiseReranker(spec, **{**options, "dtype": "bf16"})  # other weights' precision: another file
    half.rerank("grades", docs)
    assert half.forward_passes > 0 and len(list(cache.glob("listwise-*.sqlite"))) == 3
    off = ListwiseReranker(spec, **{**options, "cache": False})
    off.rerank("grades", docs)
    assert off.forward_passes > 0
    memory = ListwiseReranker.from_model(model, tokenizer, **{**options, "cache_dir": tmp_path / "none"})
    memory.rerank("grades", docs)
    assert not (tmp_path / "none").exists()  # a model from memory has no fingerprint to key a cache by


@pytest.mark.parametrize("progress", [True, False])
def test_rerank_run_shows_a_bar_per_query_when_asked(capsys, progress):
    docs = graded_docs([1, 5, 3])
    run = Run(MappingProxyType({f"q{i}": Ranking(tuple(d.id for d in docs), (3.0, 2.0, 1.0)) for i in range(3)}))
    reranker = ListwiseReranker(generate=ScriptedJudge(), progress=progress)
    reranker.rerank_run([Query(f"q{i}", "grades") for i in range(3)], run, Corpus(docs), depth=3)
    assert ("0/3 [" in capsys.readouterr().err) is progress  # the first render; leave=False clears the last


def test_shuffle_shows_the_candidates_in_a_seeded_random_order():
    """A judge that ranks by content gives the same ranking either way; one that keeps the shown order does not."""
    docs = graded_docs([1, 5, 3, 9, 7, 2])
    by_content = ListwiseReranker(generate=ScriptedJudge(), window=20)
    shuffled = ListwiseReranker(generate=ScriptedJudge(), window=20, shuffle=13)
    assert shuffled.rerank("grades", docs).doc_ids == by_content.rerank("grades", docs).doc_ids
    in_order = " > ".join(f"[{i}]" for i in range(1, 7))
    keeps = ListwiseReranker(generate=ScriptedJudge([in_order] * 3), window=20, shuffle=13)
    first = keeps.rerank("grades", docs).doc_ids
    assert first != tuple(d.id for d in docs) and sorted(first) == sorted(d.id for d in docs)
    assert keeps.rerank("grades", docs).doc_ids == first  # seeded by the query id: repeatable
    assert keeps.rerank(Query("other", "grades"), docs).doc_ids != first
    assert ListwiseReranker(generate=ScriptedJudge(), shuffle="none").shuffle is None
