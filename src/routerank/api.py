"""The public reranking API: `routerank.Reranker(spec).rank(query, docs)`.

One entry point over every reranker family. Underneath it is `make_reranker(spec)` unchanged; this module
adds what a caller of a library needs and the spec layer does not give:

- Results carry the caller's own index, the document as given and its score (`RankedResults`, with
  `.top_k(n)`), instead of ids "0", "1", ... that sort "10" before "2".
- Ties break by input order, so equal scores never reorder documents by accident.
- `ce:` also takes a hub id (`ce:org/name`). It is downloaded (safetensors only) through huggingface_hub,
  the library sentence-transformers itself downloads with, and only when the machine is online; offline, a
  model already in the hub cache loads, and anything else is a SpecError that says what to do.
- Pointwise families expose `score_pairs`, so a server can batch pairs of many requests into one forward
  pass (`batchable`); a routed backend (R2R, any `routerank.route.RoutedScorer`) exposes its router (`route`)
  and expert-aware pair scoring.
- `relevance()` maps a family's raw scores into [0, 1] (Cohere's `relevance_score`) without changing order.

`import routerank` stays cheap: this module imports no torch, and the model loads when `Reranker` is built.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from routerank.data.types import Document, Query
from routerank.errors import RouterankError, SpecError
from routerank.rerank.base import PairScoringReranker
from routerank.rerank.registry import make_reranker
from routerank.route import RouteDecision, RoutedScorer
from routerank.starter import resolve_spec as resolve_starter

__all__ = ["RankResult", "RankedResults", "Reranker", "resolve_spec"]

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*"]


@dataclass(frozen=True, slots=True)
class RankResult:
    """One document of a ranking: its position in the caller's list, the document as given, and its score."""

    index: int
    document: str | Document
    score: float
    rank: int

    @property
    def text(self) -> str:
        """The text that was scored: a `Document`'s title and body joined, a string as given."""
        return self.document.full_text if isinstance(self.document, Document) else self.document


@dataclass(frozen=True)
class RankedResults:
    """A query's documents, best first; iterate it, index it, or cut it with `top_k`."""

    query: str
    results: tuple[RankResult, ...]

    def top_k(self, k: int) -> RankedResults:
        """The first `k` results (all of them when fewer); a negative `k` raises `RouterankError`."""
        if k < 0:
            raise RouterankError(f"top_k must be 0 or more, got {k}")
        return RankedResults(self.query, self.results[:k])

    @property
    def indices(self) -> list[int]:
        """The caller's index of each document, best first."""
        return [r.index for r in self.results]

    @property
    def scores(self) -> list[float]:
        """The raw score of each document, best first."""
        return [r.score for r in self.results]

    def __iter__(self) -> Iterator[RankResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, position: int) -> RankResult:
        return self.results[position]


def order(scores: Sequence[float] | np.ndarray) -> list[int]:
    """Indices best first; ties (and NaN, which sorts last) keep input order."""
    values = [(-float(s) if not math.isnan(float(s)) else math.inf) for s in scores]
    return sorted(range(len(values)), key=lambda i: (values[i], i))


def _offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def download_hub_model(repo_id: str) -> Path:
    """A hub model folder: from the local hub cache if it is there, else downloaded when online."""
    try:
        # deferred: the hub client loads only when a hub id is resolved
        from huggingface_hub import snapshot_download
    except ImportError:
        raise SpecError(
            f"ce:{repo_id} is a hub id, and huggingface_hub is not installed",
            fix="pip install 'routerank[dense]', or give a local model folder",
        ) from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: fall through to a download
        pass
    if _offline():
        raise SpecError(
            f"ce:{repo_id} is a hub id, not in the local hub cache, and HF_HUB_OFFLINE is set",
            fix="download it once while online, or give a local folder: ce:/path/to/model",
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as exc:  # noqa: BLE001 - network, auth and not-found errors all mean "cannot get it"
        raise SpecError(
            f"ce:{repo_id}: no such local folder, and the hub download failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})",
            fix="check the hub id and that this machine is online, or give a local folder",
        ) from None


def resolve_spec(spec: str) -> str:
    """The spec with the starter's names (`starter`, `starter:generalist`, `r2r:starter`, `ce:starter`) replaced by
    the unpacked bundle, and a `ce:` hub id by its downloaded folder; every other spec unchanged."""
    spec = resolve_starter(spec)
    family, sep, arg = spec.strip().partition(":")
    arg = arg.strip()
    if family != "ce" or not sep or not arg or Path(arg).expanduser().exists():
        return spec
    if arg.startswith((".", "/", "~")) or not HUB_ID.fullmatch(arg):
        return spec  # a missing local path or a bare cache name: the ce family's own error explains it
    return f"ce:{download_hub_model(arg)}"


class Reranker:
    """`Reranker("ce:<folder-or-hub-id>").rank(query, docs)`; any `make_reranker` spec works.

    `options` go to the family's constructor unchanged (e.g. `device="cpu"`, `max_length=256` for `ce`,
    `max_doc_tokens=128` for the LLM families).
    """

    def __init__(self, spec: str, **options: Any):
        self.spec = spec.strip()
        self.family = self.spec.partition(":")[0]
        self.backend = make_reranker(resolve_spec(self.spec), **options)

    @classmethod
    def from_backend(cls, backend: Any, spec: str | None = None) -> Reranker:
        """Wrap a reranker object that is already built (e.g. one made by `make_reranker`)."""
        self = cls.__new__(cls)
        self.spec = spec or getattr(backend, "name", type(backend).__name__)
        self.family = self.spec.partition(":")[0]
        self.backend = backend
        return self

    def __repr__(self) -> str:
        return f"Reranker({self.spec!r})"

    @property
    def name(self) -> str:
        """The spec it was built from; for `from_backend`, the spec given there or else the backend's name."""
        return self.spec

    @property
    def runtime(self) -> str:
        """What the model scores on: "torch", or an exported backend such as "openvino-int8" (`backend=`)."""
        return str(getattr(self.backend, "runtime", "torch"))

    @property
    def batchable(self) -> bool:
        """True when pairs of different queries can be scored together in one call (`score_pairs`)."""
        return isinstance(self.backend, PairScoringReranker) or self.has_router

    @property
    def has_router(self) -> bool:
        """True for a routed backend (R2R): it routes each query to an expert and scores pairs with that expert."""
        return isinstance(self.backend, RoutedScorer)

    @property
    def tokenizer(self) -> Any | None:
        """The model's tokenizer, or None when the backend has none."""
        model = getattr(self.backend, "model", None)
        return getattr(model, "tokenizer", None) or getattr(self.backend, "tokenizer", None)

    @property
    def max_length(self) -> int | None:
        """Tokens the model reads per (query, document) pair, if it has a fixed window."""
        value = getattr(self.backend, "max_length", None)
        return int(value) if isinstance(value, int) else None

    def route(self, queries: Sequence[str]) -> list[RouteDecision]:
        """The router's decision per query (`RouteDecision`: choice, confidence, probabilities)."""
        if not isinstance(self.backend, RoutedScorer):
            raise SpecError(f"model {self.spec!r} has no router", fix="routing needs an r2r:<bank> model")
        return self.backend.route([Query(f"q{i}", q) for i, q in enumerate(queries)])

    def score_pairs(self, pairs: Sequence[tuple[str, str]], experts: Sequence[str] | None = None) -> np.ndarray:
        """Raw scores of (query, document) pairs from any mix of queries; a routed model also takes each pair's
        expert (its query's `RouteDecision.choice`), and routes the queries itself when `experts` is None."""
        if not pairs:
            return np.zeros(0, dtype=np.float64)
        if isinstance(self.backend, RoutedScorer):
            chosen = None if experts is None else list(experts)
            return np.asarray(self.backend.score_pairs(list(pairs), chosen), dtype=np.float64)
        if isinstance(self.backend, PairScoringReranker):
            return np.asarray(self.backend.score_pairs(list(pairs)), dtype=np.float64)
        raise SpecError(
            f"model {self.spec!r} ranks a query's documents together and cannot score loose pairs",
            fix="use score(query, docs) or rank(query, docs)",
        )

    def score(self, query: str | Query, docs: Sequence[str | Document]) -> np.ndarray:
        """Raw scores in input order (higher is more relevant)."""
        text = query.text if isinstance(query, Query) else query
        texts = [d.full_text if isinstance(d, Document) else d for d in docs]
        if not texts:
            return np.zeros(0, dtype=np.float64)
        if self.batchable:
            return self.score_pairs([(text, t) for t in texts])
        ranking = self.backend.rerank(text, [Document(str(i), t) for i, t in enumerate(texts)])
        by_id = ranking.as_dict()
        return np.array([by_id.get(str(i), -math.inf) for i in range(len(texts))], dtype=np.float64)

    def score_kind(self) -> str:
        """What the raw scores are: "probability" (yes/no judges), "loglik" (query likelihood) or "logit"."""
        if self.family == "pointwise":
            return "probability"
        if self.family == "qlm":
            return "loglik"
        if isinstance(self.backend, RoutedScorer):  # R2R: its experts judge like their backbone
            return self.backend.score_kind()
        return "logit"

    def relevance(self, scores: Sequence[float] | np.ndarray) -> np.ndarray:
        """Scores mapped into [0, 1], order kept: probabilities as they are, log-likelihoods exp'd, logits sigmoid'd."""
        raw = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
        kind = self.score_kind()
        if kind == "probability":
            return np.clip(raw, 0.0, 1.0)
        if kind == "loglik":
            return np.exp(np.minimum(raw, 0.0))
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-raw))

    def rank(self, query: str | Query, docs: Sequence[str | Document], top_k: int | None = None) -> RankedResults:
        """The documents best first, each with the caller's index; ties keep input order."""
        for i, doc in enumerate(docs):
            if not isinstance(doc, str | Document):
                raise RouterankError(f"document {i} is a {type(doc).__name__}, not a string or Document")
        scores = self.score(query, docs)
        results = tuple(RankResult(i, docs[i], float(scores[i]), rank) for rank, i in enumerate(order(scores), start=1))
        ranked = RankedResults(query.text if isinstance(query, Query) else query, results)
        return ranked if top_k is None else ranked.top_k(top_k)
