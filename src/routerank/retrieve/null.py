"""R0, the null retriever: it returns nothing, which is how a router says "don't retrieve"."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from routerank.data.types import Corpus, Query, Ranking, Run
from routerank.retrieve.base import IndexedRetriever, as_query_list


class NullRetriever(IndexedRetriever):
    """A retriever that returns an empty ranking for every query; it indexes nothing but the corpus fingerprint."""

    kind = "null"

    def __init__(self) -> None:
        self.name = "null"

    def config(self) -> dict[str, Any]:
        """No settings: an empty dict."""
        return {}

    def index(self, corpus: Corpus) -> None:
        """Record the corpus's fingerprint, so the empty index saves and loads like any other."""
        self._fingerprint = corpus.fingerprint

    def search(self, queries: Iterable[Query] | Mapping[str, Query], k: int = 100) -> Run:
        """An empty ranking for each query."""
        return Run(MappingProxyType({q.id: Ranking() for q in as_query_list(queries)}), self.name)

    def _write_files(self, folder: Path) -> None:
        pass

    def _read_files(self, folder: Path, manifest: dict[str, Any]) -> None:
        pass
