"""The reranker effectiveness table: BM25, then each reranker over BM25's candidates, on one protocol.

    python -m studies.rerank_table --dataset scifact --rerankers pointwise qlm \\
        --sample 100 --depth 20 --max-doc-tokens 256

Rows merge into reports/rerank-table.json keyed by (dataset, reranker, protocol); scores are cached on disk,
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

from routerank.data.registry import load_dataset
from routerank.data.trec import read_run
from routerank.data.types import sample_queries
from routerank.evaluate import evaluate, paired_test
from routerank.fsutil import atomic_write
from routerank.pipeline import build
from routerank.rerank.registry import make_reranker
from studies.cli import run_main

MEASURES = "nDCG@10 MRR@10 R@100"


def protocol_name(sample: int | None, depth: int, max_doc_tokens: int) -> str:
    """The protocol a row was measured under, in words (rows merge by it)."""
    who = f"{sample} seeded queries" if sample else "all queries"
    return f"{who}, BM25 top {depth}, <= {max_doc_tokens} doc tokens"


def run(
    dataset: str,
    split: str,
    rerankers: list[str],
    sample: int | None,
    depth: int,
    max_doc_tokens: int,
    seed: int,
    output: Path,
    from_run: Path | None = None,
) -> list[dict]:
    """Rerank and score; with `from_run`, score that saved run (made with this protocol) as the one reranker's row."""
    if from_run is not None and len(rerankers) != 1:
        raise SystemExit("--from-run names the run of exactly one reranker")
    ds = load_dataset(dataset, splits=[split])
    queries = sample_queries(ds.split_queries(split), sample, seed)
    qrels = ds.split_qrels(split).subset(q.id for q in queries)
    bm25 = build("bm25", ds.corpus).search(queries, 100)
    base = evaluate(bm25, qrels, MEASURES)
    protocol = protocol_name(sample, depth, max_doc_tokens)
    rows = [
        {
            "dataset": dataset,
            "split": split,
            "system": "bm25",
            "protocol": protocol,
            "queries": len(queries),
            **base.means,
        }
    ]
    for spec in rerankers:
        if from_run is not None:
            saved = read_run(from_run)
            missing = [q.id for q in queries if q.id not in saved]
            if missing:
                raise SystemExit(f"{from_run} lacks {len(missing)} of the protocol's queries, e.g. {missing[:3]}")
            reranked, seconds = saved, None
        else:
            family = spec.split(":")[0]
            llm_families = ("pointwise", "qlm", "icr", "listwise", "setwise", "pairwise")
            options = {"max_doc_tokens": max_doc_tokens} if family in llm_families else {}
            reranker = make_reranker(spec, **options)
            start = time.perf_counter()
            reranked = reranker.rerank_run(queries, bm25, ds.corpus, depth)
            seconds = time.perf_counter() - start
        result = evaluate(reranked, qrels, MEASURES)
        test = paired_test(base.per_query["nDCG@10"], result.per_query["nDCG@10"])
        rows.append(
            {
                "dataset": dataset,
                "split": split,
                "system": f"bm25>>{spec}@{depth}",
                "protocol": protocol,
                "queries": len(queries),
                **result.means,
                "p_vs_bm25_nDCG@10": test.t_pvalue,
                "rerank_seconds": seconds,
                "pairs": sum(min(depth, len(bm25[q.id])) for q in queries),
                **({"from_run": str(from_run)} if from_run else {}),
            }
        )
        print(json.dumps(rows[-1]))
    merge(output, rows)
    return rows


def merge(output: Path, rows: list[dict]) -> None:
    """Merge `rows` into the JSON at `output`, keyed by (dataset, system, protocol), atomically."""
    existing = json.loads(output.read_text()) if output.exists() else []
    key = lambda r: (r["dataset"], r["system"], r["protocol"])  # noqa: E731
    merged = {key(r): r for r in existing}
    merged.update({key(r): r for r in rows})
    with atomic_write(output) as out:
        json.dump(sorted(merged.values(), key=key), out, indent=2)
        out.write("\n")


def markdown(rows: list[dict]) -> str:
    """The table as markdown: each reranker row beside BM25 on the same queries, grouped by protocol."""
    base = {(r["dataset"], r["protocol"]): r for r in rows if r["system"] == "bm25"}
    lines = [
        "| dataset | system | protocol | nDCG@10 | BM25, same queries | p vs BM25 | MRR@10 |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["dataset"], r["protocol"], r["system"])):
        if r["system"] == "bm25":
            continue
        b = base.get((r["dataset"], r["protocol"]))
        p = r.get("p_vs_bm25_nDCG@10")
        lines.append(
            f"| {r['dataset']} | `{r['system']}` | {r['protocol']} | {r['nDCG@10']:.4f} | "
            f"{b['nDCG@10'] if b else float('nan'):.4f} | {p:.2g} | {r['MRR@10']:.4f} |"
        )
    return "\n".join(lines)


def build_table(args: argparse.Namespace) -> None:
    """Print the table in --output as markdown (--markdown), or rerank and merge the rows into it."""
    if args.markdown:
        print(markdown(json.loads(args.output.read_text())))
        return
    run(
        args.dataset,
        args.split,
        args.rerankers,
        args.sample or None,
        args.depth,
        args.max_doc_tokens,
        args.seed,
        args.output,
        args.from_run,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m studies.rerank_table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--split", default="test")
    parser.add_argument("--rerankers", nargs="+", default=["pointwise", "qlm"])
    parser.add_argument("--sample", type=int, default=100, help="seeded query sample (0 = all)")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--max-doc-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--output", type=Path, default=Path("reports/rerank-table.json"))
    parser.add_argument("--from-run", type=Path, help="score this saved TREC run instead of reranking again")
    parser.add_argument("--markdown", action="store_true", help="print the table in --output as markdown and exit")
    run_main(parser, build_table, argv)
