"""Score interpolation: keep what the first stage knew.

A reranker trained on a few thousand queries is precise where it is sure and noisy where it is not; BM25 and
hybrid retrieval carry a different, complementary signal. Per query, over the reranked top `depth`, both score
lists are min-max normalised to [0, 1] and mixed:

    s(d) = alpha * rerank(d) + (1 - alpha) * first_stage(d)

alpha = 1 is the plain reranker, alpha = 0 the first stage. In a pipeline spec the stage reads
`hybrid>>ce:ce-pooled@100~0.6`, or `~auto` for the alpha chosen on dev data and saved beside the model by
`routerank tune-alpha` (`routerank.tune.tune_alpha`; `interpolation.json` in a model folder, the cache for
rerankers without one). Saved alphas are keyed by the first stage (its canonical spec,
`routerank.pipeline.canonical`) and by corpus fingerprint, with a pooled fallback for an unseen corpus, so a test
set never picks its own alpha. `alpha_curve` and `pooled_alpha` are the choice itself, on runs already made.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np

from routerank.data.types import Corpus, Query, Ranking, Run, documents_of
from routerank.errors import RouterankError, SpecError
from routerank.evaluate import evaluate
from routerank.fsutil import atomic_write, cache_root, safe_name
from routerank.rerank.base import DocsLike, as_documents, as_query, merge_below

ALPHA_FILE = "interpolation.json"
GRID = tuple(round(0.05 * i, 2) for i in range(21))


def minmax(scores: np.ndarray) -> np.ndarray:
    """Scores mapped to [0, 1]; a constant list maps to all 0.5 (it carries no order)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return scores
    low, high = scores.min(), scores.max()
    if high - low <= 1e-12:
        return np.full_like(scores, 0.5)
    return (scores - low) / (high - low)


def mix(rerank: Sequence[float], first: Sequence[float], alpha: float) -> np.ndarray:
    """`alpha` times the min-max normalised reranker scores plus 1 - `alpha` times the normalised first-stage
    scores."""
    return alpha * minmax(np.asarray(rerank)) + (1.0 - alpha) * minmax(np.asarray(first))


def check_alpha(alpha: float) -> float:
    """`alpha` as a float when it lies in [0, 1]; a SpecError otherwise."""
    if not 0.0 <= alpha <= 1.0:
        raise SpecError(f"interpolation weight must lie in [0, 1], got {alpha}", fix="e.g. ~0.5, or ~auto")
    return float(alpha)


def alpha_file(reranker) -> Path:
    """Beside the model when the reranker has a folder; else under the cache, named after its spec."""
    folder = getattr(reranker, "folder", None)
    if folder is not None:
        return Path(folder) / ALPHA_FILE
    return cache_root() / "interpolation" / f"{safe_name(reranker.name)}.json"


def load_alphas(reranker) -> dict:
    """The reranker's saved tuning records by first stage ({} when none were saved); a RouterankError for a file
    that is not JSON."""
    path = alpha_file(reranker)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RouterankError(f"interpolation file is not valid JSON ({exc})", path=path) from None


def saved_alpha(reranker, first_stage: str, corpus: Corpus | None = None) -> float:
    """The alpha chosen on dev data for this first stage (and this corpus, when one was tuned on it)."""
    entry = load_alphas(reranker).get(first_stage)
    if entry is None:
        raise RouterankError(
            f"no interpolation weight was chosen for {reranker.name} over {first_stage!r}",
            path=alpha_file(reranker),
            fix=f"run `routerank tune-alpha -p {first_stage} -r {reranker.name} -d <dataset>` on dev data, "
            "or give a number: ~0.5",
        )
    if corpus is not None and corpus.fingerprint in entry.get("by_corpus", {}):
        return float(entry["by_corpus"][corpus.fingerprint]["alpha"])
    return float(entry["pooled"]["alpha"])


def save_alphas(reranker, first_stage: str, record: dict) -> Path:
    """Merge one first stage's tuning record into the reranker's interpolation file, atomically."""
    path = alpha_file(reranker)
    data = load_alphas(reranker)
    data[first_stage] = record
    with atomic_write(path) as out:
        json.dump(data, out, indent=2)
    return path


class InterpolatedReranker:
    """Wraps any reranker; its run scores are the alpha-mix of the reranker's and the first stage's.

    `alpha` is a number, or None with `first_stage` given: then the saved dev-chosen alpha is looked up per
    corpus at `rerank_run` time.
    """

    def __init__(self, reranker, alpha: float | None = None, *, first_stage: str | None = None):
        if alpha is None and first_stage is None:
            raise SpecError("give an interpolation weight, or the first stage whose saved weight to use")
        self.reranker = reranker
        self.alpha = None if alpha is None else check_alpha(alpha)
        self.first_stage = first_stage
        self.name = f"{reranker.name}~{'auto' if alpha is None else f'{alpha:g}'}"

    def alpha_for(self, corpus: Corpus | None) -> float:
        """The weight to mix with: the fixed `alpha`, else the one saved for the first stage and `corpus` (the pooled
        one when `corpus` is None or was not tuned on)."""
        return self.alpha if self.alpha is not None else saved_alpha(self.reranker, self.first_stage, corpus)

    def rerank(self, query: Query | str, docs: DocsLike, top_k: int | None = None) -> Ranking:
        """Without first-stage scores, the input order stands in for them (first = best, evenly spaced)."""
        documents = as_documents(docs)
        inner = self.reranker.rerank(as_query(query), documents).as_dict()
        rerank = [inner[d.id] for d in documents]
        first = [float(len(documents) - i) for i in range(len(documents))]
        mixed = mix(rerank, first, self.alpha_for(None))
        return Ranking.from_scores(dict(zip((d.id for d in documents), mixed.tolist(), strict=True)), top_k)

    def rerank_run(
        self, queries: Iterable[Query] | Mapping[str, Query], run: Run, corpus: Corpus, depth: int = 100
    ) -> Run:
        """The inner reranker's run mixed with `run`'s own scores over each query's top `depth`, the tail kept below."""
        reranked = self.reranker.rerank_run(queries, run, corpus, depth)
        return interpolate_runs(reranked, run, depth, self.alpha_for(corpus), f"{run.name}>>{self.name}")


def alpha_curve(reranked: Run, first: Run, qrels, depth: int, measure: str = "nDCG@10") -> tuple[float, list[float]]:
    """(the best alpha on GRID, `measure` at every alpha) for mixing `reranked` with `first` on `qrels`: how a
    weight is chosen on dev queries."""
    curve = [evaluate(interpolate_runs(reranked, first, depth, a), qrels, measure)[measure] for a in GRID]
    return GRID[int(np.argmax(curve))], curve


def pooled_alpha(curves: Sequence[Sequence[float]]) -> tuple[float, list[float]]:
    """(the alpha on GRID that maximises the mean curve, the mean curve rounded to 5 places) over several datasets'
    `alpha_curve`s: the pooled choice, the fallback for a corpus no alpha was chosen on. A tie goes to the smaller
    alpha."""
    if not curves:
        raise SpecError("no alpha curves to pool", fix="choose alpha on at least one dataset's dev queries")
    lengths = sorted({len(curve) for curve in curves})
    if lengths != [len(GRID)]:
        raise SpecError(f"an alpha curve has one value per grid point ({len(GRID)}), got lengths {lengths}")
    pooled = np.mean(np.asarray(curves, dtype=np.float64), axis=0)
    return GRID[int(np.argmax(pooled))], [float(round(v, 5)) for v in pooled]


def interpolate_runs(reranked: Run, first: Run, depth: int, alpha: float, name: str = "interpolated") -> Run:
    """Mix a reranked run with the first-stage run it reranked, over each query's first-stage top `depth`."""
    out = {}
    for qid in reranked:
        original = first[qid] if qid in first else Ranking()
        head = original.top(depth)
        inner = reranked[qid].as_dict()
        missing = [d for d in head.doc_ids if d not in inner]
        if missing:
            raise RouterankError(f"the reranked run lacks {len(missing)} of query {qid}'s candidates")
        mixed = mix([inner[d] for d in head.doc_ids], head.scores, alpha)
        ranking = Ranking.from_scores(dict(zip(head.doc_ids, mixed.tolist(), strict=True)))
        out[qid] = merge_below(ranking, original, depth)
    return Run(MappingProxyType(out), name, documents_of([first, reranked]))
