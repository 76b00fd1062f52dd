"""The train and evaluate stages of the R3AG experiment (`r3ag_experiment`), as plain functions over its work dir.

Training: R3AG pooled over all sets or one router per set, whichever earns the higher macro F1 on held-out
train queries (never test ones), then refit on all train labels in that mode; the ablations and the
extensibility router (without `config.extend`, then `add_retriever`) train the same way.

Evaluation on each set's test labels: a system's F1/EM on a query is the label of the member it routes that query
to. Baselines train on the same train labels as R3AG; the oracles read the test labels (upper bounds).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from statistics import fmean

import numpy as np

from routerank.data.types import Query
from routerank.r3ag.labelling import em_matrix
from routerank.r3ag.labels import RoutingLabels, score_routes
from studies.r3ag.experiment import VARIANTS

ORACLES = ("oracle", "oracle-fixed")


def is_baseline(name: str) -> bool:
    """A non-oracle baseline: not an R3AG variant, not an oracle, and not a fixed member (the fixed members are
    compared on test labels, which makes the best of them the oracle single-best)."""
    return not name.startswith(("r3ag", "fixed:")) and name not in ORACLES


def baseline_averages(sets: dict) -> dict[str, float]:
    """Each non-oracle baseline's F1 averaged over the sets (`{set: {"systems": {name: {"f1": ...}}}}`), for the
    baselines every set evaluated."""
    names = [n for n in next(iter(sets.values()))["systems"] if all(n in r["systems"] for r in sets.values())]
    return {n: fmean(r["systems"][n]["f1"] for r in sets.values()) for n in names if is_baseline(n)}


def _router_config(experiment, overrides: dict):
    from routerank.r3ag.router import R3AGConfig

    return R3AGConfig(features=experiment.config.features, **overrides)


def fit_router(experiment, labels: RoutingLabels, overrides: dict | None = None, name: str = "r3ag"):
    """An R3AG router trained on `labels` (both stages through the shared trainer); its default member, which
    `switch_margin` keeps unless another retriever leads it, is the best retrieving member on those labels."""
    from routerank.r3ag.baselines import best_fixed
    from routerank.r3ag.router import R3AGRouter
    from routerank.r3ag.trainer import R3AG_TRAINING, R3AGTrainer

    features = experiment.features()
    retrieves = any(r not in labels.abstain for r in labels.retrievers)
    default = best_fixed(labels, retrieving=True) if retrieves else ""
    config = _router_config(experiment, {"default_member": default, **(overrides or {})})
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


def _held_out_choices(router, labels: RoutingLabels, features, settings) -> np.ndarray:
    """[settings, queries] columns the router picks on `labels`, per (abstain margin, switch margin) (one forward
    pass)."""
    cosines = router.scores(features=features(list(labels.queries)))
    return np.stack([router.choose(cosines, m, s) for m, s in settings])


def abstention_check(labels: RoutingLabels, em: np.ndarray, columns: np.ndarray, always: str) -> dict:
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


def choose_mode(experiment) -> dict:
    """Pooled vs per-set R3AG, the abstain margin and the switch margin, chosen together by macro F1 on held-out
    train queries (one split, or k-fold cross-validation with `folds` > 1); ties go to pooled, then to the smaller
    abstain margin, then to the smaller switch margin.

    With `safe_abstention`, margin 2 (never abstain: cosines differ by at most 2) joins the grid, and a (mode,
    margin) pair qualifies only if on every set's held-out queries that it routes to R0, EM with R0 is at least EM
    with the always-retrieve member (the best retrieving member on the train labels of that mode: pooled, or the
    set's own) on the same queries."""
    from routerank.r3ag.baselines import best_fixed

    config, features = experiment.config, experiment.features()
    margins = sorted(set(config.abstain_margins) | ({2.0} if config.safe_abstention else set()))
    settings = [(m, s) for m in margins for s in sorted(set(config.switch_margins))]
    train = {ds: experiment.labels(ds, config.train_split) for ds in config.datasets}
    splits = {ds: _splits(labels, config.holdout, config.folds, config.seed) for ds, labels in train.items()}
    held: dict[str, dict[str, list]] = {"pooled": {ds: [] for ds in splits}, "per-set": {ds: [] for ds in splits}}
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
    rows = {ds: np.arange(len(labels)) for ds, labels in out_labels.items()}
    f1 = {
        mode: {ds: out_labels[ds].utility[rows[ds], c].mean(1) for ds, c in sets.items()}
        for mode, sets in choices.items()
    }
    pooled_best = best_fixed(RoutingLabels.concat(list(train.values())), retrieving=True)
    always = {  # as evaluation's always-retrieve baseline: the best member on the labels that mode trains on
        "pooled": dict.fromkeys(train, pooled_best),
        "per-set": {ds: best_fixed(labels, retrieving=True) for ds, labels in train.items()},
    }
    em = {ds: em_matrix(labels) for ds, labels in out_labels.items()} if config.safe_abstention else {}
    grid = []
    for mode in ("pooled", "per-set"):
        for i, (m, switch) in enumerate(settings):
            macro = float(np.mean([by_margin[i] for by_margin in f1[mode].values()]))
            entry = {"mode": mode, "margin": m, "switch": switch, "macro": macro}
            if config.safe_abstention:
                checks = {
                    ds: abstention_check(out_labels[ds], em[ds], choices[mode][ds][i], always[mode][ds]) for ds in train
                }
                entry.update(abstention=checks, safe=all(c["safe"] for c in checks.values()))
            grid.append(entry)
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


def training_sets(experiment, mode: str) -> dict[str, RoutingLabels]:
    """Each test set's training labels: all sets' train labels pooled, or the set's own."""
    config = experiment.config
    train = {ds: experiment.labels(ds, config.train_split) for ds in config.datasets}
    if mode == "per-set":
        return train
    pooled = RoutingLabels.concat(list(train.values()))
    return dict.fromkeys(config.datasets, pooled)


def _router_dir(experiment, variant: str, dataset: str, mode: str):
    return experiment.work / "routers" / variant / (dataset if mode == "per-set" else "pooled")


def train(experiment) -> None:
    """Choose the mode, then fit every variant and the extensibility router; save them under work/routers."""
    from routerank.r3ag.trainer import R3AG_TRAINING, R3AGTrainer

    selection = choose_mode(experiment)
    mode, margin = selection["chosen"], selection["abstain_margin"]
    decision = {"abstain_margin": margin, "switch_margin": selection["switch_margin"]}
    extend, features = experiment.config.extend, experiment.features()
    record = {"selection": selection, "extend": {}}
    done: dict[int, str] = {}
    for dataset, labels in training_sets(experiment, mode).items():
        if id(labels) in done:
            continue
        done[id(labels)] = dataset
        for variant, overrides in VARIANTS.items():
            router = fit_router(experiment, labels, {**overrides, **decision}, variant)
            router.save(_router_dir(experiment, variant, dataset, mode))
        if extend in labels.retrievers:
            base = labels.select([r for r in labels.retrievers if r != extend])
            router = fit_router(experiment, base, decision, "r3ag-without-" + extend)
            router.save(_router_dir(experiment, f"r3ag-without-{extend}", dataset, mode))
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
            router.save(_router_dir(experiment, f"r3ag+{extend}-added", dataset, mode))
            record["extend"][dataset if mode == "per-set" else "pooled"] = {"seconds": time.perf_counter() - began}
    experiment.write_json("train.json", record)


def _routers(experiment, dataset: str, mode: str, train_labels: RoutingLabels, test_labels: RoutingLabels):
    from routerank.r3ag.baselines import baselines
    from routerank.r3ag.router import R3AGRouter

    features, extend = experiment.features(), experiment.config.extend
    names = [*VARIANTS, f"r3ag-without-{extend}", f"r3ag+{extend}-added"]
    routers = {}
    for name in names:
        folder = _router_dir(experiment, name, dataset, mode)
        if folder.exists():
            routers[name] = R3AGRouter.load(folder, features=features)
    chosen = routers["r3ag"].config if "r3ag" in routers else None
    if chosen is not None and (chosen.abstain_margin > 0 or chosen.switch_margin > 0):  # the margins' effect, as a row
        plain = R3AGRouter.load(_router_dir(experiment, "r3ag", dataset, mode), features=features)
        plain.config, plain.name = replace(plain.config, abstain_margin=0.0, switch_margin=0.0), "r3ag-argmax"
        routers["r3ag-argmax"] = plain
    train_features = features(list(train_labels.queries))
    routers.update(
        baselines(train_labels, test_labels, features, train_features=train_features, seed=experiment.config.seed)
    )
    return routers


def _choices(router, queries: list[Query], features) -> list[str]:
    if hasattr(router, "net"):
        return [d.choice for d in router.route(queries, features=features([q.text for q in queries]))]
    return [d.choice for d in router.route(queries)]


def _overhead(experiment, router, queries: list[Query], labels: RoutingLabels) -> dict:
    """Router seconds per query (query encoding included, cold memo) vs retrieval and generation per query."""
    from routerank.r3ag.router import R3AGRouter

    encode = experiment.encoder()
    encode([queries[0].text])  # load the encoder outside the timing
    fresh = R3AGRouter(router.retrievers, router.config, features=encode, abstain=router.abstain)
    fresh.net.load_state_dict(router.net.state_dict())
    began = time.perf_counter()
    fresh.route(queries)
    route_s = (time.perf_counter() - began) / max(1, len(queries))
    meta = labels.meta
    generation = {
        name: g["seconds"] / g["generated"] for name, g in meta.get("generation", {}).items() if g.get("generated")
    }
    return {
        "router_s_per_query": route_s,
        "search_s_per_query": dict(meta.get("search_seconds_per_query", {})),
        "generation_s_per_answer": generation,
    }


def _abstention(choices, labels: RoutingLabels, em: np.ndarray, always: str) -> dict:
    """`abstention_check` on the test queries' routes, with F1 beside EM."""
    columns = np.array([labels.column(c) for c in choices])
    out = {**abstention_check(labels, em, columns, always), "always_retrieve": always}
    rows = np.flatnonzero(np.isin(columns, [labels.column(a) for a in labels.abstain]))
    if len(rows):
        out.update(
            f1_r0=float(labels.utility[rows, columns[rows]].mean()),
            f1_always=float(labels.utility[rows, labels.column(always)].mean()),
        )
    return out


def _em_means(labels: RoutingLabels, em: np.ndarray) -> dict[str, float]:
    return dict(zip(labels.retrievers, em.mean(0).tolist(), strict=True))


def _train_means(labels: RoutingLabels) -> dict:
    """The set's own train-label means, to show how far its test labels differ from what routing learned on."""
    return {"f1": labels.mean("utility"), "em": _em_means(labels, em_matrix(labels))}


def evaluate_set(experiment, dataset: str, mode: str, train_labels: RoutingLabels) -> dict:
    from routerank.evaluate.significance import paired_test

    test = experiment.labels(dataset, experiment.config.test_split)
    em = em_matrix(test)
    queries = [Query(q, t) for q, t in zip(test.query_ids, test.queries, strict=True)]
    routers = _routers(experiment, dataset, mode, train_labels, test)
    rows = np.arange(len(test))
    systems, per_query, routes = {}, {}, {}
    for name, router in routers.items():
        choices = routes[name] = _choices(router, queries, experiment.features())
        columns = [test.column(c) for c in choices]
        scores = score_routes(choices, test)
        per_query[name] = dict(zip(test.query_ids, test.utility[rows, columns].tolist(), strict=True))
        systems[name] = {
            "f1": scores.utility,
            "em": float(em[rows, columns].mean()),
            "ndcg10": scores.quality,
            "retrieval_rate": scores.retrieval_rate,
            "oracle_agreement": scores.oracle_agreement,
            "routes": dict(Counter(choices)),
        }
        if name == "r3ag":
            r3ag_choices = choices
    candidates = [n for n in systems if is_baseline(n)]
    best = max(candidates, key=lambda n: systems[n]["f1"])
    test_result = paired_test(per_query[best], per_query["r3ag"], trials=5000, seed=0)
    fixed = paired_test(per_query["oracle-fixed"], per_query["r3ag"], trials=5000, seed=0)
    always = routers["always-retrieve"].choice
    second = experiment.config.generator_eval
    transferred = {"transfer": transfer(routes, test, experiment.eval_labels(dataset), second)} if second else {}
    return {
        **transferred,
        "queries": len(test),
        "systems": systems,
        "best_baseline": best,
        "significance": {
            "baseline": best,
            "delta_f1": test_result.delta,
            "t_pvalue": test_result.t_pvalue,
            "randomization_pvalue": test_result.randomization_pvalue,
        },
        "vs_oracle_fixed": {
            "delta_f1": fixed.delta,
            "t_pvalue": fixed.t_pvalue,
            "randomization_pvalue": fixed.randomization_pvalue,
        },
        "per_query_f1": {name: per_query[name] for name in [*candidates, "r3ag"]},
        "abstention": _abstention(r3ag_choices, test, em, always),
        "overhead": _overhead(experiment, routers["r3ag"], queries, test),
        "label_means": {"f1": test.mean("utility"), "em": _em_means(test, em), "ndcg10": test.mean("quality")},
        "train_label_means": _train_means(experiment.labels(dataset, experiment.config.train_split)),
        "all_members_tie": int((test.utility.max(1) == test.utility.min(1)).sum()),
    }


def transfer(routes: dict[str, list[str]], test: RoutingLabels, other: RoutingLabels, model: str) -> dict:
    """Cross-generator transfer: every system's routes on the test queries (learned from `test`'s generator) scored
    with another generator's labels of the same queries and members; the per-query oracle is recomputed on them."""
    from routerank.errors import RouterankError

    where = {q: i for i, q in enumerate(other.query_ids)}
    missing = [q for q in test.query_ids if q not in where]
    if missing or set(test.retrievers) - set(other.retrievers):
        raise RouterankError(
            f"the second generator's labels lack {len(missing)} test queries or some members",
            fix="build them with the same sample, seed and pool (generator_eval labels)",
        )
    rows, em = np.array([where[q] for q in test.query_ids]), em_matrix(other)
    systems = {}
    for name, choices in routes.items():
        if name == "oracle":  # recomputed on the second generator's labels below
            continue
        columns = [other.column(c) for c in choices]
        systems[name] = {
            "f1": float(other.utility[rows, columns].mean()),
            "em": float(em[rows, columns].mean()),
            "best_share": float(np.mean(other.utility[rows, columns] >= other.utility[rows].max(1) - 1e-9)),
        }
    best = other.utility[rows].argmax(1)
    systems["oracle"] = {
        "f1": float(other.utility[rows, best].mean()),
        "em": float(em[rows, best].mean()),
        "best_share": 1.0,
    }
    return {"model": model, "systems": systems}


def evaluate(experiment) -> None:
    import json

    config = experiment.config
    training = json.loads((experiment.work / "train.json").read_text())
    mode = training["selection"]["chosen"]
    train_sets = training_sets(experiment, mode)
    results = {ds: evaluate_set(experiment, ds, mode, train_sets[ds]) for ds in config.datasets}
    average = average_test({ds: r.pop("per_query_f1") for ds, r in results.items()}, results)
    samples = {
        ds: {
            "train": len(experiment.labels(ds, config.train_split)),
            "test": len(experiment.labels(ds, config.test_split)),
        }
        for ds in config.datasets
    }
    experiment.write_json(
        "results.json",
        {
            "mode": mode,
            "training": training,
            "sets": results,
            "average": average,
            "samples": samples,
            "config": config.__dict__,
        },
    )


def average_test(per_query: dict[str, dict[str, dict[str, float]]], results: dict) -> dict:
    """R3AG against the baseline with the best F1 averaged over the sets (`baseline_averages`, as the report's
    target names it), as one paired test over every set's test queries together (ids prefixed by set). With equal
    test samples per set, the pooled mean is the mean over sets."""
    from routerank.evaluate.significance import paired_test

    averages = baseline_averages(results)
    best = max(averages, key=averages.get)

    def pooled(name: str) -> dict[str, float]:
        return {f"{ds}/{q}": v for ds, rows in per_query.items() for q, v in rows[name].items()}

    r3ag = pooled("r3ag")
    test = paired_test(pooled(best), r3ag, trials=5000, seed=0)
    return {
        "baseline": best,
        "queries": len(r3ag),
        "delta_f1": test.delta,
        "t_pvalue": test.t_pvalue,
        "randomization_pvalue": test.randomization_pvalue,
    }
