"""Rerankers behind one protocol (`RerankerBackend`). Families load lazily by spec (see registry)."""

from routerank.rerank.base import BaseReranker, PairScoringReranker, RerankerBackend
from routerank.rerank.registry import make_reranker

__all__ = ["BaseReranker", "PairScoringReranker", "RerankerBackend", "make_reranker"]
