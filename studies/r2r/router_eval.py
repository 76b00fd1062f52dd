"""Expert-routing accuracy on held-out test queries: the Latent Semantic Router and its baselines.

    python -m studies.r2r.router_eval --train-per-domain 300 --test-per-domain 300

Domains: scifact (science), nfcorpus (medical), tatqa (finance), coliee-statutes (legal). Routers train on
train-split queries only and are scored on test-split queries. The generalist threshold is chosen on dev data
(held-out train queries vs xquad-en queries, a domain with no expert) and measured on squad-dev queries.
Writes reports/routing.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from routerank.data.registry import load_dataset
from routerank.data.types import Query
from routerank.fsutil import atomic_write, cache_root
from routerank.models.llm import load_causal_lm
from routerank.r2r.routers import CentroidRouter, OracleRouter, RandomRouter, SoftmaxRouter, calibrate_threshold
from routerank.rerank.pointwise import PointwiseLLMReranker
from routerank.retrieve.dense import DenseRetriever
from routerank.route import GENERALIST
from studies.cli import run_main

DOMAINS = {"scifact": "science", "nfcorpus": "medical", "tatqa": "finance", "coliee-statutes": "legal"}
OOD_DEV, OOD_TEST = "xquad-en", "squad-dev"


def sample(items: list, n: int | None, seed: int) -> list:
    """A seeded sample of `n` items (all of them when `n` is None or not smaller)."""
    if n is None or n >= len(items):
        return items
    return random.Random(seed).sample(items, n)


def cached_features(name: str, texts: list[str], encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """`encode(texts)`, cached on disk under `<cache>/features/` by the texts and `name`."""
    digest = hashlib.sha256(("\x00".join(texts) + name).encode()).hexdigest()[:16]
    path = cache_root() / "features" / f"{name}-{digest}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    start = time.perf_counter()
    values = encode(texts)
    print(f"{name}: encoded {len(texts)} texts in {time.perf_counter() - start:.1f}s")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as out:
        np.save(out, values, allow_pickle=False)
    return values


def metrics(truth: list[str], predicted: list[str], labels: list[str]) -> dict:
    """Accuracy, macro F1 over `labels`, and the confusion counts (the generalist a column of its own)."""
    truth_a, pred_a = np.asarray(truth), np.asarray(predicted)
    f1s = []
    for label in labels:
        tp = np.sum((pred_a == label) & (truth_a == label))
        precision = tp / max(np.sum(pred_a == label), 1)
        recall = tp / max(np.sum(truth_a == label), 1)
        f1s.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    columns = [*labels, GENERALIST]
    confusion = [[int(np.sum((truth_a == t) & (pred_a == p))) for p in columns] for t in labels]
    return {
        "accuracy": float(np.mean(truth_a == pred_a)),
        "macro_f1": float(np.mean(f1s)),
        "confusion": {"rows": labels, "columns": columns, "counts": confusion},
    }


def standard_routers(labels: list[str]) -> dict[str, tuple[str, object]]:
    """Title -> (feature set, unfitted router): the latent router, its MLP variant and the learned baselines.
    Features are precomputed (`fit`/`predict_proba` get `features=`), so the routers never encode text."""

    def unused(_texts):
        raise AssertionError("features are precomputed")

    return {
        "latent-linear (backbone h_q)": ("backbone", SoftmaxRouter(labels, unused, name="latent-linear")),
        "latent-mlp (backbone h_q)": ("backbone", SoftmaxRouter(labels, unused, hidden=256, name="latent-mlp")),
        "logreg (MiniLM)": ("minilm", SoftmaxRouter(labels, unused, name="minilm-logreg")),
        "centroid (backbone h_q)": ("backbone", CentroidRouter(labels, unused)),
        "centroid (MiniLM)": ("minilm", CentroidRouter(labels, unused)),
    }


def evaluate_routers(
    labels: list[str],
    train: list[tuple[str, str]],
    test: list[tuple[str, str, str]],
    features: dict[tuple[str, str], np.ndarray],
    *,
    threshold: float = 0.0,
    seed: int = 13,
) -> tuple[dict[str, dict], dict[str, tuple[object, np.ndarray, list[str]]]]:
    """Fit every standard router on `train` (text, label) and score it on `test` (id, text, label), with the
    random and oracle routers beside them. `features[(encoder, "train" | "test")]` are precomputed query features.
    A query whose top probability is under `threshold` goes to the generalist.

    Returns (title -> report row, title -> (fitted router, test probabilities, test predictions)).
    """
    texts = [t for _, t in train]
    y_train, y_test = [label for _, label in train], [label for _, _, label in test]
    test_texts = [t for _, t, _ in test]
    rows: dict[str, dict] = {}
    fitted: dict[str, tuple[object, np.ndarray, list[str]]] = {}
    for title, (encoder, router) in standard_routers(labels).items():
        start = time.perf_counter()
        router.fit(texts, y_train, features=features[encoder, "train"])
        fit_seconds = time.perf_counter() - start
        probs = router.predict_proba(test_texts, features=features[encoder, "test"])
        predicted = [
            labels[i] if p[i] >= threshold else GENERALIST for p, i in zip(probs, probs.argmax(1), strict=True)
        ]
        rows[title] = {"features": encoder, "fit_seconds": fit_seconds, **metrics(y_test, predicted, labels)}
        fitted[title] = (router, probs, predicted)
    queries = [Query(qid, text) for qid, text, _ in test]
    baselines = {
        "random": RandomRouter(labels, seed=seed),
        "oracle": OracleRouter(labels, {qid: label for qid, _, label in test}),
    }
    for title, router in baselines.items():
        rows[title] = {"features": None, **metrics(y_test, [d.choice for d in router.route(queries)], labels)}
    return rows, fitted


def prefixed(dataset: str, queries: list[Query]) -> list[Query]:
    """Queries with ids `<dataset>:<id>`: ids collide across datasets."""
    return [replace(q, id=f"{dataset}:{q.id}") for q in queries]


Labelled = list[tuple[Query, str]]


def routing_queries(args: argparse.Namespace) -> tuple[Labelled, Labelled, Labelled, list[Query], list[Query]]:
    """(train, dev, test, OOD dev, OOD test): per domain a seeded train sample (its last 50 held out as dev) and a
    seeded test sample, ids `<dataset>:<id>`; the out-of-domain sets' seeded samples."""
    train, dev, test = [], [], []
    for name, label in DOMAINS.items():
        ds = load_dataset(name)
        pool = prefixed(name, sample(ds.split_queries("train"), args.train_per_domain + 50, args.seed))
        train += [(q, label) for q in pool[:-50]]
        dev += [(q, label) for q in pool[-50:]]
        test += [(q, label) for q in prefixed(name, sample(ds.split_queries("test"), args.test_per_domain, args.seed))]
    ood_dev = sample(list(load_dataset(OOD_DEV).queries.values()), args.ood_per_set, args.seed)
    ood_test = sample(list(load_dataset(OOD_TEST).queries.values()), args.ood_per_set, args.seed)
    return train, dev, test, ood_dev, ood_test


def encoders() -> dict[str, Callable[[list[str]], np.ndarray]]:
    """The two query encoders routers are fitted on: the SmolLM2 backbone's hidden state, and MiniLM."""
    backbone = PointwiseLLMReranker.from_model(*load_causal_lm("smollm2"), progress=False)
    minilm = DenseRetriever(progress=False)
    return {"backbone": backbone.hidden_state, "minilm": lambda texts: minilm.encode(texts, progress=False)}


def generalist_threshold(
    router: Any,
    probs: np.ndarray,
    predicted: list[str],
    y_test: list[str],
    feats: Mapping[tuple[str, str], np.ndarray],
    groups: Mapping[str, list[str]],
    encoder: str,
) -> dict[str, float]:
    """The threshold chosen on dev (in-domain dev vs OOD dev), and what it does on the test and OOD test sets."""
    threshold = calibrate_threshold(
        router.predict_proba(groups["dev"], features=feats[encoder, "dev"]),
        router.predict_proba(groups["ood_dev"], features=feats[encoder, "ood_dev"]),
    )
    kept = probs.max(1) >= threshold
    ood = router.predict_proba(groups["ood_test"], features=feats[encoder, "ood_test"]).max(1) >= threshold
    return {
        "threshold": threshold,
        "in_domain_kept": float(kept.mean()),
        "in_domain_accuracy_with_fallback": float(
            np.mean([p == t and k for p, t, k in zip(predicted, y_test, kept, strict=True)])
        ),
        "ood_sent_to_generalist": float(1 - ood.mean()),
    }


def evaluate(args: argparse.Namespace) -> None:
    """Fit and score every router, choose each one's generalist threshold, and write the report."""
    train, dev, test, ood_dev, ood_test = routing_queries(args)
    labels = list(DOMAINS.values())
    groups = {
        "train": [q.text for q, _ in train],
        "dev": [q.text for q, _ in dev],
        "test": [q.text for q, _ in test],
        "ood_dev": [q.text for q in ood_dev],
        "ood_test": [q.text for q in ood_test],
    }
    encode = encoders()
    feats = {
        (enc, g): cached_features(f"{enc}-{g}", texts, encode[enc]) for enc in encode for g, texts in groups.items()
    }
    rows, fitted = evaluate_routers(
        labels,
        [(q.text, label) for q, label in train],
        [(q.id, q.text, label) for q, label in test],
        {key: value for key, value in feats.items() if key[1] in ("train", "test")},
        seed=args.seed,
    )
    y_test = [label for _, label in test]
    report = {
        "domains": DOMAINS,
        "train_queries": len(train),
        "test_queries": len(test),
        "seed": args.seed,
        "command": "python -m studies.r2r.router_eval "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "output"),
        "routers": rows,
    }
    for title, (router, probs, predicted) in fitted.items():
        row = rows[title]
        row["generalist_threshold"] = generalist_threshold(
            router, probs, predicted, y_test, feats, groups, row["features"]
        )
        print(
            f"{title:<30} acc {row['accuracy']:.4f}  macro-F1 {row['macro_f1']:.4f}  threshold "
            f"{row['generalist_threshold']['threshold']:.3f}: OOD->generalist "
            f"{row['generalist_threshold']['ood_sent_to_generalist']:.3f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.output) as out:
        json.dump(report, out, indent=2)
        out.write("\n")
    print(f"wrote {args.output}")


def main(argv: Sequence[str] | None = None) -> None:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m studies.r2r.router_eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--train-per-domain", type=int, default=300)
    parser.add_argument("--test-per-domain", type=int, default=300)
    parser.add_argument("--ood-per-set", type=int, default=200)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--output", type=Path, default=Path("reports/routing.json"))
    run_main(parser, evaluate, argv)


if __name__ == "__main__":
    main()
