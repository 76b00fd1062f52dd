"""The R2R routing stage: fit the latent router and its baselines on train queries, score them on every test query,
time routing alone, and save the bank (the EAG experts plus the router) that `r2r:<work>/bank` names."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from routerank.fsutil import atomic_write
from routerank.r2r.reranker import save_bank
from routerank.retrieve.dense import DenseRetriever
from studies.r2r.router_eval import cached_features, evaluate_routers

if TYPE_CHECKING:
    from studies.r2r.experiment import R2RExperiment

LATENT = "latent-linear"  # the router whose decisions R2R uses (title prefix in `evaluate_routers`)


class LazyMiniLM:
    """MiniLM query embeddings, the model loaded on the first texts that are not cached."""

    def __init__(self) -> None:
        self._retriever: DenseRetriever | None = None

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self._retriever = self._retriever or DenseRetriever(progress=False)
        return self._retriever.encode(texts, progress=False)


def routing_queries(experiment: R2RExperiment) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(train (text, label): a seeded sample of each domain's train queries, test (id, text, label): every test
    query of every domain, ids `<dataset>:<id>`)."""
    c = experiment.config
    train, test = [], []
    for name, label in c.domains.items():
        pool = experiment.dataset(name).split_queries("train")
        pool = random.Random(c.seed).sample(pool, min(c.router_train_queries, len(pool)))
        train += [(q.text, label) for q in pool]
        test += [(f"{name}:{q.id}", q.text, label) for q in experiment.dataset(name).split_queries("test")]
    return train, test


def routing_features(
    backbone_name: str, backbone: Callable, train: list[tuple[str, str]], test: list[tuple[str, str, str]]
) -> dict[tuple[str, str], np.ndarray]:
    """(encoder, "train" | "test") -> query features, from the backbone's hidden state and from MiniLM, cached."""
    feats = {}
    for enc, fn in (("backbone", backbone), ("minilm", LazyMiniLM())):
        for group, texts in (("train", [t for t, _ in train]), ("test", [t for _, t, _ in test])):
            name = f"r2r-{backbone_name if enc == 'backbone' else enc}-{group}"
            feats[enc, group] = cached_features(name.replace("/", "_").replace(":", "_"), texts, fn)
    return feats


def route_seconds(backbone: Callable, test: list[tuple[str, str, str]]) -> float:
    """The latency of routing alone: the router's forward on fresh (uncached) query texts, per query."""
    sample = [t for _, t, _ in test[:: max(1, len(test) // 50)]]
    start = time.perf_counter()
    backbone(sample)
    return (time.perf_counter() - start) / max(len(sample), 1)


def fit_routing(experiment: R2RExperiment) -> dict[str, Any]:
    """Fit the latent router and its baselines on train queries; score them on every test query; save the bank
    and router/routing.json (read back when it exists)."""
    path = experiment.work / "router" / "routing.json"
    if path.exists():
        return json.loads(path.read_text())
    c = experiment.config
    labels = list(c.domains.values())
    train, test = routing_queries(experiment)
    backbone = experiment.bank().hidden_state
    feats = routing_features(c.backbone, backbone, train, test)
    seconds = route_seconds(backbone, test)
    rows, fitted = evaluate_routers(labels, train, test, feats, threshold=c.router_threshold, seed=c.seed)
    report = {
        "train_queries": len(train),
        "test_queries": len(test),
        "labels": labels,
        "route_seconds_per_query": seconds,
        "routers": rows,
        "decisions": {},
    }
    for title, (router, _, predicted) in fitted.items():
        if title.startswith(LATENT):
            report["decisions"] = {qid: p for (qid, _, _), p in zip(test, predicted, strict=True)}
            router.threshold = c.router_threshold
            router.features = backbone
            write_bank(experiment, router)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as out:
        json.dump(report, out, indent=2)
    return report


def write_bank(experiment: R2RExperiment, router: Any) -> None:
    """A bank folder usable as `r2r:<work>/bank` in any pipeline: the EAG experts plus this router."""
    experts = {label: experiment.expert_dir(f"eag-{name}") for name, label in experiment.config.domains.items()}
    # the bank names adapters by domain label; the router predicts labels
    save_bank(experiment.work / "bank", experiment.config.backbone, experts, router)
