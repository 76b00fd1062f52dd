"""routerank's rerankers vs a plain Hugging Face loop, side by side in one run.

    python bench/rerank.py                       # pointwise vs plain loop at 64/128/256 doc tokens, + int8
    python bench/rerank.py --queries 4 --lengths 128

The plain loop is what most code does: same model, same prompt text, fixed batch of 16, left-padded to the
longest, full LM head over every position, yes/no softmax at the last position. Documents are pre-truncated
to the same token count for both sides, so the scores must agree (fp32: within 1e-3).
Prints a JSON object, then a short table. Ratio = routerank docs/s / plain docs/s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from routerank.data.registry import load_dataset
from routerank.data.types import sample_queries
from routerank.evaluate import evaluate
from routerank.models.llm import load_causal_lm
from routerank.pipeline import build
from routerank.rerank.pointwise import PointwiseLLMReranker


def plain_loop(model, tokenizer, prompts: list[str], batch_size: int = 16) -> np.ndarray:
    import torch

    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    tokenizer.padding_side = "left"
    scores = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=False)
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
    return {"doc_tokens": length, "pairs": len(pairs), "prompt_tokens": tokens,
            "plain_docs_per_s": len(pairs) / plain_t, "routerank_docs_per_s": len(pairs) / ours_t,
            "ratio": plain_t / ours_t, "max_abs_score_diff": float(np.abs(plain_s - ours_s).max())}


def bench_int8(model, tokenizer, ds, queries, run, length: int) -> dict:
    import copy

    qrels = ds.split_qrels("test").subset(q.id for q in queries)
    out = {}
    for label, quantize in (("fp32", None), ("int8", "int8")):
        weights = copy.deepcopy(model) if quantize else model
        reranker = PointwiseLLMReranker.from_model(weights, tokenizer, max_doc_tokens=length, progress=False,
                                                   quantize=quantize)
        reranker.score_pairs([(queries[0].text, ds.corpus[run[queries[0].id].doc_ids[0]].full_text)])  # warm-up
        start = time.perf_counter()
        reranked = reranker.rerank_run(queries, run, ds.corpus, depth=len(next(iter(run.rankings.values()))))
        seconds = time.perf_counter() - start
        pairs = sum(len(run[q.id]) for q in queries)
        out[label] = {"docs_per_s": pairs / seconds, "nDCG@10": evaluate(reranked, qrels, "nDCG@10")["nDCG@10"]}
    out["speedup"] = out["int8"]["docs_per_s"] / out["fp32"]["docs_per_s"]
    out["ndcg_change"] = out["int8"]["nDCG@10"] - out["fp32"]["nDCG@10"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--int8-length", type=int, default=128)
    parser.add_argument("--skip-int8", action="store_true")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--device", default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    import torch

    model, tokenizer = load_causal_lm("smollm2", device=args.device, dtype="float32")
    ds, queries, run = sample_pairs(args.dataset, args.queries, args.depth, args.seed)
    device = str(next(model.parameters()).device)
    result = {"dataset": args.dataset, "device": device, "threads": torch.get_num_threads(), "model": "smollm2",
              "dtype": "float32", "queries": len(queries), "depth": args.depth,
              "pointwise": [bench_pointwise(model, tokenizer, ds, queries, run, n) for n in args.lengths]}
    if not args.skip_int8 and device == "cpu":
        result["int8"] = bench_int8(model, tokenizer, ds, queries, run, args.int8_length)
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\npointwise on {device}: {len(queries)} queries x BM25 top {args.depth}")
    print(f"{'doc tok':>8} {'plain doc/s':>12} {'routerank doc/s':>16} {'ratio':>6} {'max |diff|':>11}")
    for row in result["pointwise"]:
        print(f"{row['doc_tokens']:>8} {row['plain_docs_per_s']:>12.2f} {row['routerank_docs_per_s']:>16.2f} "
              f"{row['ratio']:>6.2f} {row['max_abs_score_diff']:>11.2e}")
    if "int8" in result:
        i8 = result["int8"]
        print(f"int8 dynamic quantization at {args.int8_length} tokens: {i8['speedup']:.2f}x docs/s, "
              f"nDCG@10 {i8['fp32']['nDCG@10']:.4f} -> {i8['int8']['nDCG@10']:.4f} ({i8['ndcg_change']:+.4f})")


if __name__ == "__main__":
    main()
