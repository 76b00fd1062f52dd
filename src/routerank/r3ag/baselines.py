"""Baselines for retriever routing, all with R3AG's interface: `route(queries) -> [RouteDecision]` naming a member.

    fixed:<name>       always the same member (each single retriever)
    random             a uniformly random member per query
    always-retrieve    the best fixed retrieving (non-R0) member on the training labels
    never-retrieve     always R0
    centroid           RouterRetriever-style: per member, the centroid of the training queries it is best for;
                       the nearest centroid by cosine wins (members never best get no centroid)
    classifier         a softmax classifier on query features predicting each query's best member
    necessity          Adaptive-RAG / SKR in spirit: a classifier on query features predicts whether retrieval
                       helps at all; if not, R0, else the always-retrieve member
    oracle-fixed       the best fixed member measured on the evaluation labels (an upper bound for fixed choices)
    oracle             each query's best member on the evaluation labels (the per-query upper bound)

"Best" is by utility, ties by quality, then by pool order (`RoutingLabels.best`). The learned baselines reuse the
expert routers of `routerank.r2r.routers` over the same frozen features R3AG reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from routerank.errors import RouterankError
from routerank.r2r.routers import CentroidRouter, OracleRouter, RandomRouter, SoftmaxRouter
from routerank.r3ag.labels import RoutingLabels
from routerank.retrieve.base import as_query_list
from routerank.route import RouteDecision

Features = Callable[[list[str]], np.ndarray]
RETRIEVE, ABSTAIN = "retrieve", "abstain"


def _query_ids(queries) -> list[str]:
    return [q.id for q in as_query_list(queries)]


class FixedRouter:
    """Sends every query to one member. labels: the pool's member names; choice: the member; name: for reports."""

    def __init__(self, labels: Sequence[str], choice: str, name: str | None = None):
        if choice not in labels:
            raise RouterankError(f"{choice!r} is not a pool member", fix=f"one of {list(labels)}")
        self.labels, self.choice, self.name = list(labels), choice, name or f"fixed:{choice}"

    def route(self, queries) -> list[RouteDecision]:
        """The one member for every query, with confidence 1."""
        probabilities = {label: float(label == self.choice) for label in self.labels}
        return [RouteDecision(q, self.choice, 1.0, probabilities) for q in _query_ids(queries)]


def best_fixed(labels: RoutingLabels, dimension: str = "utility", *, retrieving: bool = False) -> str:
    """The member with the best mean label (ties by pool order); `retrieving` leaves out R0."""
    means = labels.mean(dimension)
    candidates = [n for n in labels.retrievers if not (retrieving and n in labels.abstain)]
    if not candidates:
        raise RouterankError("no retrieving member in the labels")
    return max(candidates, key=lambda n: (means[n], -labels.retrievers.index(n)))


def always_retrieve(train: RoutingLabels, dimension: str = "utility") -> FixedRouter:
    """Always the retrieving (non-R0) member with the best mean label on `train` (ties by pool order)."""
    return FixedRouter(train.retrievers, best_fixed(train, dimension, retrieving=True), "always-retrieve")


def never_retrieve(labels: RoutingLabels) -> FixedRouter:
    """Always the first abstaining member (R0); labels that name none are refused."""
    if not labels.abstain:
        raise RouterankError("the labels name no abstaining member (R0)", fix="set RoutingLabels.abstain, e.g. ('R0',)")
    return FixedRouter(labels.retrievers, labels.abstain[0], "never-retrieve")


def oracle_fixed(evaluation: RoutingLabels, dimension: str = "utility") -> FixedRouter:
    """Always the member with the best mean label on `evaluation` (ties by pool order): the upper bound for a
    fixed choice."""
    return FixedRouter(evaluation.retrievers, best_fixed(evaluation, dimension), "oracle-fixed")


def oracle(evaluation: RoutingLabels, dimension: str = "utility") -> OracleRouter:
    """Each query's best member on `evaluation` (`RoutingLabels.best`): the per-query upper bound."""
    return OracleRouter(evaluation.retrievers, dict(zip(evaluation.query_ids, evaluation.best(dimension), strict=True)))


def centroid(train: RoutingLabels, features: Features, train_features: np.ndarray | None = None) -> CentroidRouter:
    """A nearest-centroid router over `train`'s queries and their best members (`train_features`: those queries'
    precomputed features)."""
    router = CentroidRouter(train.retrievers, features)
    return router.fit(list(train.queries), train.best(), features=train_features)


def classifier(
    train: RoutingLabels, features: Features, train_features: np.ndarray | None = None, **fit_options
) -> SoftmaxRouter:
    """A softmax classifier trained to predict each `train` query's best member (`train_features`: those queries'
    precomputed features; `fit_options` go to `SoftmaxRouter.fit`)."""
    router = SoftmaxRouter(train.retrievers, features, name="classifier")
    return router.fit(list(train.queries), train.best(), features=train_features, **fit_options)


class NecessityRouter:
    """Retrieve or not, decided by a classifier on query features; a retrieving query goes to one fixed member.

    labels: the pool's member names. gate: a trained two-label router over ("retrieve", "abstain").
    abstain: the R0 member. retrieve_with: the member that serves queries the gate lets through.
    """

    def __init__(self, labels: Sequence[str], gate, abstain: str, retrieve_with: str, name: str = "necessity"):
        self.labels, self.gate, self.name = list(labels), gate, name
        self.abstain, self.retrieve_with = abstain, retrieve_with

    @classmethod
    def fit(
        cls, train: RoutingLabels, features: Features, train_features: np.ndarray | None = None, **fit_options
    ) -> NecessityRouter:
        """The gate learns "abstain" where a non-retrieving member is the best, "retrieve" elsewhere."""
        retrieve_with = always_retrieve(train).choice
        abstain = never_retrieve(train).choice
        targets = [ABSTAIN if best in train.abstain else RETRIEVE for best in train.best()]
        gate = SoftmaxRouter([RETRIEVE, ABSTAIN], features, name="necessity-gate")
        gate.fit(list(train.queries), targets, features=train_features, **fit_options)
        return cls(train.retrievers, gate, abstain, retrieve_with)

    def route(self, queries) -> list[RouteDecision]:
        """R0 where the gate says abstain, `retrieve_with` elsewhere; the decision's probabilities split the gate's
        p(abstain) and 1 - p(abstain) between those two members."""
        out = []
        for decision in self.gate.route(queries):
            p_abstain = decision.probabilities[ABSTAIN]
            choice = self.abstain if decision.choice == ABSTAIN else self.retrieve_with
            probabilities = {label: 0.0 for label in self.labels}
            probabilities[self.abstain], probabilities[self.retrieve_with] = p_abstain, 1.0 - p_abstain
            out.append(RouteDecision(decision.query_id, choice, decision.confidence, probabilities))
        return out


def baselines(
    train: RoutingLabels,
    evaluation: RoutingLabels,
    features: Features,
    *,
    train_features: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, object]:
    """Every baseline by name, trained on `train`; the oracles read `evaluation`."""
    routers: dict[str, object] = {f"fixed:{n}": FixedRouter(train.retrievers, n) for n in train.retrievers}
    routers["random"] = RandomRouter(train.retrievers, seed=seed)
    routers["always-retrieve"] = always_retrieve(train)
    if train.abstain:
        routers["never-retrieve"] = never_retrieve(train)
        routers["necessity"] = NecessityRouter.fit(train, features, train_features)
    routers["centroid"] = centroid(train, features, train_features)
    routers["classifier"] = classifier(train, features, train_features)
    routers["oracle-fixed"] = oracle_fixed(evaluation)
    routers["oracle"] = oracle(evaluation)
    return routers
