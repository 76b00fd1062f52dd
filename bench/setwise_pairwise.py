"""Setwise and pairwise reranking against pointwise and listwise: nDCG@10, LLM calls and seconds per query.

    .venv/bin/python bench/setwise_pairwise.py                       # all systems, 20 queries
    .venv/bin/python bench/setwise_pairwise.py --systems setwise-heapsort --queries 5

The queries are the first `--queries` of the seeded 40-query SciFact test sample that bench/listwise_icr.py uses,
each reranking its BM25 top `--depth` with SmolLM2-135M-Instruct (fp32, CPU). A system may run on fewer queries
(`--pairwise-queries`), because pairwise prompting costs O(n * top) or O(n^2) LLM calls; the report then also gives
every other system's nDCG@10 on that same subset. Each finished system is written to reports/setwise-pairwise.json
at once, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import sys
import time
from pathlib import Path
from types import MappingProxyType

import numpy as np

from routerank.data.registry import load_dataset
from routerank.data.types import Ranking, Run
from routerank.evaluate.measures import evaluate
from routerank.evaluate.significance import paired_test
from routerank.pipeline import build

REPORT = Path(__file__).resolve().parents[1] / "reports" / "setwise-pairwise.json"
SYSTEMS = ("pointwise", "listwise", "setwise-heapsort", "setwise-bubblesort", "pairwise-bubblesort", "pairwise-allpair")


def make_system(name: str, loaded, args):
    """A fresh reranker on the loaded model, and how to read its LLM calls and forward passes after a query."""
    tokens = args.max_doc_tokens
    if name == "pointwise":
        from routerank.rerank.pointwise import PointwiseLLMReranker

        reranker = PointwiseLLMReranker.from_model(*loaded, name="smollm2", max_doc_tokens=tokens, progress=False)
        return reranker, lambda docs: len(docs)
    if name == "listwise":
        from routerank.rerank.listwise import ListwiseReranker, window_starts

        reranker = ListwiseReranker.from_model(*loaded, name="smollm2", window=20, step=10, max_doc_tokens=tokens)
        return reranker, lambda docs: len(window_starts(len(docs), 20, 10))
    family, method = name.split("-")
    if family == "setwise":
        from routerank.rerank.setwise import SetwiseReranker

        reranker = SetwiseReranker.from_model(*loaded, name="smollm2", k=args.k, method=method, max_doc_tokens=tokens)
    else:
        from routerank.rerank.pairwise import PairwiseReranker

        reranker = PairwiseReranker.from_model(*loaded, name="smollm2", method=method, max_doc_tokens=tokens)
    return reranker, lambda docs: reranker.last_stats.prompts


def run_system(name: str, loaded, ds, queries, bm25: Run, args) -> dict:
    reranker, calls_of = make_system(name, loaded, args)
    rankings, per_query = {}, {}
    for i, query in enumerate(queries):
        docs = [ds.corpus[d] for d in bm25[query.id].doc_ids]
        passes, start = reranker.forward_passes, time.perf_counter()
        rankings[query.id] = reranker.rerank(query, docs)
        seconds = time.perf_counter() - start
        per_query[query.id] = {
            "seconds": round(seconds, 3),
            "llm_calls": calls_of(docs),
            "forward_passes": reranker.forward_passes - passes,
        }
        print(f"{name} [{i + 1}/{len(queries)}] {query.id} {per_query[query.id]}", file=sys.stderr, flush=True)
    return {"run": Run(MappingProxyType(rankings), name), "per_query": per_query}


def summarise(name: str, measured: dict, bm25: Run, qrels, all_runs: dict) -> dict:
    ids = list(measured["per_query"])
    subset = qrels.subset(ids)
    system = evaluate(measured["run"], subset, "nDCG@10")
    base = evaluate(Run(MappingProxyType({q: bm25[q] for q in ids}), "bm25"), subset, "nDCG@10")
    test = paired_test(base.per_query["nDCG@10"], system.per_query["nDCG@10"])
    rows = measured["per_query"].values()
    others = {
        other: round(evaluate(Run(MappingProxyType({q: r[q] for q in ids})), subset, "nDCG@10")["nDCG@10"], 4)
        for other, r in all_runs.items()
        if other != name and all(q in r for q in ids)
    }
    return {
        "queries": len(ids),
        "nDCG@10": round(system["nDCG@10"], 4),
        "bm25_nDCG@10_same_queries": round(base["nDCG@10"], 4),
        "delta_vs_bm25": round(test.delta, 4),
        "randomization_p": round(test.randomization_pvalue, 4),
        "llm_calls_per_query": round(float(np.mean([r["llm_calls"] for r in rows])), 1),
        "forward_passes_per_query": round(float(np.mean([r["forward_passes"] for r in rows])), 1),
        "seconds_per_query": round(float(np.mean([r["seconds"] for r in rows])), 2),
        "others_nDCG@10_same_queries": others,
        "per_query": measured["per_query"],
        "rankings": {q: list(measured["run"][q].doc_ids) for q in ids},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS[:3]) + ["pairwise-bubblesort"])
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--pairwise-queries", type=int, default=None, help="queries for pairwise systems (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-doc-tokens", type=int, default=128)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: no OpenMP spin-waits on shared cores)"
    )
    args = parser.parse_args()
    import torch

    from routerank.models.llm import load_causal_lm

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    ds = load_dataset("scifact")
    queries = random.Random(args.seed).sample(ds.split_queries("test"), 40)[: args.queries]
    qrels = ds.split_qrels("test").subset(q.id for q in queries)
    bm25 = build("bm25", ds.corpus).search(queries, args.depth)
    loaded = load_causal_lm("smollm2", device="cpu")
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    report.setdefault("systems", {})
    runs = {
        name: Run(MappingProxyType({q: saved_ranking(ids) for q, ids in saved["rankings"].items()}))
        for name, saved in report["systems"].items()
    }
    for name in args.systems:
        subset = queries[: args.pairwise_queries] if name.startswith("pairwise") and args.pairwise_queries else queries
        measured = run_system(name, loaded, ds, subset, bm25, args)
        runs[name] = measured["run"]
        report["systems"][name] = summarise(name, measured, bm25, qrels, runs)
        report["setup"] = {
            "dataset": "scifact test",
            "queries": f"first {args.queries} of random.Random({args.seed}).sample(test queries, 40) "
            "(the bench/listwise_icr.py sample)",
            "candidates": f"BM25 (bm25s defaults) top {args.depth}",
            "max_doc_tokens": args.max_doc_tokens,
            "model": "SmolLM2-135M-Instruct (packaged Q4_1 GGUF, dequantized, fp32, CPU)",
            "setwise_k": args.k,
            "listwise": "window 20, step 10 (one window for 20 candidates)",
            "llm_calls": "prompts the LLM answered: pointwise 1 per document, listwise 1 generation per window, "
            "setwise 1 per set, pairwise 1 per ordered pair",
            "forward_passes": "decoder calls: pointwise prefix + batches, listwise generated tokens, setwise/pairwise "
            "batches of prompts",
            "threads": args.threads,
        }
        report["command"] = ".venv/bin/python " + " ".join(shlex.quote(a) for a in sys.argv)
        report["machine"] = {
            "torch": torch.__version__,
            "platform": platform.platform(),
            "load_average_at_end": os.getloadavg(),
        }
        report["wall_seconds_last_run"] = round(time.perf_counter() - started, 1)
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))


def saved_ranking(ids):
    """A saved ranking (ids, best first) as a Ranking with descending scores, so runs from an earlier invocation
    can be compared on a subset."""
    return Ranking(tuple(ids), tuple(float(len(ids) - i) for i in range(len(ids))))


def table(report: dict) -> str:
    lines = [
        "| system | queries | nDCG@10 | BM25 same queries | p vs BM25 | LLM calls / query | forward passes / query "
        "| s / query |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in report["systems"].items():
        lines.append(
            f"| {name} | {row['queries']} | {row['nDCG@10']:.4f} | {row['bm25_nDCG@10_same_queries']:.4f} "
            f"| {row['randomization_p']:.3g} | {row['llm_calls_per_query']:g} | {row['forward_passes_per_query']:g} "
            f"| {row['seconds_per_query']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
