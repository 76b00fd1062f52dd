"""Haystack components: a routerank ranker and a retriever over a pipeline spec, both `@component`s.

Install with `pip install 'routerank[haystack]'` (haystack-ai).

    from haystack import Pipeline
    from routerank.integrations.haystack import RouterankRanker, RouterankRetriever

    pipe = Pipeline()
    pipe.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=20))
    pipe.add_component("ranker", RouterankRanker("starter", top_k=3))   # any routerank.Reranker spec
    pipe.connect("retriever.documents", "ranker.documents")
    pipe.run({"retriever": {"query": query}, "ranker": {"query": query}})

    retriever = RouterankRetriever("bm25>>starter@20", documents, top_k=4)  # Documents, a Corpus or a dataset
    retriever.run(query="does aspirin prevent heart attacks")["documents"]

Both components output new `Document`s (the inputs are not changed), best first. The ranker's `score` is its score
mapped into [0, 1] (as Haystack's rankers scale theirs); the retriever's is the pipeline's final score. Metadata
(`meta`): `routerank_score` (the raw score), `routerank_rank`, for a routed model its expert (`routerank_expert`,
`routerank_expert_confidence`); the retriever adds `routerank_id` and, for an R3AG pipeline, the pool member that
served the query (`routerank_route`, `routerank_route_confidence`). `last_route` on either component holds the
routing decisions of its latest run (`routerank.integrations.common.Routing`), e.g. `last_route.abstained` when an
R3AG retriever chose R0 and returned no documents.

The ranker loads its model in `warm_up` (a pipeline calls it; `run` does too when needed) and serialises with the
pipeline when built from a spec string. The retriever indexes its corpus when built and is not serialisable.
"""

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from routerank.api import Reranker
from routerank.errors import RouterankError
from routerank.integrations.common import (
    Hit,
    PipelineSearch,
    Routing,
    check_top,
    document_metadata,
    framework_missing,
    load_corpus,
    load_reranker,
    rerank_texts,
)

try:
    from haystack import Document, component, default_from_dict, default_to_dict
except ModuleNotFoundError as exc:
    raise framework_missing(exc, "haystack", "haystack") from None

__all__ = ["RouterankRanker", "RouterankRetriever"]


def _with(document: Document, score: float | None, extra: Mapping[str, Any]) -> Document:
    """A copy of `document` with its score set and `extra` merged into a new meta dict (the input stays as it was)."""
    return dataclasses.replace(document, score=score, meta={**document.meta, **extra})


@component
class RouterankRanker:
    """Ranks Haystack documents by relevance to a query with a routerank model.

    model: a `routerank.Reranker` spec ("starter" = the shipped routed model, "starter:generalist" = its
    cross-encoder, "ce:/path", an LLM family, ...) or an already built `routerank.Reranker` (the component then
    does not serialise). top_k: how many documents to return, best first (None: all). reranker_options: keyword
    arguments for `Reranker(model, ...)`.
    """

    def __init__(
        self,
        model: str | Reranker = "starter",
        top_k: int | None = 10,
        reranker_options: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, str | Reranker):
            load_reranker(model)  # raises: says what a model may be
        if isinstance(model, Reranker) and reranker_options:
            load_reranker(model, reranker_options)  # raises: options apply to a spec only
        self.model = model
        self.top_k = check_top(top_k, "top_k")
        self.reranker_options = reranker_options
        self._reranker: Reranker | None = model if isinstance(model, Reranker) else None
        self._last_route: Routing | None = None

    def warm_up(self) -> None:
        """Load the model, once (a pipeline calls this before its first run)."""
        if self._reranker is None:
            self._reranker = load_reranker(self.model, self.reranker_options)

    @property
    def reranker(self) -> Reranker:
        """The routerank model that scores the documents (loaded on first use)."""
        self.warm_up()
        return self._reranker

    @property
    def last_route(self) -> Routing | None:
        """The routing decision of the latest run (its `expert` for a routed model), or None before any run."""
        return self._last_route

    def to_dict(self) -> dict[str, Any]:
        """The component as a dictionary, for `Pipeline.dumps`; only a ranker built from a spec string serialises."""
        if not isinstance(self.model, str):
            raise RouterankError(
                "a RouterankRanker built from a Reranker object cannot be serialised",
                fix="build it from a spec string: RouterankRanker('starter')",
            )
        return default_to_dict(self, model=self.model, top_k=self.top_k, reranker_options=self.reranker_options)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RouterankRanker":
        """The component from `to_dict`'s dictionary."""
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(self, query: str, documents: list[Document], top_k: int | None = None) -> dict[str, list[Document]]:
        """The documents best first, cut to `top_k` (this call's, else the component's): copies with `score` set to
        the [0, 1] score and the raw score, rank and routing in `meta`."""
        top_k = check_top(top_k, "top_k") or self.top_k
        texts = []
        for i, document in enumerate(documents):
            if not isinstance(document, Document):
                raise RouterankError(f"document {i} is a {type(document).__name__}, not a haystack Document")
            texts.append(document.content or "")
        hits, routing = rerank_texts(self.reranker, query, texts, top_k)
        self._last_route = routing
        return {"documents": [_with(documents[hit.index], hit.relevance, hit.metadata) for hit in hits]}


def _text_and_id(item: Any) -> tuple[str, str | None] | None:
    return (item.content or "", item.id) if isinstance(item, Document) else None


@component
class RouterankRetriever:
    """Retrieves Haystack documents with a routerank pipeline spec built over a corpus.

    spec: a pipeline spec ("bm25", "hybrid>>starter@20~auto", "r3ag:<router folder>>>starter@20", ...; see
    `routerank.pipeline`). documents: what to search: a list of Haystack `Document`s (or plain strings), a
    routerank `Corpus` or `Dataset`, or a dataset name. Documents keep their ids (`routerank_id` is the document
    id when all are distinct). top_k: how many documents `run` returns. cache / cache_dir: where routerank keeps
    its indexes. reranker_options: keyword arguments for every rerank stage's model.
    """

    def __init__(
        self,
        spec: str,
        documents: Any,
        top_k: int = 10,
        cache: bool = True,
        cache_dir: str | Path | None = None,
        reranker_options: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.top_k = check_top(top_k, "top_k", optional=False)
        index, items = load_corpus(documents, _text_and_id, "haystack")
        self.searcher = PipelineSearch(
            spec, index, items=items, cache=cache, cache_dir=cache_dir, reranker_options=reranker_options
        )
        self._last_route: Routing | None = None

    @property
    def last_route(self) -> Routing | None:
        """The routing decisions of the latest run (`retriever`, `abstained`, `expert`), or None before any run."""
        return self._last_route

    @component.output_types(documents=list[Document])
    def run(self, query: str, top_k: int | None = None) -> dict[str, list[Document]]:
        """The query's top `top_k` documents (this call's, else the component's), best first, with `score` set to
        the pipeline's score and its id, rank and routing in `meta`."""
        hits, routing = self.searcher.search(query, check_top(top_k, "top_k") or self.top_k)
        self._last_route = routing
        return {"documents": [self._document(hit) for hit in hits]}

    def _document(self, hit: Hit) -> Document:
        if self.searcher.items is None:
            doc = self.searcher.corpus.documents[hit.index]
            meta = {**document_metadata(doc), **hit.metadata}
            return Document(id=doc.id, content=doc.full_text, meta=meta, score=hit.score)
        item = self.searcher.items[hit.index]
        if isinstance(item, str):
            return Document(content=item, meta=dict(hit.metadata), score=hit.score)
        return _with(item, hit.score, hit.metadata)
