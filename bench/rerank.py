"""routerank's rerankers side by side in one run.

    python bench/rerank.py                                   # all parts: pointwise,int8,families,idcm
    python bench/rerank.py --parts pointwise --queries 4 --lengths 128
    python bench/rerank.py --parts families --family-queries 1 --family-n 10
    python bench/rerank.py --parts idcm --idcm-queries 1 --idcm-depth 1

pointwise: routerank's pointwise reranker vs a plain Hugging Face loop. The plain loop is what most code does:
same model, same prompt text, fixed batch of 16, left-padded to the longest, full LM head over every position,
yes/no softmax at the last position. Documents are pre-truncated to the same token count for both sides, so the
scores must agree (fp32: within 1e-3). Ratio = routerank docs/s / plain docs/s.
int8: dynamic int8 quantization of the pointwise reranker vs fp32 (CPU only): docs/s and nDCG@10.
families: pointwise, ICR and listwise on the same BM25 top N (N = 10/20/50), seconds and decoder forward passes
per query (listwise at N >= 50: first query only). Uses bench/listwise_icr.py's timing loop.
idcm: the IDCM cascade (BM25 passage selector, k passages per document) vs scoring every passage, same
cross-encoder scorer, on long documents (aila-cases). Uses bench/idcm.py's timed cascade.
Prints a JSON object (each part's wall seconds under "wall_seconds"), then a short table per part.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from routerank.data.registry import load_dataset
from routerank.data.types import sample_queries
from routerank.evaluate import evaluate
from routerank.models.llm import load_causal_lm
from routerank.pipeline import build
from routerank.rerank.pointwise import PointwiseLLMReranker

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package: import its scripts' pieces

PARTS = ("pointwise", "int8", "families", "idcm")
FAMILIES = ("pointwise", "icr", "listwise")


def plain_loop(model, tokenizer, prompts: list[str], batch_size: int = 16) -> np.ndarray:
    import torch

    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    tokenizer.padding_side = "left"
    scores = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(
            prompts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
        )
        with torch.no_grad():
            logits = model(**batch).logits[:, -1, [yes, no]]
        scores.extend(torch.softmax(logits.float(), -1)[:, 0].tolist())
    return np.array(scores)


def sample_pairs(dataset: str, queries: int, depth: int, seed: int):
    ds = load_dataset(dataset, splits=["test"])
    chosen = sample_queries(ds.split_queries("test"), queries, seed)
    run = build("bm25", ds.corpus).search(chosen, depth)
    return ds, chosen, run


def truncate(tokenizer, text: str, tokens: int) -> str:
    ids = tokenizer(" " + text, add_special_tokens=False)["input_ids"][:tokens]
    return tokenizer.decode(ids).strip()


def bench_pointwise(model, tokenizer, ds, queries, run, length: int) -> dict:
    pairs = [(q.text, truncate(tokenizer, ds.corpus[d].full_text, length)) for q in queries for d in run[q.id].doc_ids]
    ours = PointwiseLLMReranker.from_model(model, tokenizer, max_doc_tokens=10_000, progress=False)
    prompts = [ours.template.render(q, d, ours.instruction) for q, d in pairs]
    timings = {}
    for side in ("plain", "routerank", "plain", "routerank"):  # interleaved; best of two per side
        start = time.perf_counter()
        scores = plain_loop(model, tokenizer, prompts) if side == "plain" else ours.score_pairs(pairs)
        elapsed = time.perf_counter() - start
        if elapsed < timings.get(side, (float("inf"),))[0]:
            timings[side] = (elapsed, scores)
    tokens = sum(len(ours.prompt_ids(q, d)) for q, d in pairs)
    plain_t, plain_s = timings["plain"]
    ours_t, ours_s = timings["routerank"]
    return {
        "doc_tokens": length,
        "pairs": len(pairs),
        "prompt_tokens": tokens,
        "plain_docs_per_s": len(pairs) / plain_t,
        "routerank_docs_per_s": len(pairs) / ours_t,
        "ratio": plain_t / ours_t,
        "max_abs_score_diff": float(np.abs(plain_s - ours_s).max()),
    }


def bench_int8(model, tokenizer, ds, queries, run, length: int) -> dict:
    import copy

    qrels = ds.split_qrels("test").subset(q.id for q in queries)
    out = {}
    for label, quantize in (("fp32", None), ("int8", "int8")):
        weights = copy.deepcopy(model) if quantize else model
        reranker = PointwiseLLMReranker.from_model(
            weights, tokenizer, max_doc_tokens=length, progress=False, quantize=quantize
        )
        reranker.score_pairs([(queries[0].text, ds.corpus[run[queries[0].id].doc_ids[0]].full_text)])  # warm-up
        start = time.perf_counter()
        reranked = reranker.rerank_run(queries, run, ds.corpus, depth=len(next(iter(run.rankings.values()))))
        seconds = time.perf_counter() - start
        pairs = sum(len(run[q.id]) for q in queries)
        out[label] = {"docs_per_s": pairs / seconds, "nDCG@10": evaluate(reranked, qrels, "nDCG@10")["nDCG@10"]}
    out["speedup"] = out["int8"]["docs_per_s"] / out["fp32"]["docs_per_s"]
    out["ndcg_change"] = out["int8"]["nDCG@10"] - out["fp32"]["nDCG@10"]
    return out


def bench_families(loaded, ds, queries, ns: list[int], doc_tokens: int) -> dict:
    from listwise_icr import latency_rows, make_family

    run = build("bm25", ds.corpus).search(queries, max(ns))
    make_family("pointwise", loaded, doc_tokens).score_pairs([(queries[0].text, "warm-up")])  # first-call costs
    rows = latency_rows(ds, queries, run, loaded, max_doc_tokens=doc_tokens, ns=ns, families=FAMILIES)
    return {
        "dataset": ds.name,
        "split": "test",
        "query_ids": [q.id for q in queries],
        "candidates": "BM25 top N",
        "N": ns,
        "max_doc_tokens": doc_tokens,
        "families": list(FAMILIES),
        "rows": rows,
        "note": "forward passes = decoder calls: pointwise 1 prefix pass per query + 1 per token-budget batch; "
        "ICR 2 per prompt chunk; listwise 1 per generated token (prefill included). "
        "Listwise at N >= 50 times the first query only.",
    }


def bench_idcm(args) -> dict:
    from idcm import timed_cascade
    from routerank.errors import RouterankError
    from routerank.rerank.idcm import IDCMReranker
    from routerank.rerank.passages import split_passages
    from routerank.rerank.registry import make_reranker

    started = time.perf_counter()
    try:
        scorer = make_reranker(args.idcm_scorer)
    except RouterankError as exc:
        return {"skipped": f"scorer {args.idcm_scorer} could not be loaded: {exc}", "scorer": args.idcm_scorer}
    load_seconds = time.perf_counter() - started
    ds = load_dataset(args.idcm_dataset, splits=["test"])
    queries = sample_queries(ds.split_queries("test"), args.idcm_queries, args.seed)
    bm25_run = build("bm25", ds.corpus).search(queries, args.idcm_depth)
    heads = [ds.corpus[d] for q in queries for d in bm25_run[q.id].doc_ids[: args.idcm_depth]]
    IDCMReranker("bm25", scorer, k=1).rerank(queries[0], heads[:1])  # warm-up: scorer's first call, stemmer
    rows = {}
    for selector in ("bm25", "all"):
        reranker, _, seconds = timed_cascade(
            selector,
            scorer,
            queries,
            bm25_run,
            ds.corpus,
            depth=args.idcm_depth,
            k=args.idcm_k,
            size=args.idcm_size,
            stride=args.idcm_stride,
        )
        stats = reranker.stats
        rows[selector] = {
            "name": reranker.name,
            "seconds": round(seconds, 3),
            **stats.as_dict(),
            "scorer_pairs_per_second": round(stats.scored_pairs / max(stats.score_seconds, 1e-9), 2),
            "docs_per_second": round(stats.docs / max(seconds, 1e-9), 2),
        }
    passages = [len(split_passages(d, args.idcm_size, args.idcm_stride)) for d in heads]
    return {
        "dataset": args.idcm_dataset,
        "split": "test",
        "query_ids": [q.id for q in queries],
        "candidates": f"BM25 top {args.idcm_depth}",
        "scorer": args.idcm_scorer,
        "k": args.idcm_k,
        "passage_size_words": args.idcm_size,
        "passage_stride_words": args.idcm_stride,
        "scorer_load_seconds": round(load_seconds, 2),
        "candidate_docs": len(heads),
        "passages_per_doc_mean": round(float(np.mean(passages)), 2),
        "selectors": rows,
        "speedup": round(rows["all"]["seconds"] / max(rows["bm25"]["seconds"], 1e-9), 2),
        "pair_ratio": round(rows["bm25"]["scored_pairs"] / max(rows["all"]["scored_pairs"], 1), 4),
    }


def parse_parts(text: str) -> list[str]:
    chosen = {p.strip() for p in text.split(",") if p.strip()}
    unknown = chosen - set(PARTS)
    if unknown or not chosen:
        raise SystemExit(f"--parts: unknown or empty {sorted(unknown)}; choose from {','.join(PARTS)}")
    return [p for p in PARTS if p in chosen]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--dataset", default="scifact", help="pointwise, int8 and families")
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--int8-length", type=int, default=128)
    parser.add_argument("--skip-int8", action="store_true")
    parser.add_argument("--family-queries", type=int, default=2)
    parser.add_argument("--family-n", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--family-doc-tokens", type=int, default=128)
    parser.add_argument("--idcm-dataset", default="aila-cases")
    parser.add_argument("--idcm-scorer", default="ce:ce-scifact-infonce")
    parser.add_argument("--idcm-queries", type=int, default=2)
    parser.add_argument("--idcm-depth", type=int, default=3)
    parser.add_argument("--idcm-k", type=int, default=4)
    parser.add_argument("--idcm-size", type=int, default=128)
    parser.add_argument("--idcm-stride", type=int, default=96)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--device", default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    args.parts = parse_parts(args.parts)
    if args.skip_int8 and "int8" in args.parts:
        args.parts.remove("int8")
    return args


def run_parts(args) -> dict:
    import torch

    result: dict = {"parts": args.parts, "threads": torch.get_num_threads(), "wall_seconds": {}}
    walls = result["wall_seconds"]
    model = tokenizer = ds = None
    if {"pointwise", "int8", "families"} & set(args.parts):
        started = time.perf_counter()
        model, tokenizer = load_causal_lm("smollm2", device=args.device, dtype="float32")
        walls["model_load"] = round(time.perf_counter() - started, 2)
        result.update({"device": str(next(model.parameters()).device), "model": "smollm2", "dtype": "float32"})
    if "int8" in args.parts and result["device"] != "cpu":
        print("int8: skipped, dynamic quantization runs on the CPU only", file=sys.stderr)
        args.parts.remove("int8")
    if {"pointwise", "int8"} & set(args.parts):
        started = time.perf_counter()
        ds, queries, run = sample_pairs(args.dataset, args.queries, args.depth, args.seed)
        walls["pointwise_sample"] = round(time.perf_counter() - started, 2)
        result.update({"dataset": args.dataset, "queries": len(queries), "depth": args.depth})
    for part in args.parts:
        started = time.perf_counter()
        if part == "pointwise":
            result[part] = [bench_pointwise(model, tokenizer, ds, queries, run, n) for n in args.lengths]
        elif part == "int8":
            result[part] = bench_int8(model, tokenizer, ds, queries, run, args.int8_length)
        elif part == "families":
            family_ds = ds or load_dataset(args.dataset, splits=["test"])
            family_queries = sample_queries(family_ds.split_queries("test"), args.family_queries, args.seed)
            result[part] = bench_families(
                (model, tokenizer), family_ds, family_queries, args.family_n, args.family_doc_tokens
            )
        else:
            result[part] = bench_idcm(args)
        walls[part] = round(time.perf_counter() - started, 2)
    return result


def print_pointwise(result: dict, args) -> None:
    print(f"\npointwise on {result['device']}: {result['queries']} queries x BM25 top {args.depth}")
    print(f"{'doc tok':>8} {'plain doc/s':>12} {'routerank doc/s':>16} {'ratio':>6} {'max |diff|':>11}")
    for row in result["pointwise"]:
        print(
            f"{row['doc_tokens']:>8} {row['plain_docs_per_s']:>12.2f} {row['routerank_docs_per_s']:>16.2f} "
            f"{row['ratio']:>6.2f} {row['max_abs_score_diff']:>11.2e}"
        )


def print_int8(result: dict, args) -> None:
    i8 = result["int8"]
    print(
        f"int8 dynamic quantization at {args.int8_length} tokens: {i8['speedup']:.2f}x docs/s, "
        f"nDCG@10 {i8['fp32']['nDCG@10']:.4f} -> {i8['int8']['nDCG@10']:.4f} ({i8['ndcg_change']:+.4f})"
    )


def print_families(result: dict, args) -> None:
    fam = result["families"]
    cells = {(r["family"], r["N"]): r for r in fam["rows"]}
    print(
        f"\nfamilies on {result['device']}: {len(fam['query_ids'])} {fam['dataset']} queries x BM25 top N, "
        f"{fam['max_doc_tokens']} doc tokens; s/q = seconds per query, fp/q = forward passes per query"
    )
    print(f"{'N':>4}" + "".join(f" {name + ' s/q':>14} {'fp/q':>6}" for name in fam["families"]))
    for n in fam["N"]:
        line = f"{n:>4}"
        for name in fam["families"]:
            row = cells[(name, n)]
            mark = "*" if row["queries"] < len(fam["query_ids"]) else ""
            line += f" {row['seconds_per_query']:>13.2f}{mark or ' '} {row['forward_passes_per_query']:>6.1f}"
        print(line)
    if any(r["queries"] < len(fam["query_ids"]) for r in fam["rows"]):
        print("* first query only")


def print_idcm(result: dict, args) -> None:
    idcm = result["idcm"]
    if "skipped" in idcm:
        print(f"\nidcm: skipped ({idcm['skipped']})")
        return
    print(
        f"\nidcm on {idcm['dataset']}: {len(idcm['query_ids'])} queries x {idcm['candidates']} "
        f"({idcm['passages_per_doc_mean']:.1f} passages/doc), scorer {idcm['scorer']}"
    )
    print(f"{'selector':>10} {'pairs':>7} {'seconds':>8} {'pairs/s':>8} {'select s':>9} {'score s':>8}")
    for selector, row in idcm["selectors"].items():
        label = f"{selector} k={idcm['k']}" if selector != "all" else selector
        print(
            f"{label:>10} {row['scored_pairs']:>7} {row['seconds']:>8.2f} {row['scorer_pairs_per_second']:>8.1f} "
            f"{row['select_seconds']:>9.3f} {row['score_seconds']:>8.2f}"
        )
    print(f"bm25 k={idcm['k']} vs all: {idcm['speedup']:.2f}x faster, scores {idcm['pair_ratio']:.0%} of the pairs")


def main() -> None:
    args = parse_args()
    result = run_parts(args)
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    for part in args.parts:
        globals()[f"print_{part}"](result, args)
    print("wall seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result["wall_seconds"].items()))


if __name__ == "__main__":
    main()
