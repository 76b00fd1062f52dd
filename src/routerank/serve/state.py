"""What a running server holds: each model with its document fitter and batcher, the search indexes, and
the readiness flags; and how they are loaded from a config (each model once, before the app starts)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from routerank.api import Reranker
from routerank.data.registry import load_dataset
from routerank.errors import RouterankError
from routerank.pipeline import build
from routerank.serve.batcher import Batcher
from routerank.serve.config import ModelConfig, SearchConfig, ServeConfig
from routerank.serve.metrics import Metrics
from routerank.serve.text import DocumentFitter

log = logging.getLogger("routerank.serve")


class ServeError(Exception):
    """An HTTP error for the client: the status code and a message that says what to change."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class ServedModel:
    """One served model: its config, the loaded reranker, the fitter that cuts documents to its window, and its
    batcher."""

    config: ModelConfig
    reranker: Reranker
    fitter: DocumentFitter
    batcher: Batcher


def score_fn(reranker: Reranker):
    """How the batcher scores a batch: loose pairs for pointwise families, whole requests for listwise ones."""
    if reranker.batchable:
        return lambda pairs, experts: reranker.score_pairs(pairs, experts if reranker.has_router else None)
    return lambda pairs, _experts: reranker.score(pairs[0][0], [doc for _, doc in pairs])


@dataclass
class SearchIndex:
    """One served search index: its config, the built retriever (or pipeline), and the corpus it searches."""

    config: SearchConfig
    retriever: Any
    corpus: Any


@dataclass
class State:
    """What the app's handlers share: the config, models and search indexes by name, the metrics, whether the
    server is ready or draining, and model aliases (each model's spec, usable as its name)."""

    config: ServeConfig
    models: dict[str, ServedModel]
    searches: dict[str, SearchIndex]
    metrics: Metrics
    ready: bool = False
    draining: bool = False
    aliases: dict[str, str] = field(default_factory=dict)

    def model(self, name: str | None) -> ServedModel:
        """The model a request names, by config name or spec; the first configured one when it names none. An unknown
        name raises `ServeError` (400)."""
        if not name:
            return next(iter(self.models.values()))
        key = name if name in self.models else self.aliases.get(name)
        if key is None:
            raise ServeError(
                400,
                f"unknown model {name!r}: this server has {sorted(self.models)} "
                "(set the request's model to one of them)",
            )
        return self.models[key]


def load_models(config: ServeConfig) -> dict[str, Reranker]:
    """Every configured model, loaded once; a bad spec raises the spec layer's own error. A model whose fast
    backend cannot be exported here (a missing library, no calibration data, a failed export) is loaded on torch
    instead, and the reason is logged."""
    return {name: _load_model(name, m.spec, dict(m.options)) for name, m in config.models.items()}


def _load_model(name: str, spec: str, options: dict[str, Any]) -> Reranker:
    backend = str(options.get("backend", "torch"))
    try:
        return Reranker(spec, **options)
    except (RouterankError, RuntimeError, OSError, ValueError) as exc:
        if backend == "torch":
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("model %s: backend %s failed (%s); serving it on torch", name, backend, reason)
        return Reranker(spec, **{**options, "backend": "torch"})


def load_searches(config: ServeConfig) -> dict[str, tuple[Any, Any]]:
    """(retriever, corpus) per [search] entry, built from the index cache."""
    out = {}
    for name, entry in config.search.items():
        dataset = load_dataset(entry.dataset, splits=[])
        out[name] = (build(entry.pipeline, dataset.corpus), dataset.corpus)
    return out


def served_model(config: ServeConfig, name: str, reranker: Reranker, metrics: Metrics) -> ServedModel:
    """A configured model made ready to serve: its reranker with a document fitter and a batcher that follows the
    `[batching]` and `[limits]` settings (batching across requests only for batchable families)."""
    batching = config.batching

    def on_batch(pairs: int, tokens: int) -> None:
        metrics.batch_pairs.labels(name).observe(pairs)
        metrics.batch_tokens.labels(name).observe(tokens)

    batcher = Batcher(
        score_fn(reranker),
        name=name,
        cross_request=batching.enabled and reranker.batchable,
        max_batch_tokens=batching.max_batch_tokens,
        max_batch_pairs=batching.max_batch_pairs,
        max_wait_ms=batching.max_wait_ms,
        max_queued_pairs=config.limits.max_queued_pairs,
        on_batch=on_batch,
    )
    return ServedModel(config.models[name], reranker, DocumentFitter(reranker.tokenizer, reranker.max_length), batcher)
