"""routerank: domain-aware retrieval and reranking for RAG.

`import routerank` is cheap: torch, transformers and faiss load only when a model or index is used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_dataset": "routerank.data.registry",
    "list_datasets": "routerank.data.registry",
    "data_root": "routerank.data.registry",
    "Corpus": "routerank.data.types",
    "Dataset": "routerank.data.types",
    "Document": "routerank.data.types",
    "Qrels": "routerank.data.types",
    "Query": "routerank.data.types",
    "Ranking": "routerank.data.types",
    "Run": "routerank.data.types",
    "ScoredDoc": "routerank.data.types",
    "read_run": "routerank.data.trec",
    "write_run": "routerank.data.trec",
    "evaluate": "routerank.evaluate.measures",
    "paired_test": "routerank.evaluate.significance",
    "build_pipeline": "routerank.pipeline",
    "Reranker": "routerank.api",
    "RankedResults": "routerank.api",
    "RankResult": "routerank.api",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'routerank' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    return getattr(module, "build" if name == "build_pipeline" else name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "Corpus",
    "Dataset",
    "Document",
    "Qrels",
    "Query",
    "RankResult",
    "RankedResults",
    "Ranking",
    "Reranker",
    "Run",
    "ScoredDoc",
    "build_pipeline",
    "data_root",
    "evaluate",
    "list_datasets",
    "load_dataset",
    "paired_test",
    "read_run",
    "write_run",
]
