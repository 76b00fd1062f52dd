"""routerank retrievers vs the plain libraries, side by side on the same SciFact inputs.

    python bench/retrieval.py                 # BM25 (5 repeats) + dense on the full corpus
    python bench/retrieval.py --dense-docs 500  # dense on a corpus slice (quick look)
    python bench/retrieval.py --skip-dense

Prints a JSON object, then a short table. Ratios are routerank / plain (time: lower is better).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

import routerank
from routerank.data.types import Corpus, Ranking, Run
from routerank.evaluate import evaluate
from routerank.models import resolve_model


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def raw_bm25(texts, doc_ids, queries, k):
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")

    def index():
        model = bm25s.BM25()
        model.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
        return model

    model, t_index = timed(index)

    def search():
        tokens = bm25s.tokenize([q.text for q in queries], stopwords="en", stemmer=stemmer, show_progress=False)
        docs, scores = model.retrieve(tokens, k=k, show_progress=False)
        return {
            q.id: {doc_ids[j]: float(s) for j, s in zip(docs[i], scores[i], strict=True)} for i, q in enumerate(queries)
        }

    run, t_search = timed(search)
    return run, t_index, t_search


def routerank_bm25(corpus, queries, k):
    from routerank.retrieve import BM25Retriever

    retriever = BM25Retriever()
    _, t_index = timed(lambda: retriever.index(corpus))
    run, t_search = timed(lambda: retriever.search(queries, k))
    return retriever, run, t_index, t_search


def as_run(scores: dict, name: str) -> Run:
    return Run(MappingProxyType({q: Ranking.from_scores(d) for q, d in scores.items()}), name)


def raw_dense(texts, doc_ids, queries, k, model_dir, batch_size):
    import faiss
    import numpy as np
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")

    def index():
        vectors = model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(np.asarray(vectors, dtype=np.float32))
        return flat

    flat, t_index = timed(index)

    def search():
        vectors = model.encode(
            [q.text for q in queries],
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        scores, docs = flat.search(np.asarray(vectors, dtype=np.float32), k)
        return {
            q.id: {doc_ids[j]: float(s) for j, s in zip(docs[i], scores[i], strict=True)} for i, q in enumerate(queries)
        }

    run, t_search = timed(search)
    return run, t_index, t_search


def routerank_dense(corpus, queries, k, batch_size):
    from routerank.retrieve import DenseRetriever

    retriever = DenseRetriever(batch_size=batch_size, device="cpu", progress=False)
    _ = retriever.encoder  # load the model outside the timed region, as the raw side does
    _, t_index = timed(lambda: retriever.index(corpus))
    run, t_search = timed(lambda: retriever.search(queries, k))
    return run, t_index, t_search


def row(name, rr, raw, ndcg_rr, ndcg_raw):
    total_rr, total_raw = rr[0] + rr[1], raw[0] + raw[1]
    return {
        "retriever": name,
        "routerank": {"index_s": rr[0], "search_s": rr[1], "nDCG@10": ndcg_rr},
        "plain": {"index_s": raw[0], "search_s": raw[1], "nDCG@10": ndcg_raw},
        "ratio_index": rr[0] / raw[0],
        "ratio_search": rr[1] / raw[1],
        "ratio_total": total_rr / total_raw,
        "overhead_total_pct": 100 * (total_rr / total_raw - 1),
        "ndcg_delta": ndcg_rr - ndcg_raw,
    }


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--split", default="test")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-dense", action="store_true")
    parser.add_argument("--dense-docs", type=int, default=None, help="dense on the first N docs + judged docs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    return parser.parse_args()


def bm25_row(corpus: Corpus, queries, qrels, k: int, repeats: int) -> dict:
    """BM25, routerank vs plain: median index/search seconds over `repeats`, nDCG@10, and save/cached-load time."""
    texts, doc_ids = [d.full_text for d in corpus.documents], corpus.ids
    rr_times, raw_times = [], []
    for repeat in range(repeats):  # interleaved, so drift in machine load hits both sides alike
        order = (0, 1) if repeat % 2 == 0 else (1, 0)
        for side in order:
            if side == 0:
                raw_run, ti, ts = raw_bm25(texts, doc_ids, queries, k)
                raw_times.append((ti, ts))
            else:
                retriever, rr_run, ti, ts = routerank_bm25(corpus, queries, k)
                rr_times.append((ti, ts))
    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    out = row(
        "bm25",
        (med(rr_times, 0), med(rr_times, 1)),
        (med(raw_times, 0), med(raw_times, 1)),
        evaluate(rr_run, qrels, "nDCG@10")["nDCG@10"],
        evaluate(as_run(raw_run, "raw"), qrels, "nDCG@10")["nDCG@10"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        _, t_save = timed(lambda: retriever.save(Path(tmp) / "bm25"))
        _, t_load = timed(lambda: routerank.retrieve.BM25Retriever.load(Path(tmp) / "bm25", corpus=corpus))
    out["routerank"].update(save_s=t_save, cached_load_s=t_load)
    return out


def dense_row(corpus: Corpus, queries, qrels, k: int, dense_docs: int | None, batch_size: int) -> dict:
    """Dense (MiniLM), routerank vs plain, on the corpus or its first `dense_docs` docs plus every judged doc."""
    dense_corpus = corpus
    if dense_docs:
        keep = set(corpus.ids[:dense_docs]) | {d for q in qrels for d in qrels[q]}
        dense_corpus = Corpus(d for d in corpus.documents if d.id in keep)
    model_dir = resolve_model("minilm").location
    d_texts, d_ids = [d.full_text for d in dense_corpus.documents], dense_corpus.ids
    raw_run, ti, ts = raw_dense(d_texts, d_ids, queries, k, model_dir, batch_size)
    rr_run, rti, rts = routerank_dense(dense_corpus, queries, k, batch_size)
    out = row(
        "dense",
        (rti, rts),
        (ti, ts),
        evaluate(rr_run, qrels, "nDCG@10")["nDCG@10"],
        evaluate(as_run(raw_run, "raw"), qrels, "nDCG@10")["nDCG@10"],
    )
    out["docs"] = len(dense_corpus)
    return out


def print_table(result: dict) -> None:
    """The short table after the JSON: each side's seconds and nDCG@10, then the ratios."""
    print()
    print(f"{'retriever':<10} {'side':<10} {'index s':>9} {'search s':>9} {'nDCG@10':>8}")
    for r in result["results"]:
        for side in ("routerank", "plain"):
            s = r[side]
            print(f"{r['retriever']:<10} {side:<10} {s['index_s']:>9.3f} {s['search_s']:>9.3f} {s['nDCG@10']:>8.4f}")
        print(
            f"{r['retriever']:<10} {'ratio':<10} {r['ratio_index']:>9.3f} {r['ratio_search']:>9.3f} "
            f"{r['ndcg_delta']:>+8.4f}   total overhead {r['overhead_total_pct']:+.1f}%"
        )


def main() -> None:
    """Run both retrievers on both sides, print (and optionally write) the JSON, then the table."""
    args = parse_args()
    ds = routerank.load_dataset(args.dataset)
    qrels = ds.split_qrels(args.split)
    queries = ds.split_queries(args.split)
    corpus = ds.corpus
    result = {
        "dataset": args.dataset,
        "split": args.split,
        "docs": len(corpus),
        "queries": len(queries),
        "k": args.k,
        "repeats": args.repeats,
        "results": [],
    }
    result["results"].append(bm25_row(corpus, queries, qrels, args.k, args.repeats))
    if not args.skip_dense:
        result["results"].append(dense_row(corpus, queries, qrels, args.k, args.dense_docs, args.batch_size))

    print(json.dumps(result, indent=2))
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)


if __name__ == "__main__":
    main()
