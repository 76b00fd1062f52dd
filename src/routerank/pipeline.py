"""Pipeline specs: short strings that name a retrieval setup, the same in the CLI and in Python.

    bm25                          BM25 (bm25s defaults: k1=1.5, b=0.75, Lucene IDF)
    bm25:k1=0.9,b=0.4             BM25 with parameters
    dense | dense:<model-spec>    bi-encoder + exact FAISS (default model: the packaged MiniLM)
    null                          R0, retrieve nothing
    hybrid                        rrf(bm25,dense)
    rrf(A,B,...)                  reciprocal rank fusion of any specs
    weighted(0.3*A,0.7*B)         min-max normalised score fusion
    RETRIEVER>>RERANKER@N         rerank the retriever's top N (e.g. bm25>>ce:/models/ce@100)
    RETRIEVER>>RERANKER@N~0.6     ... and mix its scores with the retriever's: 0.6 * rerank + 0.4 * first stage
    RETRIEVER>>RERANKER@N~auto    ... with the weight chosen on dev data (`routerank tune-alpha`)

Stages chain left to right: `bm25>>ce:/m@100>>pointwise@20` reranks 100, then the top 20 of that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from routerank.data.types import Corpus
from routerank.errors import SpecError

ALIASES = {"hybrid": "rrf(bm25,dense)"}
FUSIONS = ("rrf", "weighted")


@dataclass(frozen=True)
class Spec:
    name: str
    arg: str = ""
    children: tuple[Spec, ...] = ()
    weights: tuple[float, ...] = field(default=())


def _split_top_level(text: str, spec: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SpecError(f"unbalanced ')' in pipeline {spec!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise SpecError(f"unbalanced '(' in pipeline {spec!r}")
    parts.append("".join(current))
    return [p.strip() for p in parts]


def _merge_params(parts: list[str]) -> list[str]:
    """`rrf(bm25:k1=0.9,b=0.4,dense)`: a bare key=value continues the previous retriever's parameters."""
    merged: list[str] = []
    for part in parts:
        if merged and re.match(r"^\w+=", part):
            merged[-1] = f"{merged[-1]},{part}"
        else:
            merged.append(part)
    return merged


def parse(spec: str) -> Spec:
    text = ALIASES.get(spec.strip(), spec.strip())
    if not text:
        raise SpecError("empty pipeline spec", fix="e.g. bm25, dense, hybrid")
    head, paren, rest = text.partition("(")
    if paren:
        name = head.strip()
        if name not in FUSIONS or not rest.endswith(")"):
            raise SpecError(f"cannot parse pipeline {spec!r}", fix=f"fusions are {FUSIONS}, e.g. rrf(bm25,dense)")
        children, weights = [], []
        for part in _merge_params(_split_top_level(rest[:-1], spec)):
            weight, star, child = part.partition("*")
            if star and name == "weighted":
                try:
                    weights.append(float(weight))
                except ValueError:
                    raise SpecError(f"weight {weight!r} in {spec!r} is not a number") from None
                part = child
            children.append(parse(part))
        if weights and len(weights) != len(children):
            raise SpecError(f"give a weight for every retriever in {spec!r}, or none")
        return Spec(name, children=tuple(children), weights=tuple(weights))
    name, _, arg = text.partition(":")
    if name not in ("bm25", "dense", "null"):
        raise SpecError(
            f"unknown retriever {name!r} in pipeline {spec!r}",
            fix="use bm25, dense[:model], null, hybrid, rrf(...), weighted(...)",
        )
    return Spec(name, arg.strip())


def _bm25_params(arg: str) -> dict[str, float | str]:
    params: dict[str, float | str] = {}
    for item in filter(None, (a.strip() for a in arg.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in ("k1", "b", "method"):
            raise SpecError(f"bad bm25 parameter {item!r}", fix="e.g. bm25:k1=0.9,b=0.4")
        try:
            params[key] = value if key == "method" else float(value)
        except ValueError:
            raise SpecError(f"bm25 parameter {key}={value!r} is not a number") from None
    return params


def make_retriever(spec: str | Spec, progress: bool = False):
    """An un-indexed retriever for a spec."""
    node = parse(spec) if isinstance(spec, str) else spec
    if node.name == "bm25":
        from routerank.retrieve.bm25 import BM25Retriever

        return BM25Retriever(**_bm25_params(node.arg), progress=progress)
    if node.name == "dense":
        from routerank.retrieve.dense import DEFAULT_MODEL, DenseRetriever

        return DenseRetriever(model=node.arg or DEFAULT_MODEL, progress=progress)
    if node.name == "null":
        from routerank.retrieve.null import NullRetriever

        return NullRetriever()
    from routerank.retrieve.fusion import FusionRetriever

    children = [make_retriever(child, progress) for child in node.children]
    return FusionRetriever(children, method=node.name, weights=node.weights or None)


DEFAULT_RERANK_DEPTH = 100


WEIGHT = re.compile(r"~([^~/]*)$")  # a trailing ~0.5 / ~auto; a ~ that starts a path (ce:~/m) is not one


@dataclass(frozen=True)
class StageSpec:
    reranker: str
    depth: int = DEFAULT_RERANK_DEPTH
    alpha: float | str | None = None  # None: plain rerank; a number or "auto": interpolate with the stage above


def split_stages(spec: str) -> tuple[str, list[StageSpec]]:
    """`bm25>>ce:/m@100~0.5` → ("bm25", [StageSpec("ce:/m", 100, 0.5)])."""
    first, *rest = [part.strip() for part in spec.split(">>")]
    stages = []
    for part in rest:
        weight = WEIGHT.search(part)
        body = part[: weight.start()] if weight else part
        name, at, depth = body.rpartition("@")
        if not at:
            name, depth = body, str(DEFAULT_RERANK_DEPTH)
        if not name or not depth.isdigit() or int(depth) < 1:
            raise SpecError(f"bad rerank stage {part!r} in {spec!r}", fix="e.g. bm25>>pointwise@100 or ...@100~0.5")
        alpha: float | str | None = weight.group(1) if weight else None
        if alpha is not None and alpha != "auto":
            try:
                alpha = float(alpha)
            except ValueError:
                raise SpecError(f"bad interpolation weight in {part!r}", fix="a number in [0, 1], or auto") from None
            if not 0.0 <= alpha <= 1.0:
                raise SpecError(f"interpolation weight {alpha} in {part!r} is outside [0, 1]")
        stages.append(StageSpec(name, int(depth), alpha))
    return first, stages


def canonical(spec: str) -> str:
    """A first-stage spec as saved interpolation weights are keyed: aliases expanded, whitespace dropped."""
    spec = spec.strip()
    return re.sub(r"\s+", "", ALIASES.get(spec, spec))


@dataclass
class Pipeline:
    """A retriever followed by rerank stages; searches like a retriever."""

    retriever: object
    stages: list[tuple[object, int]]
    corpus: Corpus

    @property
    def name(self) -> str:
        return ">>".join([self.retriever.name, *(f"{r.name}@{d}" for r, d in self.stages)])

    def search(self, queries, k: int = 100):
        from routerank.retrieve.base import as_query_list

        query_list = as_query_list(queries)
        depth = max([k, *(d for _, d in self.stages)])
        run = self.retriever.search(query_list, depth)
        for reranker, stage_depth in self.stages:
            run = reranker.rerank_run(query_list, run, self.corpus, stage_depth)
        return run.top(k)


def build(
    spec: str,
    corpus: Corpus,
    *,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
    progress: bool = False,
    reranker_options: dict | None = None,
):
    """A retriever (or a Pipeline, if `spec` has `>>` stages) for `spec`, indexed on `corpus`.

    Leaf indexes come from (and go to) the cache.
    """
    first, stages = split_stages(spec)
    retriever = _ready(make_retriever(first, progress), corpus, cache, cache_dir, rebuild)
    if not stages:
        return retriever
    from routerank.rerank.registry import make_reranker

    rerankers = []
    above = canonical(first)
    for stage in stages:
        reranker = make_reranker(stage.reranker, **(reranker_options or {}))
        if stage.alpha is not None:
            from routerank.rerank.interpolate import InterpolatedReranker

            alpha = None if stage.alpha == "auto" else stage.alpha
            reranker = InterpolatedReranker(reranker, alpha, first_stage=above)
        rerankers.append((reranker, stage.depth))
        above = f"{above}>>{stage.reranker}@{stage.depth}"
    return Pipeline(retriever, rerankers, corpus)


def _ready(retriever, corpus: Corpus, cache: bool, cache_dir, rebuild: bool):
    from routerank.retrieve.fusion import FusionRetriever
    from routerank.retrieve.store import cached_index

    if isinstance(retriever, FusionRetriever):
        retriever.retrievers = [_ready(r, corpus, cache, cache_dir, rebuild) for r in retriever.retrievers]
        return retriever
    if not cache:
        retriever.index(corpus)
        return retriever
    ready = cached_index(retriever, corpus, cache_dir, rebuild)
    if hasattr(retriever, "progress"):
        ready.progress = retriever.progress
    return ready
