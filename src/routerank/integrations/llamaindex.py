"""LlamaIndex components: a routerank reranker as a node postprocessor, and a retriever over a pipeline spec.

Install with `pip install 'routerank[llamaindex]'` (llama-index-core).

    from routerank.integrations.llamaindex import RouterankRerank, RouterankRetriever

    rerank = RouterankRerank("starter", top_n=3)             # any routerank.Reranker spec, or a built Reranker
    nodes = rerank.postprocess_nodes(retriever.retrieve(query), query_str=query)

    retriever = RouterankRetriever("bm25>>starter@20", nodes, similarity_top_k=4)  # nodes, a Corpus or a dataset
    retriever.retrieve("does aspirin prevent heart attacks")

`RouterankRerank` is a `BaseNodePostprocessor`, so it also goes into a query engine's `node_postprocessors`.
Both components return new `NodeWithScore`s, best first, whose nodes are copies with metadata added (the caller's
nodes are not changed). The reranker's `score` is its score mapped into [0, 1]; the retriever's is the pipeline's
final score. Metadata: `routerank_score` (the raw score), `routerank_rank`, for a routed model its expert
(`routerank_expert`, `routerank_expert_confidence`); the retriever adds `routerank_id` and, for an R3AG pipeline,
the pool member that served the query (`routerank_route`, `routerank_route_confidence`). These keys are excluded
from the text the LLM and the embedder see. `last_route` holds the routing decisions of the latest call
(`routerank.integrations.common.Routing`), so an application can tell that an R3AG retriever abstained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from routerank.api import Reranker
from routerank.errors import RouterankError
from routerank.integrations.common import (
    KEYS,
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
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle, TextNode
except ModuleNotFoundError as exc:
    raise framework_missing(exc, "llama_index", "llamaindex") from None

__all__ = ["RouterankRerank", "RouterankRetriever"]


def _hidden(keys: Sequence[str], extra: Mapping[str, Any]) -> list[str]:
    """`keys` plus the routerank keys of `extra`: metadata kept out of the LLM's and the embedder's text."""
    return [*keys, *(key for key in extra if key in KEYS and key not in keys)]


def _with_metadata(node: BaseNode, extra: Mapping[str, Any]) -> BaseNode:
    """A copy of `node` with `extra` merged into a new metadata dict and hidden from the LLM and the embedder."""
    return node.model_copy(
        update={
            "metadata": {**node.metadata, **extra},
            "excluded_llm_metadata_keys": _hidden(node.excluded_llm_metadata_keys, extra),
            "excluded_embed_metadata_keys": _hidden(node.excluded_embed_metadata_keys, extra),
        }
    )


class RouterankRerank(BaseNodePostprocessor):
    """Reranks LlamaIndex nodes with a routerank model; a `BaseNodePostprocessor`.

    model: a `routerank.Reranker` spec ("starter" = the shipped routed model, "starter:generalist" = its
    cross-encoder, "ce:/path", an LLM family, ...) or an already built `routerank.Reranker`. top_n: how many nodes
    to keep, best first (None keeps all). metadata_mode: which of a node's metadata the model reads with its text
    (`MetadataMode.NONE`: the text alone). reranker_options: keyword arguments for `Reranker(model, ...)`.
    """

    model: str = Field(description="The routerank model spec.")
    top_n: int | None = Field(default=2, description="How many nodes to keep, best first (None: all).")
    metadata_mode: MetadataMode = Field(default=MetadataMode.NONE, description="Node metadata the model reads.")
    _reranker: Reranker = PrivateAttr()
    _last_route: Routing | None = PrivateAttr(default=None)

    def __init__(
        self,
        model: str | Reranker = "starter",
        *,
        top_n: int | None = 2,
        metadata_mode: MetadataMode = MetadataMode.NONE,
        reranker_options: Mapping[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        top_n = check_top(top_n, "top_n")  # before the model loads
        reranker = load_reranker(model, reranker_options)
        extra = {} if callback_manager is None else {"callback_manager": callback_manager}
        super().__init__(model=reranker.spec, top_n=top_n, metadata_mode=metadata_mode, **extra)
        self._reranker = reranker

    @classmethod
    def class_name(cls) -> str:
        """The component's name in LlamaIndex serialisation."""
        return "RouterankRerank"

    @property
    def reranker(self) -> Reranker:
        """The routerank model that scores the nodes."""
        return self._reranker

    @property
    def last_route(self) -> Routing | None:
        """The routing decision of the latest call (its `expert` for a routed model), or None before any call."""
        return self._last_route

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise RouterankError(
                "RouterankRerank needs the query", fix="postprocess_nodes(nodes, query_str=...) or query_bundle=..."
            )
        texts = []
        for i, item in enumerate(nodes):
            if not isinstance(item, NodeWithScore):
                raise RouterankError(f"node {i} is a {type(item).__name__}, not a llama_index NodeWithScore")
            texts.append(item.node.get_content(metadata_mode=self.metadata_mode))
        if not texts:
            self._last_route = Routing()
            return []
        payload = {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: self.model,
            EventPayload.QUERY_STR: query_bundle.query_str,
            EventPayload.TOP_K: self.top_n,
        }
        with self.callback_manager.event(CBEventType.RERANKING, payload=payload) as event:
            hits, routing = rerank_texts(self._reranker, query_bundle.query_str, texts, self.top_n)
            ranked = [
                NodeWithScore(node=_with_metadata(nodes[hit.index].node, hit.metadata), score=hit.relevance)
                for hit in hits
            ]
            event.on_end(payload={EventPayload.NODES: ranked})
        self._last_route = routing
        return ranked


def _text_and_id(item: Any, mode: MetadataMode) -> tuple[str, str | None] | None:
    node = item.node if isinstance(item, NodeWithScore) else item
    return (node.get_content(metadata_mode=mode), node.node_id) if isinstance(node, BaseNode) else None


class RouterankRetriever(BaseRetriever):
    """Retrieves LlamaIndex nodes with a routerank pipeline spec built over a corpus; a `BaseRetriever`.

    spec: a pipeline spec ("bm25", "hybrid>>starter@20~auto", "r3ag:<router folder>>>starter@20", ...; see
    `routerank.pipeline`). corpus: what to search: a list of nodes (`TextNode`, `Document`, `NodeWithScore`) or
    plain strings, a routerank `Corpus` or `Dataset`, or a dataset name. Nodes keep their ids (`routerank_id` is
    the node id when all are distinct). similarity_top_k: how many nodes `retrieve` returns. metadata_mode: which
    of a node's metadata is indexed with its text (`MetadataMode.NONE`: the text alone). cache / cache_dir: where
    routerank keeps its indexes. reranker_options: keyword arguments for every rerank stage's model.
    """

    def __init__(
        self,
        spec: str,
        corpus: Any,
        *,
        similarity_top_k: int = 2,
        metadata_mode: MetadataMode = MetadataMode.NONE,
        cache: bool = True,
        cache_dir: str | Path | None = None,
        reranker_options: Mapping[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        self.spec = spec
        self.similarity_top_k = check_top(similarity_top_k, "similarity_top_k", optional=False)
        index, items = load_corpus(corpus, lambda item: _text_and_id(item, metadata_mode), "llama_index")
        self.searcher = PipelineSearch(
            spec, index, items=items, cache=cache, cache_dir=cache_dir, reranker_options=reranker_options
        )
        self._last_route: Routing | None = None
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @property
    def last_route(self) -> Routing | None:
        """The routing decisions of the latest search (`retriever`, `abstained`, `expert`), or None before any."""
        return self._last_route

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits, routing = self.searcher.search(query_bundle.query_str, self.similarity_top_k)
        self._last_route = routing
        return [NodeWithScore(node=self._node(hit), score=hit.score) for hit in hits]

    def _node(self, hit: Hit) -> BaseNode:
        if self.searcher.items is None:
            doc = self.searcher.corpus.documents[hit.index]
            hidden = ["title"] if doc.title else []  # the text already starts with it
            node = TextNode(
                id_=doc.id,
                text=doc.full_text,
                metadata=document_metadata(doc),
                excluded_llm_metadata_keys=hidden,
                excluded_embed_metadata_keys=list(hidden),
            )
            return _with_metadata(node, hit.metadata)
        item = self.searcher.items[hit.index]
        if isinstance(item, str):
            return _with_metadata(TextNode(id_=hit.doc_id, text=item), hit.metadata)
        return _with_metadata(item.node if isinstance(item, NodeWithScore) else item, hit.metadata)
