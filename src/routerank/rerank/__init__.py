"""Rerankers behind one protocol. Families load lazily by spec (see registry)."""

from routerank.rerank.base import BaseReranker, PointwiseReranker, Reranker
from routerank.rerank.registry import make_reranker

__all__ = ["BaseReranker", "PointwiseReranker", "Reranker", "make_reranker"]
