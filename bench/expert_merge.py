"""An R2R expert bank scoring with each adapter merged into the base weights vs peft's unmerged LoRA forward.

    python bench/expert_merge.py --expert ~/.cache/routerank/r2r/<run>/experts/eag-scifact \
        --backbone ce:~/.cache/routerank/models/ce-pooled --dtype bf16 --pairs 512

Both sides score the same (SciFact test query, document) pairs with the same bank, no score cache, after one
warm-up batch. The unmerged side is what the bank did before merging: `set_adapter`, then the scorer. The
merged side is `ExpertBank.score_pairs`, which folds the adapter in, scores, and restores the base weights.
Writes a JSON report (--out) and prints a short table: pairs/s for each, the speed ratio, the largest score
difference and the rank correlation between the two.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> dict:
    from scipy.stats import spearmanr

    from routerank.data.registry import load_dataset
    from routerank.r2r.bank import ExpertBank

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--expert", required=True, help="an expert folder (adapter + routerank_expert.json)")
    ap.add_argument("--backbone", required=True, help="the spec it was trained on, e.g. ce:<folder>")
    ap.add_argument("--dtype", default=None, help="bf16 for a cross-encoder backbone; default fp32")
    ap.add_argument("--max-doc-tokens", type=int, default=192)
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--out", type=Path, default=Path("reports/bench-expert-merge.json"))
    args = ap.parse_args(argv)

    bank = ExpertBank(
        {"expert": Path(args.expert).expanduser()},
        args.backbone,
        max_doc_tokens=args.max_doc_tokens,
        cache=False,
        dtype=args.dtype,
    )
    ds = load_dataset(args.dataset)
    queries = ds.split_queries("test")
    docs = ds.corpus.documents
    per_query = 32
    pairs = [
        (queries[i // per_query].text, docs[(7 * i) % len(docs)].full_text) for i in range(args.pairs)
    ]  # 32 documents per query, spread over the corpus
    bank.score_pairs(pairs[:32], ["expert"] * 32)  # warm-up

    def unmerged() -> np.ndarray:
        bank.peft.set_adapter("expert")
        return bank.scorers["expert"].score_pairs(pairs)

    def merged() -> np.ndarray:
        return bank.score_pairs(pairs, ["expert"] * len(pairs))

    timings, scores = {}, {}
    for name, fn in (("unmerged", unmerged), ("merged", merged)):
        start = time.perf_counter()
        scores[name] = np.asarray(fn())
        timings[name] = time.perf_counter() - start
    result = {
        "backbone": args.backbone,
        "expert": str(args.expert),
        "dtype": args.dtype or "fp32",
        "max_doc_tokens": args.max_doc_tokens,
        "pairs": len(pairs),
        "pairs_per_second": {k: len(pairs) / v for k, v in timings.items()},
        "speedup": timings["unmerged"] / timings["merged"],
        "max_abs_diff": float(np.abs(scores["merged"] - scores["unmerged"]).max()),
        "spearman": float(spearmanr(scores["merged"], scores["unmerged"])[0]),
        "machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print()
    print("| forward | pairs/s |")
    print("|---|---:|")
    for name, rate in result["pairs_per_second"].items():
        print(f"| {name} | {rate:.1f} |")
    print(
        f"\nmerged / unmerged: {result['speedup']:.2f}x; max |diff| {result['max_abs_diff']:.2e}; "
        f"spearman {result['spearman']:.5f}"
    )
    return result


if __name__ == "__main__":
    main()
