"""LangChain components: a routerank reranker as a document compressor, and a retriever over a pipeline spec.

Install with `pip install 'routerank[langchain]'` (langchain-core).

    from routerank.integrations.langchain import RouterankReranker, RouterankRetriever

    reranker = RouterankReranker("starter", top_n=3)          # any routerank.Reranker spec, or a built Reranker
    docs = reranker.compress_documents(docs, "does aspirin prevent heart attacks")

    retriever = RouterankRetriever("bm25>>starter@20", docs, k=4)  # a list of Documents, a Corpus or a dataset name
    retriever.invoke("does aspirin prevent heart attacks")

`RouterankReranker` is a `BaseDocumentCompressor`, so it drops into `ContextualCompressionRetriever` (from
`langchain_classic.retrievers`, or `langchain.retrievers` before LangChain 1.0) or any chain. Both components
return copies of the documents, best first, with metadata added: `relevance_score` (the reranker's score in
[0, 1], as LangChain's Cohere reranker writes it), `routerank_score` (the raw score), `routerank_rank`, and for a
routed model its expert (`routerank_expert`, `routerank_expert_confidence`); the retriever adds `routerank_id` and,
for an R3AG pipeline, the pool member that served the query (`routerank_route`, `routerank_route_confidence`).
`last_route` holds the routing decisions of the latest call (`routerank.integrations.common.Routing`), so a chain
can tell that an R3AG retriever abstained (`last_route.abstained`: R0 chosen, no documents).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from routerank.api import Reranker
from routerank.errors import RouterankError
from routerank.integrations.common import (
    RELEVANCE,
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
    from langchain_core.callbacks import CallbackManagerForRetrieverRun, Callbacks
    from langchain_core.documents import Document
    from langchain_core.documents.compressor import BaseDocumentCompressor
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict, PrivateAttr
except ModuleNotFoundError as exc:
    raise framework_missing(exc, "langchain_core", "langchain") from None

__all__ = ["RouterankReranker", "RouterankRetriever"]


def _with_metadata(document: Document, extra: Mapping[str, Any]) -> Document:
    """A copy of `document` with `extra` merged into a new metadata dict (the caller's stays as it was)."""
    return document.model_copy(update={"metadata": {**document.metadata, **extra}})


def _text_and_id(item: Any) -> tuple[str, str | None] | None:
    return (item.page_content, item.id) if isinstance(item, Document) else None


class RouterankReranker(BaseDocumentCompressor):
    """Reranks LangChain documents with a routerank model; a `BaseDocumentCompressor`.

    model: a `routerank.Reranker` spec ("starter" = the shipped routed model, "starter:generalist" = its
    cross-encoder, "ce:/path", an LLM family, ...) or an already built `routerank.Reranker`. top_n: how many
    documents to keep, best first (None keeps all). reranker_options: keyword arguments for `Reranker(model, ...)`
    (e.g. `{"device": "cpu", "max_length": 256}`).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    reranker: Reranker
    """The routerank model that scores the documents."""
    top_n: int | None = 3
    """How many documents `compress_documents` keeps (None: all)."""
    _last_route: Routing | None = PrivateAttr(default=None)

    def __init__(
        self,
        model: str | Reranker = "starter",
        *,
        top_n: int | None = 3,
        reranker_options: Mapping[str, Any] | None = None,
    ) -> None:
        top_n = check_top(top_n, "top_n")  # before the model loads
        super().__init__(reranker=load_reranker(model, reranker_options), top_n=top_n)

    @property
    def last_route(self) -> Routing | None:
        """The routing decision of the latest call (its `expert` for a routed model), or None before any call."""
        return self._last_route

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The top `top_n` documents for `query`, best first: copies with the scores and routing in metadata."""
        texts = []
        for i, document in enumerate(documents):
            if not isinstance(document, Document):
                raise RouterankError(f"document {i} is a {type(document).__name__}, not a langchain Document")
            texts.append(document.page_content)
        hits, routing = rerank_texts(self.reranker, query, texts, self.top_n)
        self._last_route = routing
        return [_with_metadata(documents[hit.index], {RELEVANCE: hit.relevance, **hit.metadata}) for hit in hits]


class RouterankRetriever(BaseRetriever):
    """Retrieves LangChain documents with a routerank pipeline spec built over a corpus; a `BaseRetriever`.

    spec: a pipeline spec ("bm25", "hybrid>>starter@20~auto", "r3ag:<router folder>>>starter@20", ...; see
    `routerank.pipeline`). corpus: the documents to search: a list of LangChain `Document`s (or plain strings),
    a routerank `Corpus` or `Dataset`, or a dataset name. Documents keep their own ids when all have distinct ones;
    otherwise they are numbered "0", "1", ... in `routerank_id`. k: how many documents `invoke` returns (a call
    may pass its own: `retriever.invoke(query, k=10)`). cache / cache_dir: where routerank keeps its indexes.
    reranker_options: keyword arguments for every rerank stage's model. Other keyword arguments (`tags`,
    `metadata`) go to `BaseRetriever`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    spec: str
    """The pipeline spec searched."""
    k: int = 4
    """How many documents a call returns unless it passes its own `k`."""
    searcher: PipelineSearch
    """The pipeline built over the corpus (`searcher.pipeline`, `searcher.corpus`)."""
    _last_route: Routing | None = PrivateAttr(default=None)

    def __init__(
        self,
        spec: str,
        corpus: Any,
        *,
        k: int = 4,
        cache: bool = True,
        cache_dir: str | Path | None = None,
        reranker_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        k = check_top(k, "k", optional=False)
        index, items = load_corpus(corpus, _text_and_id, "langchain")
        searcher = PipelineSearch(
            spec, index, items=items, cache=cache, cache_dir=cache_dir, reranker_options=reranker_options
        )
        super().__init__(spec=spec, k=k, searcher=searcher, **kwargs)

    @property
    def last_route(self) -> Routing | None:
        """The routing decisions of the latest search (`retriever`, `abstained`, `expert`), or None before any."""
        return self._last_route

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        hits, routing = self.searcher.search(query, check_top(k, "k") or self.k)
        self._last_route = routing
        return [self._document(hit) for hit in hits]

    def _document(self, hit: Hit) -> Document:
        if self.searcher.items is None:
            doc = self.searcher.corpus.documents[hit.index]
            return Document(page_content=doc.full_text, metadata={**document_metadata(doc), **hit.metadata}, id=doc.id)
        item = self.searcher.items[hit.index]
        if isinstance(item, str):
            return Document(page_content=item, metadata=dict(hit.metadata), id=hit.doc_id)
        return _with_metadata(item, hit.metadata)
