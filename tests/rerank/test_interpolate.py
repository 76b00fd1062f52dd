from __future__ import annotations

import json

import numpy as np
import pytest

from routerank.data.types import Document, Query, Ranking, Run
from routerank.errors import RouterankError, SpecError
from routerank.pipeline import StageSpec, build, canonical, split_stages
from routerank.rerank.base import PairScoringReranker
from routerank.rerank.interpolate import (
    GRID,
    InterpolatedReranker,
    interpolate_runs,
    minmax,
    mix,
    pooled_alpha,
    save_alphas,
    saved_alpha,
)


class ByLength(PairScoringReranker):
    """Scores a document by its length: a scripted reranker whose order is easy to predict."""

    name = "bylength"

    def __init__(self, folder=None):
        self.folder = folder

    def score_pairs(self, pairs):
        return np.array([float(len(doc)) for _, doc in pairs])


def test_minmax_and_mix_endpoints():
    np.testing.assert_allclose(minmax(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])
    np.testing.assert_allclose(minmax(np.array([7.0, 7.0])), [0.5, 0.5])
    rerank, first = [1.0, 3.0, 2.0], [30.0, 10.0, 20.0]
    assert list(np.argsort(-mix(rerank, first, 1.0))) == [1, 2, 0]
    assert list(np.argsort(-mix(rerank, first, 0.0))) == [0, 2, 1]
    np.testing.assert_allclose(mix(rerank, first, 0.5), [0.5, 0.5, 0.5])


@pytest.mark.parametrize(
    "spec, stages",
    [
        ("bm25>>ce:m@50", [StageSpec("ce:m", 50, None)]),
        ("bm25>>ce:m@50~0.3", [StageSpec("ce:m", 50, 0.3)]),
        ("bm25>>ce:~/models/x@100~auto", [StageSpec("ce:~/models/x", 100, "auto")]),
        ("bm25>>ce:~/models/x", [StageSpec("ce:~/models/x", 100, None)]),
        ("hybrid>>pointwise~1", [StageSpec("pointwise", 100, 1.0)]),
        ("bm25>>ce:a@100~0.5>>pointwise@10", [StageSpec("ce:a", 100, 0.5), StageSpec("pointwise", 10, None)]),
    ],
)
def test_stage_specs_parse_depth_and_weight(spec, stages):
    assert split_stages(spec)[1] == stages


@pytest.mark.parametrize("spec", ["bm25>>ce:m@100~1.5", "bm25>>ce:m@100~x", "bm25>>ce:m@100~", "bm25>>ce:m@0"])
def test_bad_weights_and_depths_are_spec_errors(spec):
    with pytest.raises(SpecError):
        split_stages(spec)


def test_canonical_first_stage_expands_aliases():
    assert canonical(" hybrid ") == "rrf(bm25,dense)" == canonical("rrf(bm25, dense)")


def _docs():
    return {f"d{i}": Document(f"d{i}", "x" * (10 * (i + 1))) for i in range(5)}


def test_interpolated_run_mixes_and_keeps_the_tail():
    from routerank.data.types import Corpus

    corpus = Corpus(_docs().values())
    first = Run({"q": Ranking(("d0", "d1", "d2", "d3", "d4"), (5.0, 4.0, 3.0, 2.0, 1.0))})
    reranker = ByLength()
    full = InterpolatedReranker(reranker, 1.0).rerank_run([Query("q", "length")], first, corpus, depth=3)
    assert full["q"].doc_ids == ("d2", "d1", "d0", "d3", "d4")  # longest first, the tail kept below in order
    none = InterpolatedReranker(reranker, 0.0).rerank_run([Query("q", "length")], first, corpus, depth=3)
    assert none["q"].doc_ids == first["q"].doc_ids
    half = InterpolatedReranker(reranker, 0.6).rerank_run([Query("q", "length")], first, corpus, depth=3)
    expected = mix([10.0, 20.0, 30.0], [5.0, 4.0, 3.0], 0.6)
    np.testing.assert_allclose(half["q"].scores[:3], np.sort(expected)[::-1])
    assert half["q"].doc_ids[3:] == ("d3", "d4")
    with pytest.raises(RouterankError, match="lacks"):
        interpolate_runs(Run({"q": Ranking(("d0",), (1.0,))}), first, 3, 0.5)


def test_the_pooled_alpha_maximises_the_mean_curve_and_a_tie_goes_to_the_smaller_alpha():
    peaked = [1.0 - abs(a - 0.3) for a in GRID]  # best at 0.3
    flat_high = [0.5 + 0.5 * a for a in GRID]  # best at 1.0
    alpha, curve = pooled_alpha([peaked, flat_high])
    mean = (np.array(peaked) + np.array(flat_high)) / 2
    assert alpha == GRID[int(np.argmax(mean))] and curve == [round(v, 5) for v in mean]
    assert all(isinstance(v, float) for v in curve)
    assert pooled_alpha([peaked]) == (0.3, [round(v, 5) for v in peaked])
    assert pooled_alpha([[0.7] * len(GRID)])[0] == 0.0
    with pytest.raises(SpecError, match="no alpha curves"):
        pooled_alpha([])
    with pytest.raises(SpecError, match="one value per grid point"):
        pooled_alpha([peaked, peaked[:-1]])


def test_saved_weights_are_found_per_corpus_then_pooled_and_missing_ones_say_how_to_make_them(tmp_path):
    from routerank.data.types import Corpus

    corpus = Corpus(_docs().values())
    other = Corpus([Document("z", "other corpus")])
    reranker = ByLength(folder=tmp_path)
    with pytest.raises(RouterankError, match="tune-alpha"):
        saved_alpha(reranker, "bm25", corpus)
    record = {"pooled": {"alpha": 0.4}, "by_corpus": {corpus.fingerprint: {"dataset": "tiny", "alpha": 0.9}}}
    path = save_alphas(reranker, "bm25", record)
    assert path == tmp_path / "interpolation.json" and json.loads(path.read_text())["bm25"] == record
    assert saved_alpha(reranker, "bm25", corpus) == 0.9
    assert saved_alpha(reranker, "bm25", other) == 0.4
    first = Run({"q": Ranking(("d0", "d1", "d2"), (3.0, 2.0, 1.0))})
    auto = InterpolatedReranker(reranker, first_stage="bm25").rerank_run([Query("q", "q")], first, corpus, depth=3)
    fixed = InterpolatedReranker(reranker, 0.9).rerank_run([Query("q", "q")], first, corpus, depth=3)
    assert auto["q"] == fixed["q"]


def test_a_pipeline_spec_interpolates_a_real_cross_encoder(scifact, fresh_ce, tmp_path):
    queries = scifact.split_queries("test")[:2]
    plain = build(f"bm25>>ce:{fresh_ce}@10", scifact.corpus, reranker_options={"progress": False})
    mixed = build(f"bm25>>ce:{fresh_ce}@10~0.5", scifact.corpus, reranker_options={"progress": False})
    bm25 = build("bm25", scifact.corpus).search(queries, 10)
    plain_run, mixed_run = plain.search(queries, 10), mixed.search(queries, 10)
    assert mixed.name.endswith("~0.5@10")
    for query in queries:
        expected = interpolate_runs(plain_run, bm25, 10, 0.5)[query.id]
        assert mixed_run[query.id].doc_ids == expected.doc_ids
        np.testing.assert_allclose(mixed_run[query.id].scores, expected.scores)
    import shutil

    untuned = shutil.copytree(fresh_ce, tmp_path / "untuned", ignore=shutil.ignore_patterns("interpolation.json"))
    with pytest.raises(RouterankError, match="no interpolation weight"):
        build(f"bm25>>ce:{untuned}@10~auto", scifact.corpus).search(queries, 10)
