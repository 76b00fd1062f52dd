"""Retrievers behind one protocol: BM25, BM25+RM3, dense, fusion (hybrid) and the null retriever R0."""

from routerank.retrieve.base import IndexedRetriever, Retriever
from routerank.retrieve.bm25 import BM25Retriever
from routerank.retrieve.dense import DenseRetriever
from routerank.retrieve.fusion import FusionRetriever, rrf, weighted
from routerank.retrieve.null import NullRetriever
from routerank.retrieve.rm3 import RM3Retriever
from routerank.retrieve.store import cached_index, load_index

__all__ = [
    "BM25Retriever",
    "DenseRetriever",
    "FusionRetriever",
    "IndexedRetriever",
    "NullRetriever",
    "RM3Retriever",
    "Retriever",
    "cached_index",
    "load_index",
    "rrf",
    "weighted",
]
