"""Choose a weighted fusion's weights on dev queries: `routerank tune-fusion`.

`weighted(0.5*bm25,0.5*dense)` fixes its weights by hand. Which mix is best depends on the corpus and on how good
each retriever is there (a bi-encoder fine-tuned in-domain deserves more weight than the packaged one). This
searches the simplex of weights on a grid, on dev queries only (the dev split, or the queries a fine-tuned
retriever's manifest held out of training), and writes the choice with its whole curve, so a config can name
the chosen spec and a reader can check how it was chosen.

    routerank tune-fusion -d scifact,nfcorpus -p "weighted(bm25,dense:st:~/.cache/routerank/models/dense-pooled)"
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from routerank.data.types import Qrels, Run
from routerank.errors import SpecError
from routerank.fsutil import atomic_write

KEY = "nDCG@10"


def weight_grid(n: int, step: float = 0.05) -> list[tuple[float, ...]]:
    """Every vector of `n` non-negative weights summing to 1 on a grid of `step`, largest first weight first. The
    corners (one retriever alone) are on it, so a curve also says whether fusing helps at all."""
    if n < 2:
        raise SpecError("a fusion has at least two retrievers")
    units = round(1 / step)
    if units < 1 or abs(units * step - 1) > 1e-9:
        raise SpecError(f"grid step {step} must divide 1", fix="e.g. 0.05 or 0.1")
    grid = []
    for cut in itertools.product(range(units + 1), repeat=n - 1):
        if sum(cut) <= units:
            parts = (*cut, units - sum(cut))
            grid.append(tuple(round(p / units, 6) for p in parts))
    return sorted(grid, reverse=True)


def choose_weights(
    runs: Sequence[Run],
    qrels: Qrels,
    *,
    k: int = 100,
    norm: str = "minmax",
    step: float = 0.05,
    measure: str = KEY,
) -> dict:
    """Grid-search the weights of `weighted` fusion of `runs` for `measure` on `qrels`: the best vector (ties go
    to the one nearest equal weights), its score, and the score of every vector on the grid."""
    from routerank.evaluate import evaluate
    from routerank.retrieve.fusion import weighted

    if not runs:
        raise SpecError("no runs to fuse")
    grid = weight_grid(len(runs), step)
    scores = [evaluate(weighted(runs, k, w, norm), qrels, measure)[measure] for w in grid]
    best = best_on_grid(grid, scores)
    return {
        "weights": list(grid[best]),
        measure: scores[best],
        "measure": measure,
        "grid": [{"weights": list(w), measure: round(s, 5)} for w, s in zip(grid, scores, strict=True)],
    }


def best_on_grid(grid: Sequence[Sequence[float]], scores: Sequence[float]) -> int:
    """The index of the best score; a tie goes to the vector nearest equal weights (the unbiased default)."""
    equal = 1 / len(grid[0])
    return max(range(len(grid)), key=lambda i: (round(scores[i], 10), -sum(abs(w - equal) for w in grid[i])))


def fused_spec(method_children: Sequence[str], weights: Sequence[float]) -> str:
    """`weighted(0.65*bm25,0.35*dense:st:X)` from the children's specs and their weights."""
    if len(method_children) != len(weights):
        raise SpecError(f"{len(weights)} weights for {len(method_children)} retrievers")
    return "weighted(" + ",".join(f"{w:g}*{c}" for c, w in zip(method_children, weights, strict=True)) + ")"


def tune_fusion(
    datasets: Sequence[str],
    spec: str,
    *,
    k: int = 100,
    dev_queries: int = 50,
    step: float = 0.05,
    seed: int = 13,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Choose the weights of fusion `spec` on each dataset's dev queries, and pooled (the mean curve over the
    datasets). Returns (and writes to `out`, atomically) the choice per dataset and pooled, with the specs."""
    from routerank.data.devsplit import dev_queries as choose_dev
    from routerank.data.registry import load_dataset
    from routerank.pipeline import build, fusion_children

    method, children = fusion_children(spec)
    if method != "weighted":
        raise SpecError(f"{spec!r} is an {method} fusion; only weighted fusion has weights to tune")
    record: dict = {"spec": spec, "children": children, "chosen_on": "dev", "measure": KEY, "step": step, "k": k}
    per_dataset, curves = {}, []
    for name in datasets:
        ds = load_dataset(name)
        fusion = build(spec, ds.corpus, progress=progress)
        folders = [getattr(r, "folder", None) for r in fusion.retrievers]
        queries, split = choose_dev(ds, folders, dev_queries, seed, who=f"no retriever of {spec}")
        qrels = ds.split_qrels(split).subset(q.id for q in queries)
        runs = [r.search(queries, max(k, fusion.depth)) for r in fusion.retrievers]
        choice = choose_weights(runs, qrels, k=k, norm=fusion.norm, step=step)
        choice.update(
            dataset=name, dev_split=split, dev_queries=len(queries), spec=fused_spec(children, choice["weights"])
        )
        per_dataset[name] = choice
        curves.append([row[KEY] for row in choice["grid"]])
    grid = [tuple(row["weights"]) for row in next(iter(per_dataset.values()))["grid"]]
    pooled = np.mean(curves, axis=0)
    best = best_on_grid(grid, pooled.tolist())
    record["datasets"] = per_dataset
    record["pooled"] = {"weights": list(grid[best]), KEY: float(pooled[best]), "spec": fused_spec(children, grid[best])}
    if out is not None:
        with atomic_write(Path(out)) as handle:
            json.dump(record, handle, indent=2)
    return record
