"""Distil the expensive scorer into IDCM's cheap selector (the paper's recipe, in its smallest form).

    python bench/idcm_distill.py --scorer ce:$HOME/.cache/routerank/models/ce-scifact-bce \
        --out ~/.cache/routerank/models/idcm-selector-aila

On the train split, the scorer reads every passage of each query's BM25 top `depth` documents; a linear mix of
within-document selector features is then fitted to those scores (`passage_select.fit_linear`). Two selectors
are written: `<out>-cheap.json` (bm25, position, first: no neural encoder at query time) and `<out>-mix.json`
(those plus the MiniLM cosine). Use them as `idcm:learned:<file>,<scorer>`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from routerank.data.registry import load_dataset
from routerank.pipeline import build
from routerank.rerank.passage_select import FEATURES, LinearPassageSelector, fit_linear, top_k
from routerank.rerank.passages import split_passages
from routerank.rerank.registry import make_reranker

FEATURE_SETS = {"cheap": ("bm25", "position", "first"), "mix": FEATURES}


def top_passage_recall(features, targets, weights: dict[str, float], names, k: int) -> float:
    w = np.array([weights.get(name, 0.0) for name in names])
    hits = [int(np.argmax(y)) in top_k(x @ w, k).tolist() for x, y in zip(features, targets, strict=True) if len(y)]
    return float(np.mean(hits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="aila-cases")
    parser.add_argument("--split", default="train")
    parser.add_argument("--scorer", required=True)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--queries", type=int, default=0)
    parser.add_argument("--k", type=int, default=4, help="only for the in-sample top-passage recall it prints")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--stride", type=int, default=96)
    parser.add_argument("--out", required=True, help="path stem; -cheap.json and -mix.json are appended")
    args = parser.parse_args()

    dataset = load_dataset(args.dataset)
    queries = dataset.split_queries(args.split)[: args.queries or None]
    run = build("bm25", dataset.corpus).search(queries, k=args.depth)
    scorer = make_reranker(args.scorer, progress=False)
    extractor = LinearPassageSelector(dict.fromkeys(FEATURES, 1.0))
    features, targets = [], []
    started = time.perf_counter()
    for n, query in enumerate(queries, 1):
        docs = [split_passages(dataset.corpus[d], args.size, args.stride) for d in run[query.id].doc_ids]
        flat = [(query.text, p.full_text) for passages in docs for p in passages]
        scores, start = scorer.score_pairs(flat), 0
        for passages, x in zip(docs, extractor.features(query.text, docs), strict=True):
            features.append(x)
            targets.append(scores[start : start + len(passages)])
            start += len(passages)
        print(f"{n}/{len(queries)} queries, {sum(len(t) for t in targets)} passages scored", file=sys.stderr)
    seconds = time.perf_counter() - started

    summary = {
        "dataset": args.dataset,
        "split": args.split,
        "queries": len(queries),
        "depth": args.depth,
        "docs": len(targets),
        "passages": int(sum(len(t) for t in targets)),
        "scoring_seconds": round(seconds, 1),
        "command": " ".join(["python", *sys.argv]),
        "selectors": {},
    }
    for label, names in FEATURE_SETS.items():
        columns = [FEATURES.index(name) for name in names]
        weights = fit_linear([x[:, columns] for x in features], targets, names)
        path = LinearPassageSelector(weights).save(
            f"{args.out}-{label}.json",
            scorer=args.scorer,
            dataset=args.dataset,
            split=args.split,
            queries=len(queries),
            depth=args.depth,
            passage_size=args.size,
            passage_stride=args.stride,
        )
        recall = top_passage_recall(features, targets, weights, FEATURES, args.k)
        summary["selectors"][label] = {
            "path": str(path),
            "weights": {k: round(v, 4) for k, v in weights.items()},
            f"train_top_passage_recall@{args.k}": round(recall, 4),
        }
    for name in ("bm25", "minilm", "first"):
        recall = top_passage_recall(features, targets, {name: 1.0}, FEATURES, args.k)
        summary["selectors"][f"{name} alone"] = {f"train_top_passage_recall@{args.k}": round(recall, 4)}
    print(json.dumps(summary, indent=2))
    Path(f"{args.out}-summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
