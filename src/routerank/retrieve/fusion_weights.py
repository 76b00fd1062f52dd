"""A weighted fusion's weights chosen on a grid: the pure part of `routerank tune-fusion`.

Given each retriever's run on some judged queries, every weight vector on a grid over the simplex is scored and
the best kept, with the whole curve. No dataset is loaded and no retriever built here; `routerank.tune` does that
(on dev queries only) and calls these.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from routerank.data.types import Qrels, Run
from routerank.errors import SpecError
from routerank.evaluate import evaluate
from routerank.retrieve.fusion import weighted

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


def best_on_grid(grid: Sequence[Sequence[float]], scores: Sequence[float]) -> int:
    """The index of the best score; a tie goes to the vector nearest equal weights (the unbiased default)."""
    if not grid or len(grid) != len(scores):
        raise SpecError(f"{len(scores)} scores for a grid of {len(grid)} weight vectors")
    equal = 1 / len(grid[0])
    return max(range(len(grid)), key=lambda i: (round(scores[i], 10), -sum(abs(w - equal) for w in grid[i])))


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


def fused_spec(method_children: Sequence[str], weights: Sequence[float]) -> str:
    """`weighted(0.65*bm25,0.35*dense:st:X)` from the children's specs and their weights."""
    if len(method_children) != len(weights):
        raise SpecError(f"{len(weights)} weights for {len(method_children)} retrievers")
    return "weighted(" + ",".join(f"{w:g}*{c}" for c, w in zip(method_children, weights, strict=True)) + ")"
