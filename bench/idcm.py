"""IDCM passage cascade vs scoring every passage, with the same expensive scorer, on a long-document collection.

    python bench/idcm.py --scorer ce:$HOME/.cache/routerank/models/ce-scifact-bce --depth 20
    python bench/idcm.py --scorer pointwise:smollm2 --scorer-option cache=false --queries 5 --depth 10

For each selector (bm25, minilm, first, all) this reranks the BM25 top `depth` of every query, timing the
cascade (split + select + score; models are loaded before the clock starts) and counting the (query, passage)
pairs the scorer read. The scorer has no score cache here, so every run pays for every pair it reads. Other
aggregations are evaluated by replaying the passage scores each timed run produced.
Writes a JSON report (--out) and prints a short table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from routerank.data.registry import load_dataset
from routerank.evaluate import evaluate
from routerank.pipeline import build
from routerank.rerank.base import PairScoringReranker
from routerank.rerank.idcm import IDCMReranker
from routerank.rerank.passages import split_passages
from routerank.rerank.registry import make_reranker

MEASURES = "nDCG@10 MRR@10 R@20"


class Recorder(PairScoringReranker):
    """Passes pairs to the real scorer and remembers each score, so other aggregations can be replayed."""

    def __init__(self, inner: PairScoringReranker, scores: dict[tuple[str, str], float]):
        self.inner, self.scores, self.name = inner, scores, inner.name

    def score_pairs(self, pairs):
        out = self.inner.score_pairs(pairs)
        self.scores.update(zip(pairs, np.asarray(out, dtype=np.float64).tolist(), strict=True))
        return out


class Replay(PairScoringReranker):
    def __init__(self, scores: dict[tuple[str, str], float], name: str):
        self.scores, self.name = scores, name

    def score_pairs(self, pairs):
        return np.array([self.scores[pair] for pair in pairs], dtype=np.float64)


def option_value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def timed_cascade(
    selector: str,
    scorer: PairScoringReranker,
    queries,
    bm25_run,
    corpus,
    *,
    depth: int,
    k: int,
    size: int,
    stride: int,
    scores: dict[tuple[str, str], float] | None = None,
):
    """(reranker, run, seconds): one selector's cascade over each query's BM25 top `depth`, models loaded first.

    The scorer's pair scores land in `scores` when given (for replaying other aggregations)."""
    recorder = Recorder(scorer, scores if scores is not None else {})
    reranker = IDCMReranker(selector, recorder, k=k, size=size, stride=stride)
    if reranker.selector is not None and hasattr(reranker.selector, "encoder"):
        _ = reranker.selector.encoder  # load the bi-encoder before the clock starts
    started = time.perf_counter()
    run = reranker.rerank_run(queries, bm25_run, corpus, depth=depth)
    return reranker, run, time.perf_counter() - started


def reselect_seconds(reranker: IDCMReranker, queries, heads_by_query) -> float:
    """Selection time again, now that every passage vector is stored (as an index-time encoding would give)."""
    started = time.perf_counter()
    for query in queries:
        docs = heads_by_query[query.id]
        reranker.select(query.text, [split_passages(d, reranker.size, reranker.stride) for d in docs])
    return time.perf_counter() - started


def add_significance(results: dict, bm25_run, qrels) -> None:
    """nDCG@10 of each system against scoring every passage, and against BM25 (paired, per query)."""
    from routerank.evaluate import paired_test

    bm25 = evaluate(bm25_run, qrels, "nDCG@10").per_query["nDCG@10"]
    full = results.get("idcm:all", {}).get("per_query_ndcg10")
    for name, row in results.items():
        if "per_query_ndcg10" not in row:
            continue
        tests = {"vs_bm25": paired_test(bm25, row["per_query_ndcg10"])}
        if full is not None and name != "idcm:all":
            tests["vs_all_passages"] = paired_test(full, row["per_query_ndcg10"])
        row["ndcg10_paired"] = {
            key: {
                "delta": round(t.delta, 4),
                "t_p": round(t.t_pvalue, 4),
                "randomization_p": round(t.randomization_pvalue, 4),
            }
            for key, t in tests.items()
        }


def add_top_passage_recall(results: dict, recorded: dict, queries, heads_by_query, size: int, stride: int) -> None:
    """How often a selector kept the passage that scoring every passage found best (needs the `all` run)."""
    full = recorded.get("all")
    if not full:
        return
    for selector, kept in recorded.items():
        hits, ratios = [], []
        for query in queries:
            for doc in heads_by_query[query.id]:
                pairs = [(query.text, p.full_text) for p in split_passages(doc, size, stride)]
                if not pairs:
                    continue
                best = max(pairs, key=lambda pair: full[pair])
                hits.append(best in kept)
                ratios.append(max(full[pair] for pair in pairs if pair in kept) == full[best])
        results[f"idcm:{selector}"]["top_passage_recall"] = round(float(np.mean(hits)), 4)
        results[f"idcm:{selector}"]["same_max_score_rate"] = round(float(np.mean(ratios)), 4)


def write(path: str, report: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=2) + "\n")


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="aila-cases")
    parser.add_argument("--split", default="test")
    parser.add_argument("--scorer", required=True, help="pointwise reranker spec, e.g. ce:/path")
    parser.add_argument("--scorer-option", action="append", default=[], help="key=value passed to the scorer")
    parser.add_argument("--selectors", default="bm25,minilm,first,all")
    parser.add_argument("--aggregates", default="max,mean-top2,softmax")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--stride", type=int, default=96)
    parser.add_argument("--queries", type=int, default=0, help="first N queries of the split (0: all)")
    parser.add_argument("--plain", action="store_true", help="also rerank whole documents with the scorer")
    parser.add_argument("--out", default="")
    return parser.parse_args()


def base_report(
    args: argparse.Namespace, queries, heads, scorer_options: dict, scorer_load: float, passages: list[int]
) -> dict:
    """The report's header: the settings, the scorer, the candidate documents' shape and the machine."""
    words = [len(d.text.split()) for d in heads]
    return {
        "dataset": args.dataset,
        "split": args.split,
        "queries": len(queries),
        "depth": args.depth,
        "k": args.k,
        "passage_size_words": args.size,
        "passage_stride_words": args.stride,
        "scorer": args.scorer,
        "scorer_options": scorer_options,
        "scorer_load_seconds": round(scorer_load, 2),
        "candidate_docs": len(heads),
        "passages_per_doc": {
            "mean": round(float(np.mean(passages)), 2),
            "median": float(np.median(passages)),
            "max": int(np.max(passages)),
        },
        "words_per_doc_median": float(np.median(words)),
        "command": " ".join(["python", *sys.argv]),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
    }


def selector_row(
    args: argparse.Namespace,
    selector: str,
    scorer: PairScoringReranker,
    scores: dict[tuple[str, str], float],
    dataset,
    queries,
    qrels,
    bm25_run,
    heads_by_query: dict,
) -> tuple[dict, IDCMReranker, float]:
    """(row, reranker, seconds) for one selector: its timed cascade, then each aggregation replayed and evaluated."""
    reranker, run, seconds = timed_cascade(
        selector,
        scorer,
        queries,
        bm25_run,
        dataset.corpus,
        depth=args.depth,
        k=args.k,
        size=args.size,
        stride=args.stride,
        scores=scores,
    )
    pairs_per_second = reranker.stats.scored_pairs / max(reranker.stats.score_seconds, 1e-9)
    row = {
        "name": reranker.name,
        "seconds": round(seconds, 2),
        **reranker.stats.as_dict(),
        "scorer_pairs_per_second": round(pairs_per_second, 2),
        "by_aggregate": {},
    }
    for aggregate in args.aggregates.split(","):
        replay = (
            run
            if aggregate == "max"
            else IDCMReranker(
                reranker.selector or "all",
                Replay(scores, scorer.name),
                k=args.k,
                size=args.size,
                stride=args.stride,
                aggregate=aggregate,
            ).rerank_run(queries, bm25_run, dataset.corpus, depth=args.depth)
        )
        evaluation = evaluate(replay, qrels, MEASURES)
        row["by_aggregate"][aggregate] = {m: round(v, 4) for m, v in evaluation.means.items()}
        if aggregate == "max":
            row["per_query_ndcg10"] = evaluation.per_query["nDCG@10"]
    if hasattr(reranker.selector, "passage_vectors"):
        warm = reselect_seconds(reranker, queries, heads_by_query)
        row["select_seconds_with_stored_passage_vectors"] = round(warm, 3)
    return row, reranker, seconds


def plain_row(scorer: PairScoringReranker, queries, bm25_run, corpus, qrels, depth: int, candidates: int) -> dict:
    """The scorer on whole documents (no passages), timed and evaluated."""
    started = time.perf_counter()
    run = scorer.rerank_run(queries, bm25_run, corpus, depth=depth)
    seconds = time.perf_counter() - started
    evaluation = evaluate(run, qrels, MEASURES)
    return {
        "name": f"{scorer.name} on whole documents (truncated by the scorer)",
        "seconds": round(seconds, 2),
        "scored_pairs": candidates,
        **{m: round(v, 4) for m, v in evaluation.means.items()},
        "per_query_ndcg10": evaluation.per_query["nDCG@10"],
    }


def main() -> None:
    """BM25, then each selector's cascade (and optionally the plain scorer); write the report, print a summary."""
    args = parse_args()
    dataset = load_dataset(args.dataset)
    queries = dataset.split_queries(args.split)[: args.queries or None]
    qrels = dataset.split_qrels(args.split).subset(q.id for q in queries)
    started = time.perf_counter()
    bm25_run = build("bm25", dataset.corpus).search(queries, k=100)
    bm25_seconds = time.perf_counter() - started
    results = {"bm25": {"seconds": round(bm25_seconds, 3), **evaluate(bm25_run, qrels, MEASURES).means}}

    heads = [dataset.corpus[d] for q in queries for d in bm25_run[q.id].doc_ids[: args.depth]]
    passages = [len(split_passages(d, args.size, args.stride)) for d in heads]

    scorer_options = dict(item.split("=", 1) for item in args.scorer_option)
    started = time.perf_counter()
    scorer = make_reranker(args.scorer, **{k: option_value(v) for k, v in scorer_options.items()})
    scorer_load = time.perf_counter() - started
    print(
        f"scorer {scorer.name} loaded in {scorer_load:.1f}s; {len(queries)} queries, {len(heads)} docs, "
        f"{sum(passages)} passages",
        file=sys.stderr,
    )

    report = base_report(args, queries, heads, scorer_options, scorer_load, passages)
    heads_by_query = {q.id: [dataset.corpus[d] for d in bm25_run[q.id].doc_ids[: args.depth]] for q in queries}
    recorded: dict[str, dict[tuple[str, str], float]] = {}
    for selector in args.selectors.split(","):
        scores = recorded.setdefault(selector, {})
        row, reranker, seconds = selector_row(
            args, selector, scorer, scores, dataset, queries, qrels, bm25_run, heads_by_query
        )
        results[f"idcm:{selector}"] = row
        write(args.out, {**report, "results": results})
        print(
            f"{selector:>8}: {seconds:7.1f}s  pairs {reranker.stats.scored_pairs:6d}  "
            f"nDCG@10 {row['by_aggregate']['max']['nDCG@10']:.4f}",
            file=sys.stderr,
        )

    if args.plain:
        results["plain"] = plain_row(scorer, queries, bm25_run, dataset.corpus, qrels, args.depth, len(heads))
    add_significance(results, bm25_run, qrels)
    add_top_passage_recall(results, recorded, queries, heads_by_query, args.size, args.stride)
    write(args.out, {**report, "results": results})
    print(
        json.dumps(
            {name: {k: v for k, v in row.items() if k != "per_query_ndcg10"} for name, row in results.items()}, indent=2
        )
    )


if __name__ == "__main__":
    main()
