"""ICR and listwise reranking of BM25 candidates on a seeded SciFact test sample, and their cost as N grows.

    .venv/bin/python bench/listwise_icr.py icr       # nDCG@10: BM25 vs ICR over layer choices
    .venv/bin/python bench/listwise_icr.py listwise  # nDCG@10: BM25 vs listwise, with parse repairs
    .venv/bin/python bench/listwise_icr.py latency   # seconds and forward passes per query at N = 10/20/50

Each part updates its own key of reports/listwise-icr.json. ICR attention arrays are cached per query under the
routerank cache, so layer variants are re-scored without running the model again.
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
from routerank.fsutil import cache_root
from routerank.pipeline import build
from routerank.rerank.icr import ICRReranker, layer_range

REPORT = Path(__file__).resolve().parents[1] / "reports" / "listwise-icr.json"


def sample(ds, n: int, seed: int):
    return random.Random(seed).sample(ds.split_queries("test"), n)


def bm25_run(ds, queries, depth: int) -> Run:
    return build("bm25", ds.corpus).search(queries, depth)


def ndcg(run: Run, qrels, name: str):
    return evaluate(Run(run.rankings, name), qrels, "nDCG@10")


def compare(baseline, system) -> dict:
    test = paired_test(baseline.per_query["nDCG@10"], system.per_query["nDCG@10"])
    return {
        "nDCG@10": round(system["nDCG@10"], 4),
        "delta_vs_bm25": round(test.delta, 4),
        "randomization_p": round(test.randomization_pvalue, 4),
    }


def load_model():
    from routerank.models.llm import load_causal_lm

    return load_causal_lm("smollm2", device="cpu")


def icr_attention(args, ds, queries, run: Run, reranker: ICRReranker) -> tuple[dict, list[float]]:
    """Each query's (attention, calibration) arrays, from the cache or the model; and the seconds of each model run."""
    sink = "-keepsink" if args.keep_sink else ""
    folder = cache_root() / "bench" / f"icr-scifact-d{args.depth}-t{args.max_doc_tokens}{sink}"
    folder.mkdir(parents=True, exist_ok=True)
    attention, seconds = {}, []
    for i, query in enumerate(queries):
        path = folder / f"{query.id}.npz"
        if not path.exists():
            docs = [ds.corpus[d] for d in run[query.id].doc_ids]
            start = time.perf_counter()
            att = reranker.attention(query, docs)
            seconds.append(time.perf_counter() - start)
            np.savez(path, query=att.query, calibration=att.calibration, seconds=seconds[-1])
            print(f"[{i + 1}/{len(queries)}] {query.id} {seconds[-1]:.1f}s", file=sys.stderr, flush=True)
        with np.load(path) as saved:
            attention[query.id] = (saved["query"], saved["calibration"])
    return attention, seconds


def icr_rerun(attention: dict, queries, run: Run, layers: range, calibrate: bool = True) -> Run:
    """ICR's ranking of `run`'s candidates from the cached attention summed over `layers` (minus calibration)."""
    out = {}
    for query in queries:
        real, null = attention[query.id]
        score = real[layers.start : layers.stop].sum((0, 1))
        if calibrate:
            score = score - null[layers.start : layers.stop].sum((0, 1))
        out[query.id] = Ranking.from_scores(dict(zip(run[query.id].doc_ids, score.tolist(), strict=True)))
    return Run(MappingProxyType(out))


def random_order_ndcg(queries, run: Run, qrels, seeds: int = 20) -> list[float]:
    """nDCG@10 of the same candidates in a random order, once per seed."""
    return [
        ndcg(
            Run(
                MappingProxyType(
                    {
                        q.id: Ranking.from_scores(
                            dict(
                                zip(
                                    run[q.id].doc_ids,
                                    np.random.default_rng(seed).random(len(run[q.id])).tolist(),
                                    strict=True,
                                )
                            )
                        )
                        for q in queries
                    }
                )
            ),
            qrels,
            "random",
        )["nDCG@10"]
        for seed in range(seeds)
    ]


def icr_layer_results(attention: dict, queries, run: Run, qrels, base) -> tuple[dict, dict, list[float]]:
    """(ICR per layer choice vs BM25, mid vs all layers, nDCG@10 of each single layer)."""
    num_layers = next(iter(attention.values()))[0].shape[0]
    variants = {
        "all": "all",
        "mid": "mid",
        "first_third": f"0:{num_layers // 3}",
        "middle_third": f"{num_layers // 3}:{2 * num_layers // 3}",
        "last_third": f"{2 * num_layers // 3}:{num_layers}",
    }
    results, evaluations = {}, {}
    for name, spec in variants.items():
        layers = layer_range(spec, num_layers)
        evaluations[name] = ndcg(icr_rerun(attention, queries, run, layers), qrels, name)
        results[name] = {"layers": f"{layers.start}:{layers.stop}", **compare(base, evaluations[name])}
    mid_vs_all = paired_test(evaluations["all"].per_query["nDCG@10"], evaluations["mid"].per_query["nDCG@10"])
    results["all_uncalibrated"] = {
        "layers": f"0:{num_layers}",
        **compare(base, ndcg(icr_rerun(attention, queries, run, range(num_layers), False), qrels, "raw")),
    }
    per_layer = [
        round(ndcg(icr_rerun(attention, queries, run, range(i, i + 1)), qrels, f"L{i}")["nDCG@10"], 4)
        for i in range(num_layers)
    ]
    mid_vs_all_row = {
        "delta": round(mid_vs_all.delta, 4),
        "randomization_p": round(mid_vs_all.randomization_pvalue, 4),
        "t_p": round(mid_vs_all.t_pvalue, 4),
    }
    return results, mid_vs_all_row, per_layer


def icr_part(args) -> dict:
    """nDCG@10 of BM25 vs ICR over layer choices (and a random order of the same candidates)."""
    ds = load_dataset("scifact")
    queries = sample(ds, args.queries, args.seed)
    qrels = ds.split_qrels("test").subset(q.id for q in queries)
    run = bm25_run(ds, queries, args.depth)
    reranker = ICRReranker.from_model(
        *load_model(), name="smollm2", max_doc_tokens=args.max_doc_tokens, exclude_sink=not args.keep_sink
    )
    attention, seconds = icr_attention(args, ds, queries, run, reranker)
    base = ndcg(run, qrels, "bm25")
    results, mid_vs_all, per_layer = icr_layer_results(attention, queries, run, qrels, base)
    shuffled = random_order_ndcg(queries, run, qrels)
    return {
        "dataset": "scifact",
        "split": "test",
        "queries": len(queries),
        "seed": args.seed,
        "candidates": f"BM25 top {args.depth}",
        "max_doc_tokens": args.max_doc_tokens,
        "model": "SmolLM2-135M-Instruct (packaged Q4_1 GGUF, dequantized, fp32, CPU)",
        "exclude_sink": not args.keep_sink,
        "bm25": {"nDCG@10": round(base["nDCG@10"], 4)},
        "random_order_of_the_same_candidates": {"nDCG@10": round(float(np.mean(shuffled)), 4), "seeds": 20},
        "icr": results,
        "mid_vs_all": mid_vs_all,
        "icr_single_layer_nDCG@10": per_layer,
        "timing": "see the latency part (attention arrays are cached per query, so this part may not run the model)",
        "forward_passes_this_run": reranker.forward_passes,
        "queries_scored_this_run": len(seconds),
    }


def listwise_part(args) -> dict:
    from routerank.rerank.listwise import ListwiseReranker, Repairs

    ds = load_dataset("scifact")
    queries = sample(ds, args.queries, args.seed)[: args.listwise_queries]
    qrels = ds.split_qrels("test").subset(q.id for q in queries)
    run = bm25_run(ds, queries, args.depth)
    reranker = ListwiseReranker.from_model(
        *load_model(), name="smollm2", window=20, step=10, max_doc_tokens=args.max_doc_tokens
    )
    out, seconds, answers = {}, [], []
    generate = reranker.generate

    def recording(prompt: str) -> str:
        answers.append(generate(prompt))
        return answers[-1]

    reranker.generate = recording
    for i, query in enumerate(queries):
        start = time.perf_counter()
        out[query.id] = reranker.rerank(query, [ds.corpus[d] for d in run[query.id].doc_ids])
        seconds.append(time.perf_counter() - start)
        print(
            f"[{i + 1}/{len(queries)}] {query.id} {seconds[-1]:.1f}s {out[query.id].repairs}",
            file=sys.stderr,
            flush=True,
        )
    base = ndcg(run, qrels, "bm25")
    system = ndcg(Run(MappingProxyType(dict(out))), qrels, "listwise")
    repairs: Repairs = reranker.stats
    return {
        "dataset": "scifact",
        "split": "test",
        "queries": len(queries),
        "seed": args.seed,
        "sample": f"first {len(queries)} of the ICR sample",
        "candidates": f"BM25 top {args.depth}",
        "window": 20,
        "step": 10,
        "max_doc_tokens": args.max_doc_tokens,
        "bm25": {"nDCG@10": round(base["nDCG@10"], 4)},
        "listwise": compare(base, system),
        "repairs": {**{k: getattr(repairs, k) for k in repairs.__dataclass_fields__}, "total": repairs.total},
        "seconds_per_query_mean": round(float(np.mean(seconds)), 2),
        "forward_passes_per_query_mean": round(generate.forward_passes / len(queries), 1),
        "example_answers": answers[:3],
    }


def make_family(family: str, loaded, max_doc_tokens: int):
    """A fresh reranker of one family on an already-loaded (model, tokenizer), its pass counter at zero."""
    if family == "icr":
        return ICRReranker.from_model(*loaded, name="smollm2", max_doc_tokens=max_doc_tokens)
    if family == "listwise":
        from routerank.rerank.listwise import ListwiseReranker

        return ListwiseReranker.from_model(*loaded, name="smollm2", window=20, step=10, max_doc_tokens=max_doc_tokens)
    if family == "pointwise":
        from routerank.rerank.pointwise import PointwiseLLMReranker

        return PointwiseLLMReranker.from_model(*loaded, name="smollm2", max_doc_tokens=max_doc_tokens, progress=False)
    raise ValueError(f"unknown family {family!r}")


def latency_queries_for(family: str, n: int, queries: list) -> list:
    """Listwise at N >= 50 is slow: it times the first query only."""
    return queries[:1] if family == "listwise" and n >= 50 else queries


def latency_rows(
    ds, queries, run: Run, loaded, *, max_doc_tokens: int, ns=(10, 20, 50), families=("icr", "listwise")
) -> list[dict]:
    """Seconds and forward passes per query for each family at each N (BM25 top N of `run`), one row each."""
    rows = []
    for n in ns:
        for family in families:
            reranker = make_family(family, loaded, max_doc_tokens)
            seconds = []
            for query in latency_queries_for(family, n, queries):
                docs = [ds.corpus[d] for d in run[query.id].doc_ids[:n]]
                start = time.perf_counter()
                reranker.rerank(query, docs)
                seconds.append(time.perf_counter() - start)
            prompt_tokens = len(reranker.prefix_ids([d.full_text for d in docs])[0]) if family == "icr" else None
            rows.append(
                {
                    "family": family,
                    "N": n,
                    "queries": len(seconds),
                    "seconds_per_query": round(float(np.mean(seconds)), 2),
                    "forward_passes_per_query": reranker.forward_passes / len(seconds),
                    **({"prompt_tokens_last_query": prompt_tokens} if prompt_tokens else {}),
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def latency_part(args) -> dict:
    ds = load_dataset("scifact")
    queries = sample(ds, args.queries, args.seed)[: args.latency_queries]
    run = bm25_run(ds, queries, 50)
    rows = latency_rows(ds, queries, run, load_model(), max_doc_tokens=args.max_doc_tokens)
    return {
        "dataset": "scifact",
        "queries": f"first {len(queries)} of the ICR sample (listwise N=50: first 1)",
        "candidates": "BM25 top N",
        "max_doc_tokens": args.max_doc_tokens,
        "rows": rows,
        "note": "listwise forward passes = generated tokens (one decoder call each, prefill included)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("icr", "listwise", "latency"))
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--listwise-queries", type=int, default=20)
    parser.add_argument("--latency-queries", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--max-doc-tokens", type=int, default=128)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 avoids OpenMP spin-waits when other jobs share the cores",
    )
    parser.add_argument("--keep-sink", action="store_true", help="icr: score without excluding the first token")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    result = {"part": globals()[f"{args.part}_part"](args)}["part"]
    result["command"] = ".venv/bin/python " + " ".join(shlex.quote(a) for a in sys.argv)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    result["machine"] = {
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "load_average_at_end": os.getloadavg(),
    }
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    report[args.part + ("_keep_sink" if args.keep_sink else "")] = result
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
