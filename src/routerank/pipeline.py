"""Pipeline specs: short strings that name a retrieval setup, the same in the CLI and in Python.

    bm25                          BM25 (bm25s defaults: k1=1.5, b=0.75, Lucene IDF)
    bm25:k1=0.9,b=0.4             BM25 with parameters
    dense | dense:<model-spec>    bi-encoder + exact FAISS (default model: the packaged MiniLM)
    null                          R0, retrieve nothing
    hybrid                        rrf(bm25,dense)
    rrf(A,B,...)                  reciprocal rank fusion of any specs
    weighted(0.3*A,0.7*B)         min-max normalised score fusion
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
        raise SpecError(f"unknown retriever {name!r} in pipeline {spec!r}",
                        fix="use bm25, dense[:model], null, hybrid, rrf(...), weighted(...)")
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


def build(spec: str, corpus: Corpus, *, cache: bool = True, cache_dir: str | Path | None = None,
          rebuild: bool = False, progress: bool = False):
    """A retriever for `spec`, indexed on `corpus`; leaf indexes come from (and go to) the cache."""
    return _ready(make_retriever(spec, progress), corpus, cache, cache_dir, rebuild)


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
