"""Retriever kinds by name, imported only when asked for."""

from __future__ import annotations

import importlib

from routerank.errors import StaleIndexError

KINDS = {
    "bm25": "routerank.retrieve.bm25:BM25Retriever",
    "dense": "routerank.retrieve.dense:DenseRetriever",
    "documents": "routerank.retrieve.documents:DocumentRetriever",
    "null": "routerank.retrieve.null:NullRetriever",
}


def retriever_class(kind: str, path=None):
    """The retriever class saved indexes of `kind` load as, imported on demand; an unknown kind raises
    `StaleIndexError`, since the index was written by something this version does not know."""
    if kind not in KINDS:
        raise StaleIndexError(f"unknown retriever kind {kind!r}", path=path, fix=f"one of {sorted(KINDS)}")
    module, attr = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), attr)
