"""Routing labels over real query clusters: four datasets whose queries MiniLM tells apart, each with its own best
retriever, so a router that learns anything routes them well above chance (1 in 5)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from routerank.r3ag.labels import RoutingLabels
from tests.conftest import CachedFeatures, shared_dataset

POOL = ("R0", "bm25", "rm3", "dense", "hybrid")
# dataset -> (best member by quality, best member by utility): on squad-dev retrieval finds good passages (hybrid
# has the best quality) but the generator does better closed-book (R0 has the best utility).
CLUSTERS = {
    "scifact": ("dense", "dense"),
    "tatqa": ("bm25", "bm25"),
    "squad-dev": ("hybrid", "R0"),
    "coliee-statutes": ("rm3", "rm3"),
}
TRAIN, TEST = 40, 20
POOL_CONFIG = Path(__file__).parents[2] / "configs" / "r3ag-pool.toml"


@dataclass
class Clusters:
    train: RoutingLabels
    test: RoutingLabels
    train_x: np.ndarray
    test_x: np.ndarray
    features: object  # texts -> MiniLM features, cached
    cluster: dict[str, str]  # query id -> dataset


def cluster_labels(rows: list[tuple[str, str, str]], rng: np.random.Generator) -> RoutingLabels:
    """rows: (query id, text, dataset). The best member gets about 0.8, the others 0.1-0.4; R0 has quality 0."""
    quality = rng.uniform(0.1, 0.4, (len(rows), len(POOL)))
    utility = rng.uniform(0.1, 0.4, (len(rows), len(POOL)))
    quality[:, 0] = 0.0
    for i, (_, _, dataset) in enumerate(rows):
        best_quality, best_utility = CLUSTERS[dataset]
        quality[i, POOL.index(best_quality)] = rng.uniform(0.75, 0.9)
        utility[i, POOL.index(best_utility)] = rng.uniform(0.75, 0.9)
    return RoutingLabels(
        POOL,
        tuple(r[0] for r in rows),
        tuple(r[1] for r in rows),
        quality,
        utility,
        abstain=("R0",),
        meta={"synthetic": True},
    )


@pytest.fixture(scope="session")
def clusters() -> Clusters:
    from routerank.data.beir import read_queries

    train_rows, test_rows, cluster = [], [], {}
    for dataset in CLUSTERS:
        queries = list(read_queries(shared_dataset(dataset) / "queries.jsonl").values())[: TRAIN + TEST]
        rows = [(f"{dataset}/{q.id}", q.text[:300], dataset) for q in queries]
        cluster.update({qid: dataset for qid, _, _ in rows})
        train_rows += rows[:TRAIN]
        test_rows += rows[TRAIN:]
    rng = np.random.default_rng(0)
    train, test = cluster_labels(train_rows, rng), cluster_labels(test_rows, rng)
    features = CachedFeatures()
    return Clusters(train, test, features(list(train.queries)), features(list(test.queries)), features, cluster)


@pytest.fixture(scope="session")
def r3ag_router(clusters):
    """R3AG trained on the clusters' training labels, for the default pool config."""
    from routerank.r3ag.pool import PoolConfig
    from routerank.r3ag.router import R3AGConfig, R3AGRouter
    from routerank.r3ag.trainer import R3AGTrainer

    router = R3AGRouter(POOL, R3AGConfig(), features=clusters.features, pool=PoolConfig.read(POOL_CONFIG))
    R3AGTrainer(router, clusters.train, features=clusters.train_x).fit()
    return router
