from __future__ import annotations

import numpy as np
import pytest

from routerank.data.types import Query
from routerank.errors import RouterankError
from routerank.r3ag.baselines import (
    FixedRouter,
    NecessityRouter,
    always_retrieve,
    baselines,
    best_fixed,
    never_retrieve,
    oracle,
    oracle_fixed,
)
from routerank.r3ag.labels import RoutingLabels, score_routes


def queries(labels: RoutingLabels) -> list[Query]:
    return [Query(qid, text) for qid, text in zip(labels.query_ids, labels.queries, strict=True)]


def choices(router, labels) -> list[str]:
    return [d.choice for d in router.route(queries(labels))]


def accuracy(router, labels) -> float:
    return float(np.mean([c == b for c, b in zip(choices(router, labels), labels.best(), strict=True)]))


def test_fixed_choices_and_their_selection():
    labels = RoutingLabels(
        ("R0", "bm25", "dense"),
        ("q1", "q2"),
        ("a", "b"),
        quality=[[0.0, 0.4, 0.5], [0.0, 0.6, 0.1]],
        utility=[[0.9, 0.3, 0.4], [0.8, 0.5, 0.1]],
        abstain=("R0",),
    )
    assert best_fixed(labels) == "R0" and best_fixed(labels, retrieving=True) == "bm25"
    assert best_fixed(labels, "quality") == "bm25"
    assert choices(always_retrieve(labels), labels) == ["bm25", "bm25"]
    assert choices(never_retrieve(labels), labels) == ["R0", "R0"]
    assert choices(oracle_fixed(labels), labels) == ["R0", "R0"]
    decision = FixedRouter(labels.retrievers, "dense").route(["x"])[0]
    assert decision.choice == "dense" and decision.probabilities == {"R0": 0.0, "bm25": 0.0, "dense": 1.0}
    with pytest.raises(RouterankError, match="not a pool member"):
        FixedRouter(labels.retrievers, "rm3")
    with pytest.raises(RouterankError, match="no abstaining member"):
        never_retrieve(labels.select(["bm25", "dense"]))


def test_per_query_oracle_is_the_upper_bound(clusters):
    routers = baselines(clusters.train, clusters.test, clusters.features, train_features=clusters.train_x)
    assert set(routers) == {
        *(f"fixed:{n}" for n in clusters.train.retrievers),
        "random",
        "always-retrieve",
        "never-retrieve",
        "necessity",
        "centroid",
        "classifier",
        "oracle-fixed",
        "oracle",
    }
    scores = {name: score_routes(choices(r, clusters.test), clusters.test) for name, r in routers.items()}
    assert scores["oracle"].oracle_agreement == 1.0
    assert all(scores["oracle"].utility >= s.utility for s in scores.values())
    assert all(scores["oracle-fixed"].utility >= scores[f"fixed:{n}"].utility for n in clusters.test.retrievers)
    assert scores["never-retrieve"].retrieval_rate == 0.0 and scores["always-retrieve"].retrieval_rate == 1.0
    assert len(set(choices(routers["random"], clusters.test))) >= 4


def test_learned_baselines_route_the_clusters(clusters):
    routers = baselines(clusters.train, clusters.test, clusters.features, train_features=clusters.train_x)
    assert accuracy(routers["centroid"], clusters.test) >= 0.8  # chance is 0.2
    assert accuracy(routers["classifier"], clusters.test) >= 0.8
    assert "hybrid" not in choices(routers["centroid"], clusters.test)  # best nowhere: it has no centroid


def test_necessity_abstains_where_retrieval_does_not_help(clusters):
    router = NecessityRouter.fit(clusters.train, clusters.features, clusters.train_x)
    assert router.retrieve_with == always_retrieve(clusters.train).choice and router.abstain == "R0"
    picked = choices(router, clusters.test)
    squad = [c for c, q in zip(picked, clusters.test.query_ids, strict=True) if q.startswith("squad-dev/")]
    others = [c for c, q in zip(picked, clusters.test.query_ids, strict=True) if not q.startswith("squad-dev/")]
    assert np.mean([c == "R0" for c in squad]) >= 0.8
    assert np.mean([c == router.retrieve_with for c in others]) >= 0.8
    assert set(picked) <= {"R0", router.retrieve_with}
    probabilities = router.route(list(clusters.test.queries[:1]))[0].probabilities
    assert sum(probabilities.values()) == pytest.approx(1.0)


def test_oracle_refuses_queries_without_labels(clusters):
    with pytest.raises(RouterankError, match="no domain"):
        oracle(clusters.test).route(["an unlabelled query"])
