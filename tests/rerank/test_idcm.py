from __future__ import annotations

from types import MappingProxyType

import numpy as np
import pytest

from routerank.data.types import Corpus, Document, Query, Ranking, Run
from routerank.errors import SpecError
from routerank.rerank import registry
from routerank.rerank.base import PairScoringReranker
from routerank.rerank.idcm import Aggregation, IDCMReranker
from routerank.rerank.passage_select import BM25PassageSelector, top_k
from routerank.rerank.passages import split_passages


class WordOverlapScorer(PairScoringReranker):
    """A deterministic stand-in for the expensive scorer: how many distinct query words the passage holds."""

    name = "overlap"

    def __init__(self, **options):
        self.options = options
        self.seen: list[tuple[str, str]] = []

    @classmethod
    def from_spec(cls, arg: str, **options):
        return cls(**options)

    def score_pairs(self, pairs):
        self.seen.extend(pairs)
        return np.array([len(set(q.lower().split()) & set(d.lower().split())) for q, d in pairs], dtype=float)


FILLER = "the parties filed written submissions before the bench on the appointed day"


def long_doc(doc_id: str, needle: str | None = None, at: int = 5, passages: int = 8) -> Document:
    """`passages` windows of 12 words; the needle, if any, replaces the filler of window `at`."""
    chunks = [needle if (needle and i == at) else FILLER for i in range(passages)]
    return Document(doc_id, " ".join(chunks), title=f"Case {doc_id}")


QUERY = Query("q1", "bail granted after anticipatory arrest")
NEEDLE = "the accused sought anticipatory bail and bail was granted after the arrest"


def cascade(selector="bm25", **options):
    options = {"k": 2, "size": 12, "stride": 12, **options}
    return IDCMReranker(selector, WordOverlapScorer(), **options)


def test_bm25_selector_keeps_exactly_k_passages_per_document_and_finds_the_buried_one():
    reranker = cascade(k=3)
    docs = [split_passages(long_doc("a", NEEDLE, at=6), 12, 12), split_passages(long_doc("b"), 12, 12)]
    chosen = reranker.select(QUERY.text, docs)
    assert [len(c) for c in chosen] == [3, 3]
    assert 6 in [p.index for p in chosen[0]]


def test_documents_shorter_than_k_keep_all_their_passages():
    chosen = cascade(k=4).select(QUERY.text, [split_passages(long_doc("s", passages=2), 12, 12)])
    assert [p.index for p in chosen[0]] == [0, 1]


def test_scorer_reads_only_the_selected_passages():
    reranker = cascade(k=2)
    docs = [long_doc("a", NEEDLE, at=5), long_doc("b"), long_doc("c", NEEDLE, at=0)]
    ranking = reranker.rerank(QUERY, docs)
    assert reranker.stats.scored_pairs == len(reranker.scorer.seen) == 2 * 3
    assert reranker.stats.passages == 3 * 8
    assert reranker.stats.saving == pytest.approx(1 - 6 / 24)
    needle_reads = [d for _, d in reranker.scorer.seen if NEEDLE in d]
    assert len(needle_reads) == 2
    assert all(d.startswith("Case ") for _, d in reranker.scorer.seen)
    assert set(ranking.doc_ids[:2]) == {"a", "c"} and ranking.doc_ids[2] == "b"


def test_full_mode_scores_every_passage_and_agrees_on_max():
    docs = [long_doc("a", NEEDLE, at=5), long_doc("b"), long_doc("c", passages=3)]
    full = cascade("all")
    full_ranking = full.rerank(QUERY, docs)
    assert full.stats.scored_pairs == len(full.scorer.seen) == 8 + 8 + 3
    assert full.name.startswith("idcm:all,overlap")
    assert full_ranking.doc_ids[0] == "a"
    assert cascade("full").selector is None
    assert cascade(k=2).rerank(QUERY, docs).scores[0] == full_ranking.scores[0]


def test_first_selector_ignores_the_query():
    [chosen] = cascade("first", k=3).select(QUERY.text, [split_passages(long_doc("a", NEEDLE, at=5), 12, 12)])
    assert [p.index for p in chosen] == [0, 1, 2]


def test_aggregations():
    scores = np.array([1.0, 4.0, 2.0, 3.0])
    assert Aggregation.parse("max")(scores) == 4.0
    assert Aggregation.parse("mean-top2")(scores) == 3.5
    assert Aggregation.parse("mean-top9")(scores) == 2.5
    assert Aggregation.parse("softmax", temperature=1e-3)(scores) == pytest.approx(4.0)
    assert Aggregation.parse("softmax", temperature=1e6)(scores) == pytest.approx(2.5, abs=1e-4)
    weights = np.exp(scores) / np.exp(scores).sum()
    assert Aggregation.parse("softmax")(scores) == pytest.approx(float(weights @ scores))


@pytest.mark.parametrize("aggregate", ["max", "mean-top2", "softmax"])
def test_aggregation_option_changes_the_document_score(aggregate):
    reranker = cascade(k=3, aggregate=aggregate)
    ranking = reranker.rerank(QUERY, [long_doc("a", NEEDLE, at=5)])
    passage_scores = WordOverlapScorer().score_pairs(reranker.scorer.seen)
    assert len(set(passage_scores.tolist())) > 1
    assert ranking.scores[0] == pytest.approx(Aggregation.parse(aggregate)(passage_scores))


@pytest.mark.parametrize("bad", ["nope", "mean-top0", "mean-topx", "min"])
def test_unknown_aggregation_is_a_spec_error(bad):
    with pytest.raises(SpecError):
        cascade(aggregate=bad)


def test_empty_document_goes_last_and_plain_strings_work():
    ranking = cascade().rerank(QUERY.text, [FILLER, "", NEEDLE])
    assert ranking.doc_ids == ("2", "0", "1")


def test_bm25_selector_uses_the_documents_own_term_statistics():
    # "court" is in every passage of this document, "bail" in one: the rare term decides
    text = "court bail matter " + " ".join(["court court hearing adjourned"] * 5)
    passages = split_passages(text, size=3, stride=3)
    scores = BM25PassageSelector().score("court bail", [passages])[0]
    assert int(np.argmax(scores)) == 0
    assert top_k(np.array([1.0, 3.0, 3.0, 0.5]), 2).tolist() == [1, 2]


@pytest.fixture
def overlap_family(monkeypatch):
    monkeypatch.setitem(registry.FAMILIES, "overlap", f"{__name__}:WordOverlapScorer")


def test_spec_with_inline_options_and_scorer_options(overlap_family):
    reranker = registry.make_reranker(
        "idcm:bm25,overlap:,k=3,size=50,stride=40,aggregate=mean-top2", progress=False, temperature=2.0
    )
    assert (reranker.k, reranker.size, reranker.stride, reranker.aggregation.name) == (3, 50, 40, "mean-top2")
    assert "temperature" not in reranker.scorer.options
    assert reranker.scorer.options == {"progress": False}
    assert reranker.name == "idcm:bm25,overlap,k=3,aggregate=mean-top2"
    keyword = registry.make_reranker("idcm:all,overlap:", k=7)
    assert keyword.k == 7 and keyword.selector is None and keyword.scorer.options == {}


@pytest.mark.parametrize(
    "spec",
    [
        "idcm:",
        "idcm:bm25",
        "idcm:bm25,",
        "idcm:,overlap:",
        "idcm:bm25,k=3",
        "idcm:sparse,overlap:",
        "idcm:bm25,overlap:,k=abc",
        "idcm:bm25,overlap:,k=0",
        "idcm:bm25,overlap:,size=10,stride=20",
        "idcm:bm25,nosuchfamily:x",
        "idcm:bm25,idcm:bm25,overlap:",
    ],
)
def test_bad_specs_are_spec_errors(overlap_family, spec):
    with pytest.raises(SpecError):
        registry.make_reranker(spec)


def test_rerank_run_keeps_the_retrievers_tail():
    corpus = Corpus([long_doc("a"), long_doc("b", NEEDLE, at=3), long_doc("c"), long_doc("d", NEEDLE, at=7)])
    run = Run(MappingProxyType({"q1": Ranking(("a", "b", "c", "d"), (4.0, 3.0, 2.0, 1.0))}), "bm25")
    reranker = cascade(k=1)
    out = reranker.rerank_run([QUERY], run, corpus, depth=3)
    assert out["q1"].doc_ids == ("b", "a", "c", "d")
    assert reranker.stats.scored_pairs == 3


def test_pipeline_stage_spec_reaches_idcm(overlap_family):
    from routerank.pipeline import build

    corpus = Corpus([long_doc("a"), long_doc("b", NEEDLE, at=3), long_doc("c", "anticipatory filler words", at=1)])
    pipeline = build("bm25>>idcm:bm25,overlap:,k=2,size=12,stride=12@2", corpus, cache=False)
    reranker, depth = pipeline.stages[0]
    assert depth == 2 and reranker.k == 2
    run = pipeline.search([QUERY], k=3)
    assert run["q1"].doc_ids[0] == "b"
    assert reranker.stats.scored_pairs == 4


@pytest.mark.slow
def test_minilm_selector_picks_the_passage_that_means_the_query():
    """The real packaged MiniLM: ~5 s on an idle 2-core machine, mostly loading sentence-transformers."""
    reranker = cascade("minilm", k=1, size=8, stride=8)
    doc = Document(
        "d",
        "The weather in the hills was cold and rainy all week. "
        "The court released the accused on bail pending trial. "
        "Lunch was served to the staff at noon in the hall.",
        title="",
    )
    passages = split_passages(doc, 8, 8)
    [chosen] = reranker.select("was the accused granted bail", [passages])
    assert "bail" in chosen[0].text
    cached = len(reranker.selector._vectors)
    reranker.select("weather", [passages])
    assert len(reranker.selector._vectors) == cached == len(passages)


def test_fit_linear_recovers_known_weights_per_document():
    from routerank.rerank.passage_select import fit_linear

    rng = np.random.default_rng(0)
    features = [rng.normal(size=(n, 3)) for n in (5, 9, 12, 7)]
    targets = [
        x @ np.array([2.0, -1.0, 0.0]) * scale + offset
        for x, scale, offset in zip(features, (1.0, 3.0, 0.5, 2.0), (0.0, 10.0, -4.0, 1.0), strict=True)
    ]
    targets.append(np.ones(4))  # a document the scorer could not tell apart is skipped
    features.append(rng.normal(size=(4, 3)))
    weights = fit_linear([x - x.mean(axis=0) for x in features], targets, ["a", "b", "c"], ridge=0.0)
    assert weights["a"] / -weights["b"] == pytest.approx(2.0, rel=0.1)
    assert abs(weights["c"]) < 0.1 * weights["a"]


def test_learned_selector_distilled_from_the_scorer_round_trips(tmp_path):
    from routerank.rerank.passage_select import LinearPassageSelector, fit_linear

    selector = LinearPassageSelector({"bm25": 1.0, "position": 0.0, "first": 0.0})
    docs = [split_passages(long_doc(d, NEEDLE, at=at), 12, 12) for d, at in (("a", 2), ("b", 6), ("c", 0))]
    features = selector.features(QUERY.text, docs)
    assert [f.shape for f in features] == [(8, 3)] * 3
    assert np.allclose(np.concatenate(features).reshape(3, 8, 3).mean(axis=1), 0.0)
    scorer = WordOverlapScorer()
    targets = [scorer.score_pairs([(QUERY.text, p.full_text) for p in passages]) for passages in docs]
    weights = fit_linear(features, targets, selector.names)
    assert weights["bm25"] > 0
    path = LinearPassageSelector(weights).save(tmp_path / "sel.json", scorer="overlap")
    reranker = cascade(f"learned:{path}", k=1)
    assert reranker.name.startswith("idcm:learned:sel.json,overlap")
    chosen = reranker.select(QUERY.text, docs + [[]])
    assert [c[0].index for c in chosen[:3]] == [2, 6, 0] and chosen[3] == []


def test_bad_learned_selector_files(tmp_path):
    from routerank.errors import DataFormatError

    with pytest.raises(SpecError, match="does not exist"):
        cascade(f"learned:{tmp_path / 'missing.json'}")
    (tmp_path / "bad.json").write_text('{"weights": [1, 2]}')
    with pytest.raises(DataFormatError):
        cascade(f"learned:{tmp_path / 'bad.json'}")
    (tmp_path / "odd.json").write_text('{"weights": {"tfidf": 1.0}}')
    with pytest.raises(SpecError, match="not in"):
        cascade(f"learned:{tmp_path / 'odd.json'}")
