"""The Retriever role: index a corpus, then turn queries into a Run."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from routerank.data.types import Corpus, Query, Run
from routerank.errors import RouterankError
from routerank.retrieve.store import load_index, save_index


@runtime_checkable
class Retriever(Protocol):
    """What a pipeline needs of a first stage: a `name`, `index`, `search` and `save`."""

    name: str

    def index(self, corpus: Corpus) -> None:
        """Build the index over `corpus`, replacing any earlier one."""

    def search(self, queries: Iterable[Query] | Mapping[str, Query], k: int = 100) -> Run:
        """Each query's top `k` documents, best first, as a `Run` keyed by query id."""

    def save(self, path: str | Path) -> None:
        """Write the index to the folder `path`."""


class NotIndexedError(RouterankError):
    """search() was called before index() or load()."""


def as_query_list(queries: Iterable[Query] | Mapping[str, Query] | Sequence[str]) -> list[Query]:
    """Accept queries as Query objects, a {id: Query} mapping, or plain strings (ids q0, q1, ...)."""
    if isinstance(queries, Mapping):
        queries = queries.values()
    out: list[Query] = []
    for i, q in enumerate(queries):
        if isinstance(q, Query):
            out.append(q)
        elif isinstance(q, str):
            out.append(Query(f"q{i}", q))
        else:
            raise TypeError(f"expected Query or str, got {type(q).__name__}")
    return out


class IndexedRetriever:
    """Shared save/load for retrievers that keep an index: the store adds a manifest and checksums."""

    kind: ClassVar[str]
    name: str

    def config(self) -> dict[str, Any]:
        """The settings that define the index, saved in its manifest and part of its cache key; `from_config` takes
        them back."""
        raise NotImplementedError

    def _write_files(self, folder: Path) -> None:
        raise NotImplementedError

    def _read_files(self, folder: Path, manifest: dict[str, Any]) -> None:
        raise NotImplementedError

    @property
    def corpus_fingerprint(self) -> str | None:
        """The fingerprint of the corpus it indexed (`Corpus.fingerprint`), or None before `index()` or `load()`."""
        return getattr(self, "_fingerprint", None)

    def save(self, path: str | Path) -> None:
        """Write the index to the folder `path` atomically, with a manifest of its config, corpus and checksums."""
        save_index(self, path)

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        """A retriever from the config its index manifest records (the inverse of `config()`)."""
        return cls(**config)

    @classmethod
    def load(cls, path: str | Path, corpus: Corpus | None = None):
        """A retriever of this class from an index saved at `path`, checksums verified; a `corpus` given must be the
        one it was built for (else `StaleIndexError`)."""
        return load_index(path, expected=cls, corpus=corpus)
