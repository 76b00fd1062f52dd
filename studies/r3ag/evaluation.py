"""The evaluate stage of the R3AG experiment, as plain functions over its work dir.

On each set's test labels, a system's F1/EM on a query is the label of the member it routes that query to.
Baselines train on the same train labels as R3AG; the oracles read the test labels (upper bounds).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from statistics import fmean
from typing import TYPE_CHECKING, Any

import numpy as np

from routerank.data.types import Query
from routerank.errors import RouterankError
from routerank.evaluate.significance import paired_test
from routerank.r3ag.baselines import baselines
from routerank.r3ag.labelling import em_matrix
from routerank.r3ag.labels import RoutingLabels, score_routes
from routerank.r3ag.router import R3AGRouter
from studies.r3ag.config import VARIANTS
from studies.r3ag.training import abstention_check, router_dir, training_sets

if TYPE_CHECKING:
    from studies.r3ag.experiment import R3AGExperiment

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


def _routers(
    experiment: R3AGExperiment, dataset: str, mode: str, train_labels: RoutingLabels, test_labels: RoutingLabels
) -> dict[str, Any]:
    """Every system's router on `dataset`: the saved R3AG variants (and `r3ag-argmax` where a margin was chosen),
    then the baselines trained on the same train labels."""
    features, extend = experiment.features(), experiment.config.extend
    names = [*VARIANTS, f"r3ag-without-{extend}", f"r3ag+{extend}-added"]
    routers = {}
    for name in names:
        folder = router_dir(experiment, name, dataset, mode)
        if folder.exists():
            routers[name] = R3AGRouter.load(folder, features=features)
    chosen = routers["r3ag"].config if "r3ag" in routers else None
    if chosen is not None and (chosen.abstain_margin > 0 or chosen.switch_margin > 0):  # the margins' effect, as a row
        plain = R3AGRouter.load(router_dir(experiment, "r3ag", dataset, mode), features=features)
        plain.config, plain.name = replace(plain.config, abstain_margin=0.0, switch_margin=0.0), "r3ag-argmax"
        routers["r3ag-argmax"] = plain
    train_features = features(list(train_labels.queries))
    routers.update(
        baselines(train_labels, test_labels, features, train_features=train_features, seed=experiment.config.seed)
    )
    return routers


def _choices(router: Any, queries: list[Query], features: Callable) -> list[str]:
    if hasattr(router, "net"):
        return [d.choice for d in router.route(queries, features=features([q.text for q in queries]))]
    return [d.choice for d in router.route(queries)]


def _overhead(experiment: R3AGExperiment, router: R3AGRouter, queries: list[Query], labels: RoutingLabels) -> dict:
    """Router seconds per query (query encoding included, cold memo) vs retrieval and generation per query."""
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


def _abstention(choices: list[str], labels: RoutingLabels, em: np.ndarray, always: str) -> dict:
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


def evaluate_set(experiment: R3AGExperiment, dataset: str, mode: str, train_labels: RoutingLabels) -> dict:
    """Every system on `dataset`'s test labels: F1, EM, nDCG@10, routes, the paired tests of R3AG against the best
    non-oracle baseline and the oracle single-best, abstention, overhead and the label means."""
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


def evaluate(experiment: R3AGExperiment) -> None:
    """Evaluate every system on every set's test labels; results.json (per-query F1 dropped after the pooled test)."""
    config = experiment.config
    training = experiment.read_json(experiment.work / "train.json")
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
        experiment.work / "results.json",
        {
            "mode": mode,
            "training": training,
            "sets": results,
            "average": average,
            "samples": samples,
            "config": config.__dict__,
        },
        indent=1,
    )


def average_test(per_query: dict[str, dict[str, dict[str, float]]], results: dict) -> dict:
    """R3AG against the baseline with the best F1 averaged over the sets (`baseline_averages`, as the report's
    target names it), as one paired test over every set's test queries together (ids prefixed by set). With equal
    test samples per set, the pooled mean is the mean over sets."""
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
