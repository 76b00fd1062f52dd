"""Coarse to fine over documents made of passages: retrieve documents, then rank the passages inside the top ones.

A report page, a judgment or a manual is one document made of passages (paragraphs, tables). Retrieving passages
one by one loses the document's context; retrieving documents does not say which part answers. `CoarseToFine`
does both in turn:

1. the coarse stage is any retriever whose run ranks document ids (BM25 over the document view, or
   `routerank.retrieve.documents.DocumentRetriever` with merged passage vectors);
2. the candidates are every passage of the top `depth` documents, in document rank order, then position;
3. the fine stage ranks those passages: any reranker with `rerank_run` (a cross-encoder, the routed starter, an
   LLM judge), or `VectorFine`, the passage vectors a dense document index already holds (no model call).

The result is a passage run, and `document_of` says which document each passage belongs to. `last_scored` holds
how many passages the fine stage scored per query, the cost that flat passage reranking pays at its own depth.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np

from routerank.data.documents import DocumentMap
from routerank.data.types import Corpus, Query, Ranking, Run
from routerank.errors import RouterankError
from routerank.retrieve.base import as_query_list


class FineStage(Protocol):
    """What the fine stage needs: the reranker protocol's `rerank_run` and a `name`."""

    name: str

    def rerank_run(self, queries: Iterable[Query] | Mapping[str, Query], run: Run, corpus: Corpus, depth: int) -> Run:
        """`run` with each query's top `depth` candidates reranked."""


class PassageScorer(Protocol):
    """A dense document index that kept its passage vectors (`DocumentRetriever`)."""

    def passage_scores(self, query_text: str, passage_ids: list[str]) -> np.ndarray:
        """The cosine of the query with each passage."""


@dataclass
class VectorFine:
    """A fine stage that ranks passages by the cosine of their stored vectors with the query: free once the document
    index exists, since the passage vectors were encoded to build it."""

    index: PassageScorer
    name: str = "passage-vectors"

    def rerank_run(self, queries: Iterable[Query] | Mapping[str, Query], run: Run, corpus: Corpus, depth: int) -> Run:
        """Each query's top `depth` candidates ordered by passage cosine (ties keep candidate order)."""
        out = {}
        for query in as_query_list(queries):
            ids = list(run[query.id].doc_ids[:depth]) if query.id in run else []
            scores = self.index.passage_scores(query.text, ids) if ids else np.zeros(0)
            order = sorted(range(len(ids)), key=lambda i: (-float(scores[i]), i))
            out[query.id] = Ranking(tuple(ids[i] for i in order), tuple(float(scores[i]) for i in order))
        return Run(MappingProxyType(out), f"{run.name}>>{self.name}")


class WholeDocuments:
    """A passage-level retriever run over whole documents: it indexes the document view of the passage corpus it
    is given (`DocumentMap.document_corpus`), so `search` ranks document ids. BM25 over whole documents is the
    lexical baseline of document retrieval."""

    def __init__(self, retriever: Any, documents: DocumentMap, table_style: str = "pipe"):
        self.retriever, self.documents, self.table_style = retriever, documents, table_style
        self.name = f"{retriever.name}(documents)"

    def index(self, corpus: Corpus) -> None:
        """Index the documents that `corpus`'s passages form."""
        self.retriever.index(self.documents.document_corpus(corpus, self.table_style))

    def search(self, queries: Iterable[Query] | Mapping[str, Query], k: int = 100) -> Run:
        """Each query's top `k` documents."""
        return self.retriever.search(queries, k)


@dataclass
class CoarseToFine:
    """Documents from `coarse`, then the passages of the top `depth` documents ranked by `fine`.

    coarse: a retriever whose `search` ranks document ids of `documents`. documents: the map of each document's
    passages. passages: the passage corpus the fine stage reads. fine: a reranker with `rerank_run`, a
    `VectorFine`, or None to keep the candidates in document rank order, then position (what a reader of the
    documents would see). depth: documents whose passages are candidates.
    """

    coarse: Any
    documents: DocumentMap
    passages: Corpus
    fine: FineStage | None = None
    depth: int = 5
    last_scored: dict[str, int] = field(default_factory=dict)
    last_documents: Run | None = None

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise RouterankError(f"coarse-to-fine depth must be 1 or more documents, got {self.depth}")

    @property
    def name(self) -> str:
        """`<coarse>@<depth>>>passages(<fine>)`."""
        fine = "document-order" if self.fine is None else self.fine.name
        return f"{getattr(self.coarse, 'name', 'docs')}@{self.depth}>>passages({fine})"

    @property
    def retrievers(self) -> list[Any]:
        """The coarse stage, so a pipeline readies it from the index cache."""
        return [self.coarse]

    @retrievers.setter
    def retrievers(self, value: list[Any]) -> None:
        (self.coarse,) = value

    def index(self, corpus: Corpus) -> None:
        """Index the coarse stage on the passage corpus; the fine stage reads its passages from it."""
        self.coarse.index(corpus)
        self.passages = corpus

    def document_of(self, passage_id: str) -> str:
        """The document a returned passage belongs to."""
        return self.documents.document_of(passage_id)

    def candidates(self, document_run: Run) -> Run:
        """Every passage of each query's top `depth` documents, in document rank order, then position; the scores
        only keep that order."""
        out = {}
        for query_id, ranking in document_run.rankings.items():
            ids = [p for doc in ranking.doc_ids[: self.depth] for p in self.documents.passages(doc)]
            out[query_id] = Ranking(tuple(ids), tuple(float(-i) for i in range(len(ids))))
        return Run(MappingProxyType(out), f"{document_run.name}@{self.depth}")

    def search(self, queries: Iterable[Query] | Mapping[str, Query], k: int = 100) -> Run:
        """Each query's passages, best first: the fine stage's order over the candidates, cut to `k`."""
        query_list = as_query_list(queries)
        self.last_documents = self.coarse.search(query_list, self.depth)
        pool = self.candidates(self.last_documents)
        self.last_scored = {q.id: len(pool[q.id]) if q.id in pool else 0 for q in query_list}
        if self.fine is None:
            return pool.top(k)
        widest = max(self.last_scored.values(), default=0)
        if widest == 0:
            return pool
        return self.fine.rerank_run(query_list, pool, self.passages, widest).top(k)

    def locate(self, queries: Iterable[Query] | Mapping[str, Query], gold: Mapping[str, str]) -> Run:
        """Passage localisation: for each query with a gold document (`gold[query id]`), the fine stage's ranking of
        that document's passages alone, so the rank of a relevant passage inside it can be measured."""
        query_list = [q for q in as_query_list(queries) if q.id in gold]
        pool = {q.id: self.documents.passages(gold[q.id]) for q in query_list}
        run = Run(
            MappingProxyType({q: Ranking(ids, tuple(float(-i) for i in range(len(ids)))) for q, ids in pool.items()})
        )
        if self.fine is None or not query_list:
            return run
        return self.fine.rerank_run(query_list, run, self.passages, max(len(ids) for ids in pool.values()))
