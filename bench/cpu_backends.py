"""CPU backends against torch fp32, in one run on one machine: speed and quality of every encoder backend.

    python bench/cpu_backends.py --threads 2 --out reports/bench-cpu.json

- Cross-encoder speed: the starter's generalist scores the same SciFact (train query, BM25 document) pairs at 128,
  192 and 256 tokens, in pairs/s, on torch fp32, torch bf16 (autocast) and each exported backend, after one warm-up
  batch, with every runtime pinned to `--threads` intra-op threads.
- Bi-encoder speed: MiniLM encodes the first `--docs` documents of SciFact's corpus, in docs/s.
- Quality: nDCG@10 on SciFact and NFCorpus test (every query): the cross-encoder reranking the same BM25 top
  `--depth`, and dense retrieval over the whole corpus, per backend.
- Each backend's parity figures (per-query Spearman and top-10 overlap against torch fp32 on the calibration
  groups, from train splits) as recorded at export.

- Peers, each in its own virtual environment (their pins conflict with routerank's), on the same pairs and threads:
  fastembed's `TextCrossEncoder` on routerank's own exported ONNX graphs (fp32 and int8), given
  `--fastembed-python`.
Writes a JSON report (--out) and prints a short table.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from routerank.data.registry import load_dataset
from routerank.evaluate.measures import evaluate
from routerank.models.backends import BACKENDS, TORCH, library_versions
from routerank.rerank.cross_encoder import CrossEncoderReranker
from routerank.retrieve.bm25 import BM25Retriever
from routerank.retrieve.dense import DenseRetriever
from routerank.starter import generalist_folder

LENGTHS = (128, 192, 256)
QUALITY_SETS = ("scifact", "nfcorpus")


def speed_pairs(count: int) -> list[tuple[str, str]]:
    """SciFact train queries with their BM25 documents: `count` realistic pairs, long enough to fill 256 tokens."""
    dataset = load_dataset("scifact", splits=["train"])
    queries = dataset.split_queries("train")[: max(1, count // 16)]
    bm25 = BM25Retriever()
    bm25.index(dataset.corpus)
    run = bm25.search(queries, k=16)
    pairs = [(q.text, dataset.corpus[d].full_text) for q in queries for d in run[q.id].doc_ids]
    return pairs[:count]


def pairs_per_second(scorer: CrossEncoderReranker, pairs: list[tuple[str, str]]) -> float:
    scorer.score_pairs(pairs[:32])  # warm-up
    start = time.perf_counter()
    scorer.score_pairs(pairs)
    return len(pairs) / (time.perf_counter() - start)


def cross_encoder_speed(folder: Path, pairs, backends, threads: int) -> dict:
    table: dict[str, dict[str, float]] = {}
    for length in LENGTHS:
        row = {}
        for backend in ("torch-fp32", "torch-bf16", *backends):
            if backend.startswith(TORCH):
                dtype = "bf16" if backend == "torch-bf16" else None
                scorer = CrossEncoderReranker(folder, max_length=length, dtype=dtype, progress=False, device="cpu")
            else:
                scorer = CrossEncoderReranker(
                    folder, max_length=length, backend=backend, threads=threads, progress=False
                )
            row[backend] = round(pairs_per_second(scorer, pairs), 2)
            print(f"  ce @{length} {backend}: {row[backend]} pairs/s", flush=True)
        table[str(length)] = row
    return table


def rerank_quality(folder: Path, backends, depth: int, threads: int) -> dict:
    out: dict[str, dict[str, float]] = {}
    for name in QUALITY_SETS:
        dataset = load_dataset(name, splits=["test"])
        queries = dataset.split_queries("test")
        qrels = dataset.split_qrels("test")
        bm25 = BM25Retriever()
        bm25.index(dataset.corpus)
        first = bm25.search(queries, k=depth)
        row = {"bm25": round(evaluate(first, qrels, ["nDCG@10"])["nDCG@10"], 4)}
        for backend in ("torch-fp32", *backends):
            options = {"backend": backend, "threads": threads} if backend != "torch-fp32" else {}
            scorer = CrossEncoderReranker(folder, progress=False, **options)
            start = time.perf_counter()
            run = scorer.rerank_run(queries, first, dataset.corpus, depth=depth)
            row[backend] = round(evaluate(run, qrels, ["nDCG@10"])["nDCG@10"], 4)
            print(f"  ce {name} {backend}: nDCG@10 {row[backend]} ({time.perf_counter() - start:.0f} s)", flush=True)
        out[name] = row
    return out


def dense_figures(backends, docs: int, threads: int) -> dict:
    speed, quality = {}, {}
    scifact = load_dataset("scifact", splits=["test"])
    texts = [d.full_text for d in scifact.corpus.documents][:docs]
    for backend in ("torch-fp32", *backends):
        options = {"backend": backend, "threads": threads} if backend != "torch-fp32" else {}
        retriever = DenseRetriever(progress=False, **options)
        retriever.encode(texts[:32])
        start = time.perf_counter()
        retriever.encode(texts)
        speed[backend] = round(len(texts) / (time.perf_counter() - start), 2)
        print(f"  dense {backend}: {speed[backend]} docs/s", flush=True)
        for name in QUALITY_SETS:
            dataset = scifact if name == "scifact" else load_dataset(name, splits=["test"])
            retriever.index(dataset.corpus)
            run = retriever.search(dataset.split_queries("test"), k=100)
            value = round(evaluate(run, dataset.split_qrels("test"), ["nDCG@10"])["nDCG@10"], 4)
            quality.setdefault(name, {})[backend] = value
            print(f"  dense {name} {backend}: nDCG@10 {value}", flush=True)
    return {"docs_per_s": speed, "ndcg@10": quality}


FASTEMBED_SCRIPT = """
import json, sys, time
from fastembed.rerank.cross_encoder import TextCrossEncoder
from fastembed.common.model_description import ModelSource
folder, pairs_file, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
pairs = [tuple(p) for p in json.load(open(pairs_file))]
name = "routerank/bench-ce"
TextCrossEncoder.add_custom_model(name, sources=ModelSource(hf=name), model_file="model.onnx")
model = TextCrossEncoder(name, specific_model_path=folder, threads=threads)
list(model.rerank_pairs(pairs[:32], batch_size=32))
start = time.perf_counter()
scores = list(model.rerank_pairs(pairs, batch_size=32))
print(json.dumps({"pairs_per_s": len(pairs) / (time.perf_counter() - start), "scores": [float(s) for s in scores]}))
"""


def fastembed_speed(python: str, folder: Path, pairs, backends, threads: int) -> dict:
    """fastembed's TextCrossEncoder on routerank's ONNX exports at 192 tokens, in its own interpreter; its scores
    are compared with routerank's on the same graph, so a mismatch in tokenization would show."""
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-fastembed-") as tmp:
        pairs_file = Path(tmp) / "pairs.json"
        pairs_file.write_text(json.dumps(pairs))
        for backend in backends:
            ours = CrossEncoderReranker(folder, max_length=192, backend=backend, threads=threads, progress=False)
            copy = Path(tmp) / backend
            shutil.copytree(ours.exported.folder, copy)
            shutil.copy(folder / "config.json", copy / "config.json")
            config = json.loads((copy / "tokenizer_config.json").read_text())
            window = {"model_max_length": 192, "max_length": 192}  # fastembed cuts at the smaller of the two
            (copy / "tokenizer_config.json").write_text(json.dumps({**config, **window}))
            done = subprocess.run(
                [python, "-c", FASTEMBED_SCRIPT, str(copy), str(pairs_file), str(threads)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                out[backend] = {"error": done.stderr.strip().splitlines()[-1][:300] if done.stderr else "failed"}
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            diff = float(np.abs(np.asarray(result["scores"]) - ours.score_pairs(pairs)).max())
            out[backend] = {"pairs_per_s": round(result["pairs_per_s"], 2), "max_abs_diff_vs_routerank": diff}
            print(f"  fastembed @192 {backend}: {out[backend]}", flush=True)
    return out


def parity_records(folder: Path, backends) -> dict:
    records = {}
    for backend in backends:
        scorer = CrossEncoderReranker(folder, backend=backend, progress=False)
        records[backend] = scorer.exported.manifest["parity"] | {"speed": scorer.exported.manifest["speed"]}
    return records


def main(argv: list[str] | None = None) -> dict:
    # heavy: torch loads only here, to pin its threads like the runtimes'
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=256, help="pairs per speed measurement")
    ap.add_argument("--docs", type=int, default=512, help="SciFact documents per dense speed measurement")
    ap.add_argument("--depth", type=int, default=20, help="BM25 candidates the cross-encoder reranks")
    ap.add_argument("--backends", default=",".join(b for b in BACKENDS if b != TORCH))
    ap.add_argument(
        "--quality-backends",
        default="onnx-int8,openvino-bf16,openvino-int8",
        help="backends whose nDCG@10 is measured (the fp32 graphs match torch to 1e-5, so they are left out)",
    )
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--fastembed-python", default=None, help="python of a venv with fastembed installed")
    ap.add_argument("--out", type=Path, default=Path("reports/bench-cpu.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    quality_backends = [b.strip() for b in args.quality_backends.split(",") if b.strip()]
    folder = generalist_folder()
    report: dict = {
        "machine": {"processor": platform.processor() or platform.machine(), "threads": args.threads},
        "versions": library_versions(),
        "model": "starter generalist (MiniLM-L6 cross-encoder) and MiniLM-L6 bi-encoder",
    }
    print("cross-encoder speed", flush=True)
    pairs = speed_pairs(args.pairs)
    report["cross_encoder_pairs_per_s"] = cross_encoder_speed(folder, pairs, backends, args.threads)
    if args.fastembed_python:
        print("fastembed", flush=True)
        report["fastembed_192"] = fastembed_speed(
            args.fastembed_python, folder, pairs, ["onnx", "onnx-int8"], args.threads
        )
    report["parity"] = parity_records(folder, backends)
    if not args.skip_quality:
        print("cross-encoder quality", flush=True)
        report["cross_encoder_ndcg@10"] = rerank_quality(folder, quality_backends, args.depth, args.threads)
    print("bi-encoder", flush=True)
    report["dense"] = dense_figures(quality_backends, args.docs, args.threads) if not args.skip_quality else {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(report))
    return report


def table(report: dict) -> str:
    """The README's table: pairs/s and the ratio to torch fp32 per length, with quality where measured."""
    speeds = report["cross_encoder_pairs_per_s"]
    backends = list(speeds[str(LENGTHS[0])])
    lines = ["| backend | " + " | ".join(f"{n} tok pairs/s" for n in LENGTHS) + " | SciFact | NFCorpus | parity ρ |"]
    lines.append("|---" * (len(LENGTHS) + 4) + "|")
    quality = report.get("cross_encoder_ndcg@10", {})
    for backend in backends:
        cells = []
        for length in LENGTHS:
            value, base = speeds[str(length)][backend], speeds[str(length)]["torch-fp32"]
            cells.append(f"{value:.0f} ({value / base:.2f}×)")
        marks = [f"{quality[s][backend]:.4f}" if backend in quality.get(s, {}) else "–" for s in QUALITY_SETS]
        rho = report["parity"].get(backend, {}).get("spearman")
        lines.append(f"| {backend} | " + " | ".join(cells + marks) + f" | {rho if rho is not None else '–'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
