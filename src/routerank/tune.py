"""The library's tuning layer: settings chosen on dev queries, never on test queries.

Two settings of a pipeline spec are left to data rather than to hand:

- a weighted fusion's weights (`tune_fusion`, `routerank tune-fusion`): `weighted(0.5*bm25,0.5*dense)` fixes them
  by hand, but which mix is best depends on the corpus and on how good each retriever is there (a bi-encoder
  fine-tuned in-domain deserves more weight than the packaged one). The simplex of weights is searched on a grid
  and the choice written with its whole curve, so a config can name the chosen spec and a reader can check how it
  was chosen.
- a reranker's interpolation weight over a first stage (`tune_alpha`, `routerank tune-alpha`): alpha on a grid,
  per corpus and pooled, saved beside the model (`routerank.rerank.interpolate`) for `FIRST>>RERANKER@N~auto`.

Dev queries choose; test queries never do. They are `routerank.data.devsplit.dev_queries`: the dataset's dev
split, or the queries a fine-tuned model's manifest held out of its training split.

This module loads datasets and builds pipelines and rerankers from specs, so it sits above `routerank.pipeline`;
the choices themselves, on runs already made, are below it (`routerank.retrieve.fusion_weights`,
`routerank.rerank.interpolate`).

    routerank tune-fusion -d scifact,nfcorpus -p "weighted(bm25,dense:st:~/.cache/routerank/models/dense-pooled)"
    routerank tune-alpha -d scifact,nfcorpus -p hybrid -r ce:ce-pooled
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from routerank.data.devsplit import dev_queries as choose_dev
from routerank.data.registry import load_dataset
from routerank.data.trec import read_run, write_run
from routerank.data.types import Dataset, Query, Run
from routerank.errors import RouterankError, SpecError
from routerank.fsutil import atomic_write, cache_root, safe_name
from routerank.pipeline import build, canonical, fusion_children
from routerank.rerank.interpolate import GRID, alpha_curve, pooled_alpha, save_alphas
from routerank.rerank.registry import make_reranker
from routerank.retrieve.fusion_weights import KEY, best_on_grid, choose_weights, fused_spec
from routerank.starter import resolve_spec as resolve_starter

ALPHA_CACHE = "tune-alpha"


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


def tune_alpha(
    datasets: Sequence[str],
    reranker_spec: str,
    pipeline_spec: str,
    *,
    depth: int = 100,
    dev_queries: int = 50,
    seed: int = 13,
    work_dir: str | Path | None = None,
    progress: bool = True,
    options: dict | None = None,
) -> dict:
    """Choose the interpolation weight of `reranker_spec` over first stage `pipeline_spec` on each dataset's dev
    queries, and pooled (the mean curve over the datasets); save it beside the model for `~auto` and return it.

    On each dataset: the dev queries (the dev split, `dev_queries` of them seeded, or the queries the reranker's
    manifest held out), the first stage's top `depth` for them, the reranker's run over those, and nDCG@10 at
    every alpha on `routerank.rerank.interpolate.GRID`. Both runs are kept under `work_dir` (default
    `<cache>/tune-alpha`), keyed by corpus, dev queries, specs, depth and the reranker's weights, so a rerun only
    recomputes the curves. The record is `{chosen_on, measure, depth, grid, partial, pooled: {alpha, curve},
    by_corpus: {corpus fingerprint: {dataset, alpha, dev_split, dev_queries, curve}}}`, saved under the first
    stage's canonical spec. `options` go to the reranker (e.g. {"dtype": "bf16"})."""
    if not datasets:
        raise SpecError("name at least one dataset whose dev queries choose alpha")
    if depth < 1 or dev_queries < 1:
        raise SpecError("depth and dev_queries must be at least 1")
    resolved = resolve_starter(reranker_spec)
    cached = {"cache": True} if resolved.startswith("ce:") else {}  # a cross-encoder's scores are kept on disk
    reranker = make_reranker(resolved, progress=progress, **cached, **(options or {}))
    work = Path(work_dir) if work_dir is not None else cache_root() / ALPHA_CACHE
    record: dict = {"chosen_on": "dev", "measure": KEY, "depth": depth, "grid": list(GRID), "partial": False}
    by_corpus, curves = {}, []
    for name in datasets:
        ds = load_dataset(name)
        queries, split = choose_dev(ds, [getattr(reranker, "folder", None)], dev_queries, seed, who=reranker_spec)
        qrels = ds.split_qrels(split).subset(q.id for q in queries)
        first, reranked = _dev_runs(ds, queries, split, pipeline_spec, reranker, reranker_spec, depth, work, progress)
        best, curve = alpha_curve(reranked, first, qrels, depth, KEY)
        by_corpus[ds.corpus.fingerprint] = {
            "dataset": name,
            "alpha": best,
            "dev_split": split,
            "dev_queries": len(queries),
            "curve": [round(v, 5) for v in curve],
        }
        curves.append(curve)
    alpha, pooled = pooled_alpha(curves)
    record["pooled"] = {"alpha": alpha, "curve": pooled}
    record["by_corpus"] = by_corpus
    save_alphas(reranker, canonical(pipeline_spec), record)
    return record


def _key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]


def _file_name(spec: str, *key: str) -> str:
    """A readable, bounded file name for a spec (model paths can be long), unique through a hash of `key`."""
    return f"{safe_name(spec.replace('>>', '__'), extra='=')[:80]}-{_key(spec, *key)}.trec"


def _weights_identity(reranker) -> str:
    """What a reranked run depends on besides its spec: a cross-encoder's weights (its score-cache key), so a
    model retrained in the same folder is never read from an old run."""
    try:
        return str(getattr(reranker, "scorer_key", ""))
    except RouterankError:  # a model without a stable identity: its spec alone keys the run
        return ""


def _dev_runs(
    ds: Dataset,
    queries: list[Query],
    split: str,
    pipeline_spec: str,
    reranker,
    reranker_spec: str,
    depth: int,
    work: Path,
    progress: bool,
) -> tuple[Run, Run]:
    """(first-stage run, reranked run) over `queries`, each read from `work` when made before, else made and
    written atomically; both are read back from their TREC files, so a first run and a rerun score the same."""
    ids = _key(*sorted(q.id for q in queries))
    folder = work / f"{safe_name(ds.name)}-{ds.corpus.fingerprint[:12]}" / f"{split}-{len(queries)}-{ids}"
    first_spec = canonical(pipeline_spec)
    first_path = folder / _file_name(first_spec, str(depth))
    if not first_path.exists():
        run = build(pipeline_spec, ds.corpus, progress=progress).search(queries, depth)
        write_run(run, first_path, tag=safe_name(first_spec))
    first = read_run(first_path)
    reranked_path = folder / _file_name(f"{first_spec}>>{reranker_spec}", str(depth), _weights_identity(reranker))
    if not reranked_path.exists():
        run = reranker.rerank_run(queries, first, ds.corpus, depth)
        write_run(run, reranked_path, tag=safe_name(reranker_spec))
    return first, read_run(reranked_path)
