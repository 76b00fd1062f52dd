"""Per-intent retrieval with a real BM25 pipeline over the hotpotqa-500 corpus: identity for one-intent queries,
the three aggregations, provenance, reranking against the original query, and a two-hop question whose two gold
passages reach the top 5 only when decomposed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from routerank.data.beir import read_corpus
from routerank.data.types import Query, Ranking
from routerank.errors import RouterankError
from routerank.pipeline import Pipeline, build
from routerank.understand.decompose import Decomposer
from routerank.understand.stage import (
    UnderstoodPipeline,
    aggregate_max,
    aggregate_round_robin,
    aggregate_rrf,
)

DATA = Path(os.environ.get("ROUTERANK_DATA", "/work/shared/datasets")) / "hotpotqa-500"
TWO_HOP = Query("5a79118755429974737f7962", "Which band formed first, Awolnation or Foo Fighters?")
GOLD = {"p3854353a72ce", "pec556b8b040f"}  # qrels/train.tsv: the Awolnation and the Foo Fighters passages


@pytest.fixture(scope="module")
def corpus():
    if not DATA.exists():
        pytest.skip(f"hotpotqa-500 is not under {DATA.parent}")
    return read_corpus(DATA / "corpus.jsonl")


@pytest.fixture(scope="module")
def bm25(corpus):
    return build("bm25", corpus, cache=False)


def understood(pipeline, **options) -> UnderstoodPipeline:
    return UnderstoodPipeline(pipeline, Decomposer("rules"), **options)


def test_one_intent_query_gets_exactly_the_pipelines_ranking(bm25):
    queries = [Query("a", "What major truck road is located in Backford Cross?"), Query("b", "Who wrote  Hamlet?")]
    plain = bm25.search(queries, 10)
    for aggregate in ("rrf", "round-robin", "max"):
        stage = understood(bm25, aggregate=aggregate)
        run = stage.search(queries, 10)
        assert list(run) == ["a", "b"]
        assert all(run[q.id] == plain[q.id] for q in queries)
        assert not stage.last_understanding["a"].split
        assert set(stage.last_provenance["a"].values()) == {0}


def test_both_gold_passages_reach_the_top_5_only_when_decomposed(bm25):
    plain = set(bm25.search([TWO_HOP], 5)[TWO_HOP.id].doc_ids)
    assert len(GOLD & plain) == 1
    # round-robin only: RRF rewards what both sub-queries find, here passages that match the shared frame
    # ("Which band formed first"), and pushes both gold passages out of its top 5
    stage = understood(bm25, aggregate="round-robin")
    top = stage.search([TWO_HOP], 5)[TWO_HOP.id].doc_ids
    assert set(top) >= GOLD
    assert sorted(stage.last_provenance[TWO_HOP.id][d] for d in GOLD) == [0, 1]


def test_round_robin_gives_each_intent_its_best_documents_first(bm25):
    stage = understood(bm25, aggregate="round-robin")
    top = stage.search([TWO_HOP], 4)[TWO_HOP.id]
    subs = stage.last_understanding[TWO_HOP.id].sub_queries
    per_intent = bm25.search([Query(str(i), s.text) for i, s in enumerate(subs)], 100)
    assert top.doc_ids[0] == per_intent["0"].doc_ids[0]
    assert per_intent["1"].doc_ids[0] in top.doc_ids[:2]
    assert list(top.scores) == sorted(top.scores, reverse=True)
    assert set(stage.last_provenance[TWO_HOP.id]) == set(top.doc_ids)


def test_aggregations_on_hand_made_rankings():
    a = Ranking(("d1", "d2", "d3"), (9.0, 5.0, 1.0))
    b = Ranking(("d4", "d2"), (20.0, 8.0))
    ranking, source = aggregate_round_robin([a, b])
    assert ranking.doc_ids == ("d1", "d4", "d2", "d3") and source == {"d1": 0, "d4": 1, "d2": 0, "d3": 0}
    ranking, source = aggregate_rrf([a, b], rrf_k=60)
    assert ranking.doc_ids[0] == "d2" and ranking.scores[0] == pytest.approx(2 / 62)
    assert source["d2"] == 0 and source["d4"] == 1
    ranking, source = aggregate_max([a, b])
    assert ranking.doc_ids == ("d4", "d1", "d2", "d3") and source["d2"] == 1
    assert aggregate_round_robin([]) == (Ranking(), {})


def test_split_query_results_are_the_aggregate_of_the_sub_query_runs(bm25):
    stage = understood(bm25, aggregate="max", k_per_intent=20)
    run = stage.search([TWO_HOP], 10)
    subs = stage.last_understanding[TWO_HOP.id].sub_queries
    per_intent = bm25.search([Query(str(i), s.text) for i, s in enumerate(subs)], 20)
    expected, source = aggregate_max([per_intent["0"], per_intent["1"]])
    assert run[TWO_HOP.id] == expected.top(10)
    assert stage.last_provenance[TWO_HOP.id] == {d: source[d] for d in expected.top(10).doc_ids}
    assert run.name == stage.name == "understand:rules:max(bm25)"


class Reverse:
    """A rerank stage that reverses each query's candidates and records the queries it saw."""

    name = "reverse"

    def __init__(self):
        self.seen = []

    def rerank_run(self, queries, run, corpus, depth=100):
        self.seen.extend(q.text for q in queries)
        return type(run)({q.id: Ranking(run[q.id].doc_ids[:depth][::-1], run[q.id].scores[:depth]) for q in queries})


def test_rerank_against_original_reranks_the_aggregate_with_the_whole_query(bm25, corpus):
    reverse = Reverse()
    pipeline = Pipeline(bm25, [(reverse, 5)], corpus)
    stage = understood(pipeline, aggregate="round-robin", rerank_against="original")
    top = stage.search([TWO_HOP], 5)[TWO_HOP.id]
    assert reverse.seen == [TWO_HOP.text]
    first_stage = understood(bm25, aggregate="round-robin").search([TWO_HOP], 5)[TWO_HOP.id]
    assert top.doc_ids == first_stage.doc_ids[::-1]
    assert set(stage.last_provenance[TWO_HOP.id]) == set(top.doc_ids)

    reverse.seen.clear()
    understood(pipeline, rerank_against="sub-query").search([TWO_HOP], 5)
    assert len(reverse.seen) == 2 and TWO_HOP.text not in reverse.seen


def test_bad_settings_are_refused(bm25):
    with pytest.raises(RouterankError, match="unknown aggregation"):
        understood(bm25, aggregate="sum")
    with pytest.raises(RouterankError, match="rerank_against"):
        understood(bm25, rerank_against="both")


class TableSpeller:
    """A speller that knows a few fixes, enough to see where the stage applies denoising."""

    def __init__(self, fixes: dict[str, str]):
        self.fixes = fixes

    def correct(self, text: str):
        words = text.split()
        fixed = " ".join(self.fixes.get(w, w) for w in words)
        return type("Correction", (), {"text": fixed, "edits": tuple(w for w in words if w in self.fixes)})()


def test_a_speller_cleans_the_query_before_it_is_split_and_searched(bm25):
    noisy = Query("n", "Which band formd first, Awolnation or Foo Fightres?")
    speller = TableSpeller({"formd": "formed", "Fightres?": "Fighters?"})
    stage = UnderstoodPipeline(bm25, Decomposer("rules", speller=speller), aggregate="round-robin")
    run = stage.search([noisy], 5)
    understanding = stage.last_understanding["n"]
    assert understanding.original == noisy.text and understanding.cleaned == TWO_HOP.text
    assert understanding.corrections == ("formd", "Fightres?") and understanding.split
    clean_run = UnderstoodPipeline(bm25, Decomposer("rules"), aggregate="round-robin").search([TWO_HOP], 5)
    assert run["n"].doc_ids == clean_run[TWO_HOP.id].doc_ids
    whole = Query("w", "Who wrote Hamlte?")
    speller_only = UnderstoodPipeline(bm25, Decomposer("off", speller=TableSpeller({"Hamlte?": "Hamlet?"})))
    assert speller_only.search([whole], 5)["w"] == bm25.search([Query("w", "Who wrote Hamlet?")], 5)["w"]


def test_the_understand_spec_builds_the_same_system(corpus, bm25):
    """`understand(...)` through `routerank.pipeline.build` equals the stage built by hand, options included."""
    built = build("understand(bm25,aggregate=round-robin,mode=rules)", corpus, cache=False)
    by_hand = UnderstoodPipeline(bm25, Decomposer("rules"), aggregate="round-robin")
    assert isinstance(built, UnderstoodPipeline) and built.name == by_hand.name
    assert built.search([TWO_HOP], 5)[TWO_HOP.id] == by_hand.search([TWO_HOP], 5)[TWO_HOP.id]
    assert set(built.search([TWO_HOP], 5)[TWO_HOP.id].doc_ids) >= GOLD
    assert build("understand(rrf(bm25,bm25:k1=0.9,b=0.4))", corpus, cache=False).pipeline.name.startswith("rrf(")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("understand(bm25,mode=magic)", "unknown understand mode"),
        ("understand(bm25,speller=3)", "speller=off, speller=1 or speller=2"),
        ("understand(bm25,aggregate=sum)", "unknown aggregation"),
        ("understand(mode=rules)", "wraps a pipeline"),
        ("understand(bm25,mode=rules,mode=off)", "given twice"),
    ],
)
def test_the_understand_spec_refuses_bad_options(corpus, spec, message):
    with pytest.raises(RouterankError, match=message):
        build(spec, corpus, cache=False)
