"""What the framework components share: reranking texts, and searching a pipeline spec built over a corpus.

The LangChain, LlamaIndex and Haystack modules are thin adapters over two pieces:

- `rerank_texts(reranker, query, texts, top_n)`: one query's texts scored by a `routerank.Reranker`, best first
  (ties keep input order), as `Hit` rows with the caller's index, the raw score, the score mapped into [0, 1]
  (`Reranker.relevance`) and the metadata to add. A routed model (R2R, e.g. `starter`) is routed once per call;
  the expert it chose is in the metadata and in the returned `Routing`.
- `PipelineSearch(spec, corpus)`: a pipeline spec (`routerank.pipeline.build`) indexed on a corpus, searched one
  query at a time. `load_corpus` turns what a user gives (a `Corpus`, a `Dataset`, a dataset name, or a list of a
  framework's documents or plain strings) into a `Corpus`, keeping the original items so the adapters hand back
  the user's own documents. Each search also reports the routing decisions: which pool member an R3AG retriever
  (`r3ag:<folder>`) chose, and whether that was abstaining (R0, an empty result), and which expert a routed rerank
  stage (`...>>starter@20`) chose.

Metadata keys the components add (constants here, so code can refer to them):

    routerank_score             the raw score: the reranker's, or the pipeline's final one
    routerank_rank              1-based rank in this result list
    routerank_id                the document's id in the corpus the pipeline searched (retrievers only)
    routerank_expert            a routed reranker's choice for the query: a domain expert, or "generalist"
    routerank_expert_confidence the router's probability of that choice (for "generalist": its best domain's)
    routerank_route             an R3AG retriever's choice of pool member for the query
    routerank_route_confidence  the router's probability of that member
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

from routerank.api import Reranker, order
from routerank.data.registry import load_dataset
from routerank.data.types import Corpus, Dataset, Document, Query, Ranking
from routerank.errors import MissingDependencyError, RouterankError
from routerank.pipeline import Pipeline, build
from routerank.r3ag.pool import RoutedRetriever
from routerank.rerank.interpolate import InterpolatedReranker
from routerank.retrieve.null import NullRetriever
from routerank.route import RouteDecision, RoutedScorer

__all__ = [
    "EXPERT",
    "EXPERT_CONFIDENCE",
    "ID",
    "KEYS",
    "RANK",
    "RELEVANCE",
    "ROUTE",
    "ROUTE_CONFIDENCE",
    "SCORE",
    "Hit",
    "PipelineSearch",
    "Routing",
    "check_query",
    "check_top",
    "document_metadata",
    "framework_missing",
    "load_corpus",
    "load_reranker",
    "rerank_texts",
]

SCORE = "routerank_score"
RANK = "routerank_rank"
ID = "routerank_id"
EXPERT = "routerank_expert"
EXPERT_CONFIDENCE = "routerank_expert_confidence"
ROUTE = "routerank_route"
ROUTE_CONFIDENCE = "routerank_route_confidence"
KEYS = (SCORE, RANK, ID, EXPERT, EXPERT_CONFIDENCE, ROUTE, ROUTE_CONFIDENCE)
"""Every metadata key the components may add."""
RELEVANCE = "relevance_score"
"""The [0, 1] score in LangChain metadata, where LangChain's own rerankers put theirs (it has no score slot)."""
QUERY_ID = "q0"

FRAMEWORKS = {
    "langchain": "langchain-core",
    "llamaindex": "llama-index-core",
    "haystack": "haystack-ai",
}


def framework_missing(exc: ModuleNotFoundError, top_level: str, extra: str) -> Exception:
    """The error to raise when importing a framework failed: a one-line `MissingDependencyError` with the install
    line when `top_level` itself is missing, else the original error (a broken install says what broke)."""
    if (exc.name or "").partition(".")[0] != top_level:
        return exc
    return MissingDependencyError(
        f"routerank.integrations.{extra} needs {FRAMEWORKS[extra]}, which is not installed",
        fix=f"pip install 'routerank[{extra}]'",
    )


def check_top(value: int | None, name: str, *, optional: bool = True) -> int | None:
    """`value` if it is a whole number of 1 or more (or None, meaning all, where `optional`); else a RouterankError."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        allowed = "a whole number of 1 or more" + (", or None for all" if optional else "")
        raise RouterankError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def check_query(query: Any) -> str:
    """The query text; anything but a string is a RouterankError."""
    if not isinstance(query, str):
        raise RouterankError(f"the query is a {type(query).__name__}, not a string")
    return query


def load_reranker(model: str | Reranker, options: Mapping[str, Any] | None = None) -> Reranker:
    """A `routerank.Reranker`: `model` itself when already built, else `Reranker(model, **options)` (an unknown spec
    raises routerank's SpecError)."""
    if isinstance(model, Reranker):
        if options:
            raise RouterankError(
                "reranker_options apply when the model is a spec string, not an already built Reranker",
                fix="pass the options to routerank.Reranker(spec, **options) instead",
            )
        return model
    if not isinstance(model, str):
        raise RouterankError(
            f"the model is a {type(model).__name__}, not a spec string or a routerank.Reranker",
            fix='e.g. "starter", "starter:generalist" or "ce:/path/to/model"',
        )
    return Reranker(model, **dict(options or {}))


@dataclass(frozen=True)
class Routing:
    """What the routers decided for one query.

    retrieval: an R3AG retriever's decision (its `choice` is the pool member that served the query), or None when
    the pipeline has no routed retriever. rerank: a routed reranker's decision (its `choice` is the expert, or
    "generalist"), or None when no routed model ranked the query. abstained: the retriever chose a member that
    retrieves nothing (R0), so the first stage found no documents.
    """

    retrieval: RouteDecision | None = None
    rerank: RouteDecision | None = None
    abstained: bool = False

    @property
    def retriever(self) -> str | None:
        """The pool member an R3AG retriever chose, if one routed the query."""
        return None if self.retrieval is None else self.retrieval.choice

    @property
    def expert(self) -> str | None:
        """The expert a routed reranker chose ("generalist" when no domain was likely enough), if one did."""
        return None if self.rerank is None else self.rerank.choice

    def metadata(self) -> dict[str, Any]:
        """The routing part of a document's metadata (`routerank_route`, `routerank_expert`, ... where present)."""
        out: dict[str, Any] = {}
        if self.retrieval is not None:
            out[ROUTE], out[ROUTE_CONFIDENCE] = self.retrieval.choice, float(self.retrieval.confidence)
        if self.rerank is not None:
            out[EXPERT], out[EXPERT_CONFIDENCE] = self.rerank.choice, float(self.rerank.confidence)
        return out


@dataclass(frozen=True)
class Hit:
    """One document of a result list, best first.

    index: its position in the caller's list (reranking) or in the corpus searched (retrieval). score: the raw
    score. rank: 1-based. relevance: the score mapped into [0, 1] (reranking only). doc_id: its corpus id
    (retrieval only). metadata: what to add to the document's own metadata.
    """

    index: int
    score: float
    rank: int
    relevance: float | None = None
    doc_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def rerank_texts(
    reranker: Reranker, query: str, texts: Sequence[str], top_n: int | None = None
) -> tuple[list[Hit], Routing]:
    """One query's texts ranked by `reranker`, best first and cut to `top_n` (None: all), with the routing decision
    of a routed model; an empty list gives no hits and no decision."""
    query = check_query(query)
    if not texts:
        return [], Routing()
    routing = Routing()
    if reranker.has_router:  # route once, then score every pair with the chosen expert
        [decision] = reranker.route([query])
        scores = reranker.score_pairs([(query, text) for text in texts], [decision.choice] * len(texts))
        routing = Routing(rerank=decision)
    else:
        scores = reranker.score(query, list(texts))
    relevance = reranker.relevance(scores)
    positions = order(scores)[:top_n]  # top_n None: all
    routed = routing.metadata()
    hits = []
    for rank, i in enumerate(positions, start=1):
        score = float(scores[i])
        hits.append(Hit(i, score, rank, float(relevance[i]), metadata={SCORE: score, RANK: rank, **routed}))
    return hits, routing


def document_metadata(document: Document) -> dict[str, Any]:
    """The metadata of a framework document made from a routerank `Document`: its own, and its title if any."""
    out = dict(document.metadata)
    if document.title:
        out["title"] = document.title
    return out


def load_corpus(
    source: Any, text_of: Callable[[Any], tuple[str, str | None] | None], kind: str
) -> tuple[Corpus, list[Any] | None]:
    """(the Corpus to index, the user's items in corpus order or None) for what a user gives to search over.

    source: a routerank `Corpus` or `Dataset`, a dataset name or folder (`routerank.load_dataset`), or a list of a
    framework's documents and plain strings. text_of: a framework document -> (its text, its own id or None), or
    None when the item is not that framework's document. kind: the document type's name, for errors.
    Items keep their own ids when every item has one and none repeats; otherwise they are numbered "0", "1", ...
    """
    if isinstance(source, Corpus):
        return source, None
    if isinstance(source, Dataset):
        return source.corpus, None
    if isinstance(source, str | Path):
        return load_dataset(str(source)).corpus, None
    if isinstance(source, Mapping) or not isinstance(source, Iterable):
        raise RouterankError(
            f"cannot search a {type(source).__name__}",
            fix=f"give a list of {kind} documents or strings, a routerank Corpus or Dataset, or a dataset name",
        )
    items = list(source)
    if not items:
        raise RouterankError("there are no documents to search", fix=f"give at least one {kind} document")
    texts, ids = [], []
    for i, item in enumerate(items):
        found = (item, None) if isinstance(item, str) else text_of(item)
        if found is None:
            raise RouterankError(f"document {i} is a {type(item).__name__}, not a {kind} document or a string")
        texts.append(found[0])
        ids.append(found[1])
    if not all(ids) or len(set(ids)) != len(ids):
        ids = [str(i) for i in range(len(items))]
    return Corpus(Document(str(doc_id), text) for doc_id, text in zip(ids, texts, strict=True)), items


def _routed_retrievers(retriever: Any) -> list[RoutedRetriever]:
    """Every R3AG (routed) retriever in a retriever tree: the retriever itself, or inside a fusion."""
    if isinstance(retriever, RoutedRetriever):
        return [retriever]
    found: list[RoutedRetriever] = []
    for child in getattr(retriever, "retrievers", None) or []:
        found += _routed_retrievers(child)
    return found


def _decision(decisions: Sequence[RouteDecision], query_id: str) -> RouteDecision | None:
    return next((d for d in decisions if d.query_id == query_id), None)


class PipelineSearch:
    """A routerank pipeline spec indexed on a corpus, searched one query at a time, with its routing decisions.

    spec: any pipeline spec (`bm25`, `hybrid>>starter@20~auto`, `r3ag:<router folder>>>starter@20`, ...; see
    `routerank.pipeline`). corpus: the Corpus to index. items: the user's documents in corpus order (kept for the
    adapters), or None. cache / cache_dir: leaf indexes come from (and go to) routerank's index cache.
    reranker_options: keyword arguments for every rerank stage's model (e.g. `{"device": "cpu"}`).
    Searches are serialised by a lock: routed stages record their last decisions on themselves.
    """

    def __init__(
        self,
        spec: str,
        corpus: Corpus,
        *,
        items: list[Any] | None = None,
        cache: bool = True,
        cache_dir: str | Path | None = None,
        reranker_options: Mapping[str, Any] | None = None,
        progress: bool = False,
    ):
        if not isinstance(spec, str):
            raise RouterankError(f"the pipeline spec is a {type(spec).__name__}, not a string", fix='e.g. "bm25"')
        if len(corpus) == 0:
            raise RouterankError("there are no documents to search", fix="give at least one document")
        self.spec, self.corpus, self.items = spec, corpus, items
        self.pipeline = build(
            spec,
            corpus,
            cache=cache,
            cache_dir=cache_dir,
            progress=progress,
            reranker_options=dict(reranker_options or {}) or None,
        )
        self.positions = {doc_id: i for i, doc_id in enumerate(corpus.ids)}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PipelineSearch({self.spec!r}, {len(self.corpus):,} documents)"

    @property
    def first_stage(self) -> Any:
        """The pipeline's retriever (the whole pipeline when it has no rerank stages)."""
        return self.pipeline.retriever if isinstance(self.pipeline, Pipeline) else self.pipeline

    def search(self, query: str, k: int) -> tuple[list[Hit], Routing]:
        """The query's top `k` documents, best first, and what the routers decided for it."""
        query, k = check_query(query), check_top(k, "k", optional=False)
        with self._lock:
            run = self.pipeline.search([Query(QUERY_ID, query)], k)
            routing = self._routing(QUERY_ID)
        ranking = run[QUERY_ID] if QUERY_ID in run else Ranking()
        routed = routing.metadata()
        hits = []
        for rank, (doc_id, score) in enumerate(zip(ranking.doc_ids, ranking.scores, strict=True), start=1):
            metadata = {ID: doc_id, RANK: rank, SCORE: float(score), **routed}
            hits.append(Hit(self.positions[doc_id], float(score), rank, doc_id=doc_id, metadata=metadata))
        return hits, routing

    def _routing(self, query_id: str) -> Routing:
        retrieval, abstained = None, False
        for routed in _routed_retrievers(self.first_stage):
            retrieval = _decision(routed.last_decisions, query_id)
            if retrieval is not None:
                abstain = set(getattr(routed.router, "abstain", None) or ())
                if routed.pool.config is not None:
                    abstain |= set(routed.pool.config.abstain)
                member = routed.pool.members.get(retrieval.choice)
                abstained = retrieval.choice in abstain or isinstance(member, NullRetriever)
                break
        rerank = None
        for reranker, _ in self.pipeline.stages if isinstance(self.pipeline, Pipeline) else []:
            inner = reranker.reranker if isinstance(reranker, InterpolatedReranker) else reranker
            if isinstance(inner, RoutedScorer):  # the last routed stage decided the final order
                rerank = _decision(getattr(inner, "last_decisions", None) or [], query_id) or rerank
        return Routing(retrieval, rerank, abstained)
