"""In-process vs Ray, side by side in one run: dense encoding of a corpus and CE reranking of BM25's top 100.

    python bench/scale.py                        # all of SciFact's corpus, 50 test queries at depth 100
    python bench/scale.py --docs 1000 --queries 10 --output /tmp/x.json   # a quick look

Four setups per task, each from a cold start (the model load is part of the time):
    in-process 1 thread   the compute of one Ray worker (one CPU), without Ray: the overhead baseline
    in-process            torch on every core, as routerank runs without --ray
    ray 1 worker          one actor with one CPU
    ray 2 workers         two actors with one CPU each
Ratios: `ray_overhead` = ray-1 / in-process-1-thread time (lower is better, 1.0 = free), and
`scaling_2_vs_1` = ray-1 / ray-2 time (higher is better). The CE is MiniLM with a fresh scoring head: its
cost per pair is a trained CE's, and this measures speed only. Results are checked equal across setups.
Prints JSON, then a short table; `--output` also writes the JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


@contextmanager
def torch_threads(threads: int | None):
    """This process's torch on `threads` threads (None: as it is), restored afterwards."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def encode(corpus, executor, threads: int | None):
    from routerank.retrieve.dense import DenseRetriever

    with torch_threads(threads):
        retriever = DenseRetriever(progress=False)
        retriever.index(corpus, executor=executor)
        return retriever.embeddings


def rerank(spec, corpus, queries, run, executor, threads: int | None):
    from routerank.pipeline import ShardedReranker, split_stages, stage_reranker

    _, (stage,) = split_stages(f"bm25>>{spec}")
    options = {"cache": False, "progress": False}
    with torch_threads(threads):
        if executor is None:
            reranker = stage_reranker(stage, "bm25", options)
        else:
            reranker = ShardedReranker(stage, "bm25", options, executor)
        return reranker.rerank_run(queries, run, corpus, stage.depth)


def fresh_cross_encoder(folder: Path) -> Path:
    import torch

    from routerank.train.cross_encoder import new_cross_encoder

    torch.manual_seed(0)
    new_cross_encoder("minilm", max_length=192, device="cpu").save_pretrained(str(folder), create_model_card=False)
    return folder


def setups(workers: tuple[int, ...]):
    from routerank.scale import RayOptions, executor_for

    yield "in-process 1 thread", None, 1
    yield "in-process", None, None
    for n in workers:
        yield f"ray {n} worker{'s' if n > 1 else ''}", executor_for(RayOptions(workers=n), progress=False), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--docs", type=int, default=0, help="encode the first N documents (0: all)")
    parser.add_argument("--queries", type=int, default=50, help="test queries to rerank")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--skip", choices=["encode", "rerank"], action="append", default=[])
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    from routerank.data.registry import load_dataset
    from routerank.data.types import Corpus
    from routerank.pipeline import build
    from routerank.scale import RayOptions
    from routerank.scale.options import connect

    os.environ.setdefault("ROUTERANK_CACHE", tempfile.mkdtemp(prefix="routerank-bench-scale-"))
    ds = load_dataset(args.dataset, splits=["test"])
    connect(RayOptions(num_cpus=os.cpu_count(), object_store_mb=512))
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "dataset": ds.name,
        "tasks": {},
    }
    if "encode" not in args.skip:
        corpus = Corpus(ds.corpus.documents[: args.docs or None])
        rows, reference = {}, None
        for name, executor, threads in setups((1, 2)):
            embeddings, seconds = timed(lambda e=executor, t=threads: encode(corpus, e, t))
            digest = hashlib.sha256(embeddings.tobytes()).hexdigest()[:16]
            reference = reference or digest
            rows[name] = {"seconds": seconds, "docs_per_s": len(corpus) / seconds, "sha256": digest}
            print(f"encode {name}: {seconds:.1f} s", flush=True)
        result["tasks"]["dense encoding"] = {
            "docs": len(corpus),
            "setups": rows,
            "identical": len({r["sha256"] for r in rows.values()}) == 1,
            "ray_overhead": rows["ray 1 worker"]["seconds"] / rows["in-process 1 thread"]["seconds"],
            "scaling_2_vs_1": rows["ray 1 worker"]["seconds"] / rows["ray 2 workers"]["seconds"],
        }
    if "rerank" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            spec = f"ce:{fresh_cross_encoder(Path(tmp) / 'ce')}@{args.depth}"
            queries = ds.split_queries("test")[: args.queries]
            run = build("bm25", ds.corpus).search(queries, args.depth)
            rows, runs = {}, {}
            for name, executor, threads in setups((1, 2)):
                out, seconds = timed(lambda e=executor, t=threads: rerank(spec, ds.corpus, queries, run, e, t))
                runs[name] = out
                pairs = sum(min(args.depth, len(run[q.id])) for q in queries)
                rows[name] = {"seconds": seconds, "pairs_per_s": pairs / seconds}
                print(f"rerank {name}: {seconds:.1f} s", flush=True)
            first = next(iter(runs.values()))
            identical = all(
                r[q].doc_ids == first[q].doc_ids and np.allclose(r[q].scores, first[q].scores, atol=1e-5)
                for r in runs.values()
                for q in first.rankings
            )
            result["tasks"]["ce rerank"] = {
                "queries": len(queries),
                "pairs": pairs,
                "setups": rows,
                "identical": identical,
                "ray_overhead": rows["ray 1 worker"]["seconds"] / rows["in-process 1 thread"]["seconds"],
                "scaling_2_vs_1": rows["ray 1 worker"]["seconds"] / rows["ray 2 workers"]["seconds"],
            }
    print(json.dumps(result, indent=2))
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(f"{'task':<16} {'setup':<22} {'seconds':>9} {'rate/s':>9}")
    for task, entry in result["tasks"].items():
        for name, row in entry["setups"].items():
            rate = row.get("docs_per_s", row.get("pairs_per_s"))
            print(f"{task:<16} {name:<22} {row['seconds']:>9.1f} {rate:>9.1f}")
        print(
            f"{task:<16} ray overhead {entry['ray_overhead']:.3f}x, 2 vs 1 worker {entry['scaling_2_vs_1']:.2f}x, "
            f"identical: {entry['identical']}"
        )


if __name__ == "__main__":
    main()
