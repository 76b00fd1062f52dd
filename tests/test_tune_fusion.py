from __future__ import annotations

import json

import pytest

from routerank.data.devsplit import held_out_queries
from routerank.data.types import Qrels, Ranking, Run
from routerank.errors import RouterankError, SpecError
from routerank.pipeline import fusion_children, parse
from routerank.retrieve.fusion_weights import best_on_grid, choose_weights, fused_spec, weight_grid
from routerank.tune import tune_fusion


def test_weight_grid_covers_the_simplex_corners_included():
    assert weight_grid(2, 0.5) == [(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)]
    three = weight_grid(3, 0.1)
    assert len(three) == 66 and all(abs(sum(w) - 1) < 1e-9 and min(w) >= 0 for w in three)
    assert (1.0, 0.0, 0.0) in three and (0.0, 0.0, 1.0) in three
    with pytest.raises(SpecError, match="divide 1"):
        weight_grid(2, 0.3)
    with pytest.raises(SpecError, match="at least two"):
        weight_grid(1)


def _run(name: str, order: dict[str, list[str]]) -> Run:
    return Run(
        {q: Ranking(tuple(docs), tuple(float(len(docs) - i) for i in range(len(docs)))) for q, docs in order.items()},
        name,
    )


def test_the_weights_follow_the_retriever_that_finds_the_relevant_documents():
    qrels = Qrels({"q1": {"a": 1}, "q2": {"b": 1}})
    good = _run("good", {"q1": ["a", "x", "y", "z"], "q2": ["b", "x", "y", "z"]})
    bad = _run("bad", {"q1": ["x", "y", "z", "a"], "q2": ["x", "y", "z", "b"]})
    choice = choose_weights([bad, good], qrels, step=0.25)
    assert choice["weights"][1] > choice["weights"][0]
    assert choice["nDCG@10"] == pytest.approx(1.0)
    assert len(choice["grid"]) == 5
    corners = {tuple(row["weights"]): row["nDCG@10"] for row in choice["grid"]}
    assert corners[(1.0, 0.0)] < corners[(0.0, 1.0)] == pytest.approx(1.0)


def test_a_tie_goes_to_equal_weights():
    assert best_on_grid([(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)], [0.7, 0.7, 0.7]) == 1
    assert best_on_grid([(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)], [0.7, 0.6, 0.7]) == 0
    assert best_on_grid(weight_grid(3, 0.5), [0.9, 0.9, 0.1, 0.3, 0.2, 0.0]) == 1  # a corner ties a mix
    with pytest.raises(SpecError, match="2 scores for a grid of 3"):
        best_on_grid([(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)], [0.7, 0.6])


def test_choose_weights_refuses_nothing_to_fuse_and_fused_spec_a_weight_count_mismatch():
    with pytest.raises(SpecError, match="no runs"):
        choose_weights([], Qrels({"q1": {"a": 1}}))
    with pytest.raises(SpecError, match="3 weights for 2 retrievers"):
        fused_spec(["bm25", "dense"], [0.2, 0.3, 0.5])
    assert fused_spec(["bm25", "bm25:k1=0.3,b=0.2"], [1.0, 0.0]) == "weighted(1*bm25,0*bm25:k1=0.3,b=0.2)"


def test_fusion_children_and_fused_spec_round_trip():
    assert fusion_children("weighted(0.3*bm25,0.7*dense:st:/m/x)") == ("weighted", ["bm25", "dense:st:/m/x"])
    assert fusion_children("hybrid") == ("rrf", ["bm25", "dense"])
    assert fusion_children("rrf(bm25:k1=0.9,b=0.4,dense)") == ("rrf", ["bm25:k1=0.9,b=0.4", "dense"])
    with pytest.raises(SpecError, match="not a fusion"):
        fusion_children("bm25")
    spec = fused_spec(["bm25", "dense:st:/m/x"], [0.65, 0.35])
    assert spec == "weighted(0.65*bm25,0.35*dense:st:/m/x)"
    assert parse(spec).weights == (0.65, 0.35)


def test_held_out_queries_come_from_a_fine_tuned_models_manifest(nfcorpus, tmp_path):
    ids = [q.id for q in nfcorpus.split_queries("train")[:3]]
    (tmp_path / "routerank_train.json").write_text(
        json.dumps({"sources": {nfcorpus.name: {"dev_split": "train", "dev_queries": ids}}})
    )
    queries, split = held_out_queries(nfcorpus, [None, tmp_path / "missing", tmp_path])
    assert split == "train" and sorted(q.id for q in queries) == sorted(ids)
    assert held_out_queries(nfcorpus, [tmp_path / "missing"]) is None


def test_tune_fusion_chooses_on_dev_queries_and_writes_every_curve(nfcorpus, scifact, tmp_path):
    spec = "weighted(bm25,bm25:k1=0.3,b=0.2)"
    out = tmp_path / "fusion.json"
    record = tune_fusion([nfcorpus.name], spec, dev_queries=6, step=0.5, out=out, progress=False)
    entry = record["datasets"][nfcorpus.name]
    assert entry["dev_split"] == "dev" and entry["dev_queries"] == 6 and len(entry["grid"]) == 3
    assert parse(entry["spec"]).weights == tuple(entry["weights"])
    assert json.loads(out.read_text())["pooled"]["spec"] == record["pooled"]["spec"]
    with pytest.raises(SpecError, match="only weighted"):
        tune_fusion([nfcorpus.name], "rrf(bm25,bm25:k1=0.3)", progress=False)
    with pytest.raises(RouterankError, match="holds out no queries"):
        tune_fusion([scifact.name], spec, progress=False)
