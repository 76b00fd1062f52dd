from __future__ import annotations

import numpy as np
import pytest
import torch

from routerank.errors import RouterankError, SpecError
from routerank.r3ag.pool import PoolConfig, PoolMember
from routerank.r3ag.router import R3AGConfig, R3AGRouter
from routerank.r3ag.trainer import LabelSelection, R3AGTrainer, route_groups
from tests.r3ag.conftest import POOL


def train_router(clusters, labels=None, pool=None, **config) -> R3AGRouter:
    labels = labels if labels is not None else clusters.train
    router = R3AGRouter(labels.retrievers, R3AGConfig(**config), features=clusters.features, pool=pool)
    R3AGTrainer(router, labels, features=clusters.features(list(labels.queries))).fit()
    return router


def accuracy(router, clusters, labels=None) -> float:
    labels = labels if labels is not None else clusters.test
    choices = [d.choice for d in router.route(list(labels.queries))]
    return float(np.mean([c == b for c, b in zip(choices, labels.best(), strict=True)]))


@pytest.fixture
def router(r3ag_router):
    return r3ag_router


def test_router_learns_each_clusters_best_retriever(router, clusters):
    assert accuracy(router, clusters) >= 0.85  # chance is 0.2
    decisions = router.route(list(clusters.test.queries))
    assert {d.choice for d in decisions} == {"dense", "bm25", "R0", "rm3"}
    assert all(abs(sum(d.probabilities.values()) - 1) < 1e-5 for d in decisions)


def test_quality_and_utility_spaces_learn_different_things(router, clusters):
    """squad-dev: hybrid retrieves best (quality space) but R0 answers best (the routing decision)."""
    rows = [i for i, q in enumerate(clusters.test.query_ids) if q.startswith("squad-dev/")]
    with torch.inference_mode():
        quality = router.net.quality_scores(torch.from_numpy(clusters.test_x[rows])).numpy()
    by_quality = np.array(POOL)[quality.argmax(1)]
    routed = [d.choice for d in router.route([clusters.test.queries[i] for i in rows])]
    assert np.mean(by_quality == "hybrid") >= 0.8
    assert np.mean(np.array(routed) == "R0") >= 0.8


def test_save_and_load_give_identical_decisions(router, clusters, tmp_path):
    router.save(tmp_path / "r3ag")
    loaded = R3AGRouter.load(tmp_path / "r3ag", features=clusters.features)
    texts = list(clusters.test.queries)
    assert np.allclose(loaded.scores(texts), router.scores(texts), atol=1e-6)
    assert [d.choice for d in loaded.route(texts)] == [d.choice for d in router.route(texts)]
    assert loaded.pool == router.pool and loaded.config == router.config and loaded.retrievers == router.retrievers
    with pytest.raises(SpecError, match="not an R3AG router folder"):
        R3AGRouter.load(tmp_path / "nothing")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ablation", "missing"),
    [({"quality": False}, "quality."), ({"utility": False}, "utility."), ({"fusion": "mean"}, "attention.")],
)
def test_ablations_change_the_model_and_still_route(router, clusters, ablation, missing):
    ablated = train_router(clusters, **ablation)
    keys, full_keys = set(ablated.net.state_dict()), set(router.net.state_dict())
    assert any(k.startswith(missing) for k in full_keys) and not any(k.startswith(missing) for k in keys)
    assert keys < full_keys
    texts = list(clusters.test.queries)
    assert not np.allclose(ablated.scores(texts), router.scores(texts), atol=1e-3)
    assert accuracy(ablated, clusters) >= 0.6


def test_config_needs_at_least_one_space():
    with pytest.raises(SpecError, match="quality space, the utility space"):
        R3AGConfig(quality=False, utility=False)
    with pytest.raises(SpecError, match="fusion"):
        R3AGConfig(fusion="max")


@pytest.mark.slow
def test_add_retriever_learns_only_its_token(clusters):
    legal = np.array([q.startswith("coliee-statutes/") for q in clusters.train.query_ids])
    pool = PoolConfig.from_specs(dict(zip(POOL, ["null", "bm25", "bm25+rm3", "dense", "hybrid"], strict=True)))
    router = R3AGRouter(POOL, R3AGConfig(), features=clusters.features, pool=pool)
    trainer = R3AGTrainer(router, clusters.train, features=clusters.train_x)
    trainer.fit()
    before = {k: v.clone() for k, v in router.net.state_dict().items()}
    test_texts = list(clusters.test.queries)
    decisions_before = [d.choice for d in router.route(test_texts)]

    trainer.add_retriever("legal", np.where(legal, 0.95, 0.05), np.where(legal, 0.95, 0.05), spec="bm25:k1=0.9")

    after = router.net.state_dict()
    assert set(after) - set(before) == {"tokens.5"}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert router.retrievers[-1] == "legal" and router.pool["legal"].spec == "bm25:k1=0.9"
    assert all(p.requires_grad for p in router.net.parameters())
    decisions = [d.choice for d in router.route(test_texts)]
    is_legal = [q.startswith("coliee-statutes/") for q in clusters.test.query_ids]
    share = np.mean([c == "legal" for c, flag in zip(decisions, is_legal, strict=True) if flag])
    assert share >= 0.7  # 0 before: it was not in the pool
    kept = [a == b for a, b, flag in zip(decisions, decisions_before, is_legal, strict=True) if not flag]
    assert np.mean(kept) >= 0.9  # elsewhere the old members keep their queries
    with pytest.raises(RouterankError, match="already"):
        router.add_retriever("legal", PoolMember("legal", spec="bm25"))


def test_label_selection_makes_groups_from_the_top_and_bottom():
    from routerank.r3ag.labels import RoutingLabels

    labels = RoutingLabels(
        ("R0", "a", "b", "c"),
        ("q1", "q2"),
        ("first", "second"),
        np.array([[0.0, 0.9, 0.9, 0.1], [0.5, 0.5, 0.5, 0.5]]),
        np.zeros((2, 4)),
    )
    groups = route_groups(labels, "quality", "quality", LabelSelection(positives=1))
    assert [(g.positive, g.negatives) for g in groups] == [("a", ("R0", "c")), ("b", ("R0", "c"))]  # q2 all tie
    bottom = route_groups(labels, "quality", "route", LabelSelection(negatives=1))
    assert [g.negatives for g in bottom] == [("R0",), ("R0",)]
    assert route_groups(labels, "quality", "quality", LabelSelection(margin=0.95)) == []
    assert route_groups(labels, "quality", "quality", involving="c")[0].negatives == ("R0", "c")
    with pytest.raises(RouterankError, match="no training groups"):
        R3AGTrainer(R3AGRouter(labels.retrievers, features=lambda t: np.zeros((len(t), 384))), labels.subset([1])).fit()


def test_router_refuses_features_of_the_wrong_width():
    router = R3AGRouter(("R0", "bm25"), features=lambda texts: np.zeros((len(texts), 10)))
    with pytest.raises(RouterankError, match="feature_dim"):
        router.route(["a query"])


def test_abstain_margin_holds_r0_back_unless_it_leads_by_more():
    router = R3AGRouter(("R0", "bm25", "dense"), R3AGConfig(abstain_margin=0.2), abstain=["R0"])
    cosines = np.array(
        [
            [0.9, 0.8, 0.1],  # R0 leads by 0.1: held back, the best retriever (bm25) serves
            [0.9, 0.1, 0.6],  # R0 leads by 0.3: abstains
            [0.1, 0.2, 0.5],  # a retriever wins outright: untouched
            [0.5, 0.3, 0.3],  # R0 leads by exactly the margin: held back; tied retrievers go to the first
        ]
    )
    assert router.choose(cosines).tolist() == [1, 0, 2, 1]
    assert router.choose(cosines, margin=0.0).tolist() == cosines.argmax(1).tolist()
    assert router.choose(cosines, margin=2.0).tolist() == [1, 2, 2, 1]  # never abstains
    with pytest.raises(RouterankError, match="which members abstain"):
        R3AGRouter(("R0", "bm25"), R3AGConfig(abstain_margin=0.1)).choose(cosines[:, :2])
    with pytest.raises(RouterankError, match="not among the retrievers"):
        R3AGRouter(("R0", "bm25"), abstain=["R9"])
    with pytest.raises(SpecError, match="abstain_margin"):
        R3AGConfig(abstain_margin=-0.1)


def test_switch_margin_keeps_the_default_member_unless_another_retriever_leads_it_by_more():
    config = R3AGConfig(abstain_margin=0.2, default_member="bm25", switch_margin=0.25)
    router = R3AGRouter(("R0", "bm25", "dense", "rm3"), config, abstain=["R0"])
    cosines = np.array(
        [
            [0.1, 0.5, 0.7, 0.2],  # dense leads bm25 by 0.2: stays with bm25
            [0.1, 0.3, 0.2, 0.9],  # rm3 leads by 0.6: switches
            [0.9, 0.4, 0.6, 0.1],  # R0 leads dense by 0.3: abstains (the switch rule leaves R0 alone)
            [0.7, 0.4, 0.6, 0.1],  # R0 held back (0.1 lead) to dense, which leads bm25 by 0.2: bm25
            [0.1, 0.8, 0.9, 0.9],  # dense and rm3 lead by 0.1: bm25
        ]
    )
    assert router.choose(cosines).tolist() == [1, 3, 0, 1, 1]
    assert router.choose(cosines, switch=0.0).tolist() == [2, 3, 0, 2, 2]  # the plain rule
    assert router.choose(cosines, margin=0.0, switch=0.0).tolist() == cosines.argmax(1).tolist()
    assert router.choose(cosines, margin=2.0, switch=2.0).tolist() == [1] * 5  # always the default
    with pytest.raises(SpecError, match="needs a default_member"):
        R3AGConfig(switch_margin=0.1)
    with pytest.raises(SpecError, match="switch_margin 3"):
        R3AGConfig(default_member="bm25", switch_margin=3)
    with pytest.raises(RouterankError, match="not a retrieving member"):
        R3AGRouter(("R0", "bm25"), R3AGConfig(default_member="R0"), abstain=["R0"])
    with pytest.raises(RouterankError, match="needs config.default_member"):
        R3AGRouter(("R0", "bm25"), abstain=["R0"]).choose(cosines[:, :2], switch=0.1)


def test_abstain_margin_changes_routes_and_survives_save(router, clusters, tmp_path):
    queries = list(clusters.test.queries)
    plain = [d.choice for d in router.route(queries)]
    assert router.abstain == ["R0"]  # from the pool
    copy = R3AGRouter.load(router.save(tmp_path / "r"), features=clusters.features)  # the fixture is shared
    copy.config = R3AGConfig(abstain_margin=2.0)
    held = [d.choice for d in copy.route(queries)]
    assert "R0" in plain and "R0" not in held
    assert [h for p, h in zip(plain, held, strict=True) if p != "R0"] == [p for p in plain if p != "R0"]
    loaded = R3AGRouter.load(copy.save(tmp_path / "held"), features=clusters.features)
    assert loaded.abstain == ["R0"] and loaded.config.abstain_margin == 2.0
    assert [d.choice for d in loaded.route(queries)] == held
