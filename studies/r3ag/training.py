"""The train stage of the R3AG experiment, as plain functions over its work dir.

R3AG pooled over all sets or one router per set, whichever earns the higher macro F1 on held-out train queries
(never test ones), then refit on all train labels in that mode; the ablations and the extensibility router (without
`config.extend`, then `add_retriever`) train the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from routerank.r3ag.baselines import best_fixed
from routerank.r3ag.labelling import em_matrix
from routerank.r3ag.labels import RoutingLabels
from routerank.r3ag.router import R3AGConfig, R3AGRouter
from routerank.r3ag.trainer import R3AG_TRAINING, R3AGTrainer
from studies.r3ag.config import VARIANTS

if TYPE_CHECKING:
    from studies.r3ag.experiment import R3AGExperiment

MODES = ("pooled", "per-set")
Setting = tuple[float, float]  # (abstain margin, switch margin)


def fit_router(
    experiment: R3AGExperiment, labels: RoutingLabels, overrides: dict | None = None, name: str = "r3ag"
) -> R3AGRouter:
    """An R3AG router trained on `labels` (both stages through the shared trainer); its default member, which
    `switch_margin` keeps unless another retriever leads it, is the best retrieving member on those labels."""
    features = experiment.features()
    retrieves = any(r not in labels.abstain for r in labels.retrievers)
    default = best_fixed(labels, retrieving=True) if retrieves else ""
    config = R3AGConfig(features=experiment.config.features, **{"default_member": default, **(overrides or {})})
    router = R3AGRouter(labels.retrievers, config, features=features, name=name, abstain=labels.abstain)
    training = replace(R3AG_TRAINING, epochs=experiment.config.epochs)
    R3AGTrainer(router, labels, training=training, features=features(list(labels.queries))).fit()
    return router


def _splits(labels: RoutingLabels, holdout: float, folds: int, seed: int) -> list[tuple[RoutingLabels, RoutingLabels]]:
    """(fit, held-out) pairs: one seeded split holding out `holdout` of the queries (folds 1), or k folds that
    hold out every query once."""
    order = np.random.default_rng(seed).permutation(len(labels))
    if folds == 1:
        cut = max(1, int(round(len(labels) * holdout)))
        parts = [order[:cut]]
    else:
        parts = np.array_split(order, folds)
    return [(labels.subset(np.sort(np.setdiff1d(order, held))), labels.subset(np.sort(held))) for held in parts]


def _held_out_choices(router: R3AGRouter, labels: RoutingLabels, features: Callable, settings: list) -> np.ndarray:
    """[settings, queries] columns the router picks on `labels`, per (abstain margin, switch margin) (one forward
    pass)."""
    cosines = router.scores(features=features(list(labels.queries)))
    return np.stack([router.choose(cosines, m, s) for m, s in settings])


def abstention_check(labels: RoutingLabels, em: np.ndarray, columns: np.ndarray, always: str) -> dict[str, Any]:
    """On the queries routed to an abstaining member (`columns`, one per query), EM with it against EM with the
    always-retrieve member `always` on those same queries; `safe` when abstaining loses no EM (vacuous with none)."""
    abstaining = [labels.column(a) for a in labels.abstain]
    rows = np.flatnonzero(np.isin(columns, abstaining))
    out = {"queries": int(len(rows)), "of": int(len(columns)), "safe": True}
    if len(rows):
        em_r0 = float(em[rows, columns[rows]].mean())
        em_always = float(em[rows, labels.column(always)].mean())
        out.update(em_r0=em_r0, em_always=em_always, safe=em_r0 >= em_always)
    return out


def held_out_routes(
    experiment: R3AGExperiment, train: dict[str, RoutingLabels], settings: list[Setting]
) -> tuple[dict[str, RoutingLabels], dict[str, dict[str, np.ndarray]]]:
    """(each set's held-out labels, fold after fold; mode -> set -> [settings, queries] member columns the routers
    of that mode chose on them): pooled routers fit on every set's fit part, per-set ones on the set's own."""
    config, features = experiment.config, experiment.features()
    splits = {ds: _splits(labels, config.holdout, config.folds, config.seed) for ds, labels in train.items()}
    held: dict[str, dict[str, list]] = {mode: {ds: [] for ds in splits} for mode in MODES}
    outs: dict[str, list[RoutingLabels]] = {ds: [] for ds in splits}  # held-out labels, fold by fold
    for fold in range(len(next(iter(splits.values())))):
        pooled = fit_router(experiment, RoutingLabels.concat([parts[fold][0] for parts in splits.values()]))
        for ds, parts in splits.items():
            fit, out = parts[fold]
            outs[ds].append(out)
            held["pooled"][ds].append(_held_out_choices(pooled, out, features, settings))
            held["per-set"][ds].append(_held_out_choices(fit_router(experiment, fit), out, features, settings))
    out_labels = {ds: RoutingLabels.concat(parts) for ds, parts in outs.items()}
    choices = {mode: {ds: np.concatenate(v, axis=1) for ds, v in sets.items()} for mode, sets in held.items()}
    return out_labels, choices


def _grid(
    experiment: R3AGExperiment,
    train: dict[str, RoutingLabels],
    settings: list[Setting],
    out_labels: dict[str, RoutingLabels],
    choices: dict[str, dict[str, np.ndarray]],
    f1: dict[str, dict[str, np.ndarray]],
) -> list[dict[str, Any]]:
    """Every (mode, abstain margin, switch margin) with its held-out macro F1 and, with `safe_abstention`, its
    abstention check on every set."""
    config = experiment.config
    pooled_best = best_fixed(RoutingLabels.concat(list(train.values())), retrieving=True)
    always = {  # as evaluation's always-retrieve baseline: the best member on the labels that mode trains on
        "pooled": dict.fromkeys(train, pooled_best),
        "per-set": {ds: best_fixed(labels, retrieving=True) for ds, labels in train.items()},
    }
    em = {ds: em_matrix(labels) for ds, labels in out_labels.items()} if config.safe_abstention else {}
    grid = []
    for mode in MODES:
        for i, (m, switch) in enumerate(settings):
            macro = float(np.mean([by_margin[i] for by_margin in f1[mode].values()]))
            entry = {"mode": mode, "margin": m, "switch": switch, "macro": macro}
            if config.safe_abstention:
                checks = {
                    ds: abstention_check(out_labels[ds], em[ds], choices[mode][ds][i], always[mode][ds]) for ds in train
                }
                entry.update(abstention=checks, safe=all(c["safe"] for c in checks.values()))
            grid.append(entry)
    return grid


def choose_mode(experiment: R3AGExperiment) -> dict[str, Any]:
    """Pooled vs per-set R3AG, the abstain margin and the switch margin, chosen together by macro F1 on held-out
    train queries (one split, or k-fold cross-validation with `folds` > 1); ties go to pooled, then to the smaller
    abstain margin, then to the smaller switch margin.

    With `safe_abstention`, margin 2 (never abstain: cosines differ by at most 2) joins the grid, and a (mode,
    margin) pair qualifies only if on every set's held-out queries that it routes to R0, EM with R0 is at least EM
    with the always-retrieve member (the best retrieving member on the train labels of that mode: pooled, or the
    set's own) on the same queries."""
    config = experiment.config
    margins = sorted(set(config.abstain_margins) | ({2.0} if config.safe_abstention else set()))
    settings = [(m, s) for m in margins for s in sorted(set(config.switch_margins))]
    train = {ds: experiment.labels(ds, config.train_split) for ds in config.datasets}
    out_labels, choices = held_out_routes(experiment, train, settings)
    rows = {ds: np.arange(len(labels)) for ds, labels in out_labels.items()}
    f1 = {
        mode: {ds: out_labels[ds].utility[rows[ds], c].mean(1) for ds, c in sets.items()}
        for mode, sets in choices.items()
    }
    grid = _grid(experiment, train, settings, out_labels, choices, f1)
    allowed = [g for g in grid if config.mode in ("auto", g["mode"]) and g.get("safe", True)]
    best = max(allowed, key=lambda g: g["macro"])  # max keeps the first of equals: pooled, then the smaller margin
    at = settings.index((best["margin"], best["switch"]))
    scores = {mode: {ds: float(v[at]) for ds, v in sets.items()} for mode, sets in f1.items()}
    return {
        "held_out_f1": scores,
        "macro": {mode: float(np.mean(list(by_set.values()))) for mode, by_set in scores.items()},
        "grid": grid,
        "chosen": best["mode"],
        "abstain_margin": best["margin"],
        "switch_margin": best["switch"],
        "held_out_share": config.holdout if config.folds == 1 else 1.0,
        "folds": config.folds,
        "safe_abstention": config.safe_abstention,
    }


def training_sets(experiment: R3AGExperiment, mode: str) -> dict[str, RoutingLabels]:
    """Each test set's training labels: all sets' train labels pooled, or the set's own."""
    config = experiment.config
    train = {ds: experiment.labels(ds, config.train_split) for ds in config.datasets}
    if mode == "per-set":
        return train
    pooled = RoutingLabels.concat(list(train.values()))
    return dict.fromkeys(config.datasets, pooled)


def router_dir(experiment: R3AGExperiment, variant: str, dataset: str, mode: str) -> Path:
    """Where a variant's router for `dataset` is saved (one shared folder when training is pooled)."""
    return experiment.work / "routers" / variant / (dataset if mode == "per-set" else "pooled")


def _extend(experiment: R3AGExperiment, labels: RoutingLabels, decision: dict, dataset: str, mode: str) -> float:
    """The extensibility router: trained without `extend`, saved, then `add_retriever(extend)` and saved again;
    returns the seconds adding took."""
    extend, features = experiment.config.extend, experiment.features()
    base = labels.select([r for r in labels.retrievers if r != extend])
    router = fit_router(experiment, base, decision, "r3ag-without-" + extend)
    router.save(router_dir(experiment, f"r3ag-without-{extend}", dataset, mode))
    trainer = R3AGTrainer(
        router,
        base,
        training=replace(R3AG_TRAINING, epochs=experiment.config.epochs),
        features=features(list(base.queries)),
    )
    column = labels.column(extend)
    began = time.perf_counter()
    trainer.add_retriever(extend, labels.quality[:, column], labels.utility[:, column])
    router.name = f"r3ag+{extend}-added"
    router.save(router_dir(experiment, f"r3ag+{extend}-added", dataset, mode))
    return time.perf_counter() - began


def train(experiment: R3AGExperiment) -> None:
    """Choose the mode, then fit every variant and the extensibility router; save them under work/routers."""
    selection = choose_mode(experiment)
    mode, margin = selection["chosen"], selection["abstain_margin"]
    decision = {"abstain_margin": margin, "switch_margin": selection["switch_margin"]}
    record: dict[str, Any] = {"selection": selection, "extend": {}}
    done: dict[int, str] = {}
    for dataset, labels in training_sets(experiment, mode).items():
        if id(labels) in done:
            continue
        done[id(labels)] = dataset
        for variant, overrides in VARIANTS.items():
            router = fit_router(experiment, labels, {**overrides, **decision}, variant)
            router.save(router_dir(experiment, variant, dataset, mode))
        if experiment.config.extend in labels.retrievers:
            seconds = _extend(experiment, labels, decision, dataset, mode)
            record["extend"][dataset if mode == "per-set" else "pooled"] = {"seconds": seconds}
    experiment.write_json(experiment.work / "train.json", record, indent=1)
