"""Dense retrieval over documents made of passages (a report page of tables and paragraphs), not over passages.

A bi-encoder reads a few hundred tokens, and a document is often longer. `DocumentRetriever` encodes each passage
once and builds one vector per document from them, by `merge`:

- `mean` / `max`: the mean, or the element-wise max, of the passage vectors, then L2-normalised;
- `attention`: `AttentionPooling`, a small learned softmax over the passages on top of their mean;
- `first` (FirstP): the first passage's vector (in TAT-QA, the table);
- `concat`: the passages joined into one text and encoded whole, so it is cut at the model's window;
- `maxp`: no document vector; a document scores its best passage (what a passage index lifted to documents gives).

The passage vectors are kept beside the document vectors for two reasons. A fine stage (`retrieve.coarse`) ranks
the passages inside the top documents by their cosine with the query at no further model cost
(`passage_scores`). And they are the expensive part: the passage encoding is a `DenseRetriever` index over the
passage corpus, cached through `cached_index` by that corpus's fingerprint, so mean, max, first, attention and
maxp over one corpus share a single encoding (and a plain dense index over the same passages shares it too).
`concat` encodes the document texts, cached the same way. Search is an exact inner product in numpy: a few
thousand documents need no ANN index.

The document index itself (passage and document vectors, the map, the pooling weights) is an `IndexedRetriever`
index, so `cached_index` caches it; its key covers the merge, the table style, the encoder (with a local model's
weights digest), the map's fingerprint and the pooling weights' digest.

The attention pooling and its training live in `retrieve.pooling`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from routerank.data.documents import DocumentMap
from routerank.data.types import Corpus, Query, Ranking, Run
from routerank.errors import CorruptIndexError, SpecError, UnknownIdError
from routerank.models.backends import TORCH
from routerank.retrieve.base import IndexedRetriever, NotIndexedError, as_query_list
from routerank.retrieve.dense import DEFAULT_MODEL, DenseRetriever
from routerank.retrieve.pooling import (
    AttentionPooling,
    FrozenVectors,
    normalise,
)
from routerank.retrieve.store import cached_index

MERGES = ("mean", "max", "attention", "first", "concat", "maxp")
QUERY_BLOCK = 1024  # queries scored per matrix product, which bounds maxp's (queries x passages) memory


class DocumentRetriever(IndexedRetriever):
    """Exact inner-product search over one vector per document, built from its passages' vectors by `merge`.

    documents: which passages form each document. model: the bi-encoder spec (default the packaged MiniLM).
    merge: one of `MERGES` (module docstring). pooling: the trained `AttentionPooling`, required by and only
    allowed with merge="attention". table_style: how tables are linearised before encoding (`data.tables`).
    max_length: the encoder's token window (None: the model's own). batch_size: texts per encoder call (32 keeps
    memory low on a laptop). backend: "torch" or an exported CPU graph (`retrieve.dense`). progress: show
    encoding progress bars (off, since tests and studies log their own).

    `index()` takes the PASSAGE corpus; `search()` ranks DOCUMENT ids.
    """

    kind = "documents"

    def __init__(
        self,
        documents: DocumentMap,
        model: str = DEFAULT_MODEL,
        merge: str = "mean",
        pooling: AttentionPooling | None = None,
        table_style: str = "pipe",
        max_length: int | None = None,
        batch_size: int = 32,
        backend: str = TORCH,
        progress: bool = False,
    ):
        if merge == "attention" and pooling is None:
            raise SpecError(
                "merge='attention' needs pooling=",
                fix="train one with train_attention_pooling(), or start from AttentionPooling.initial(dim)",
            )
        if merge != "attention" and pooling is not None:
            raise SpecError(f"pooling= applies to merge='attention' only, not {merge!r}", fix="drop pooling=")
        self._settle(model, merge, table_style, max_length, batch_size, backend, progress)
        self.documents, self.pooling = documents, pooling

    def _settle(self, model, merge, table_style, max_length, batch_size, backend, progress) -> None:
        if merge not in MERGES:
            raise SpecError(f"unknown merge {merge!r}", fix=f"one of {', '.join(MERGES)}")
        self.merge, self.table_style = merge, table_style
        self.encoder = DenseRetriever(
            model, max_length=max_length, batch_size=batch_size, progress=progress, backend=backend
        )
        self.name = f"documents:{merge}" if model == DEFAULT_MODEL else f"documents:{merge},{model}"
        self._passage_ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._passages: np.ndarray | None = None
        self._document_ids: list[str] = []
        self._vectors: np.ndarray | None = None
        self._order = self._starts = np.zeros(0, dtype=np.int64)

    def config(self) -> dict[str, Any]:
        """The encoder's config (model, window, backend, a local model's weights digest), the merge, the table
        style, the map's fingerprint and, for attention, the pooling weights' digest: any change is a new index."""
        config = {
            "encoder": self.encoder.config(),
            "merge": self.merge,
            "table_style": self.table_style,
            "documents": self.documents.fingerprint,
        }
        if self.pooling is not None:
            config["pooling"] = self.pooling.digest
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DocumentRetriever:
        """A retriever awaiting `_read_files`, which restores the map and the pooling from the index's own files."""
        encoder = config["encoder"]
        retriever = cls.__new__(cls)
        retriever._settle(
            encoder["model"],
            config["merge"],
            config["table_style"],
            encoder["max_length"],
            32,
            encoder.get("backend", TORCH),
            False,
        )
        return retriever

    def encoded(self, corpus: Corpus) -> np.ndarray:
        """The encoder's normalised vectors of `corpus` in its order, from the index cache when an earlier build
        (of any merge, or a plain dense index) encoded the same texts with the same encoder."""
        return cached_index(self.encoder, corpus).embeddings

    def index(self, corpus: Corpus) -> None:
        """Encode (or fetch from the cache) the passages of `corpus`, the PASSAGE corpus, and build each document's
        vector by `merge`; every passage of the map must be in `corpus`."""
        passages = self.documents.passage_corpus(corpus, table_style=self.table_style)
        missing = [p for doc in self.documents.document_ids for p in self.documents.passages(doc) if p not in passages]
        if missing:
            raise UnknownIdError(
                f"{len(missing)} passages of the document map are not in the corpus, e.g. {missing[:3]}",
                fix="index the passage corpus the map was built for, or a map restricted to this corpus",
            )
        self._passage_ids, self._passages = passages.ids, normalise(self.encoded(passages))
        self._document_ids = sorted(self.documents.document_ids)  # sorted, so stable ties break by id as in Ranking
        self._group()
        self._vectors = self._merge(corpus)
        self._fingerprint = corpus.fingerprint

    def _group(self) -> None:
        self._rows = {pid: i for i, pid in enumerate(self._passage_ids)}
        groups = [[self._rows[p] for p in self.documents.passages(doc)] for doc in self._document_ids]
        if any(not group for group in groups):
            raise UnknownIdError("a document of the map has no passages", fix="drop empty documents from the map")
        self._order = np.array([row for group in groups for row in group], dtype=np.int64)
        self._starts = np.cumsum([0] + [len(group) for group in groups[:-1]]).astype(np.int64)

    def _groups(self) -> list[np.ndarray]:
        return np.split(self._order, self._starts[1:])

    def _merge(self, corpus: Corpus) -> np.ndarray | None:
        passages = self._passages
        if self.merge == "maxp":
            return None
        if self.merge == "concat":
            texts = self.documents.document_corpus(corpus, table_style=self.table_style)
            rows = {doc_id: i for i, doc_id in enumerate(texts.ids)}
            return normalise(self.encoded(texts)[[rows[d] for d in self._document_ids]])
        if self.merge == "first":
            return passages[self._order[self._starts]]
        if self.merge == "attention":
            return np.stack([self.pooling.pool(passages[group]) for group in self._groups()])
        reduce = np.add if self.merge == "mean" else np.maximum
        merged = reduce.reduceat(passages[self._order], self._starts, axis=0)
        return normalise(merged)  # the mean's divide by n is dropped: normalising removes it

    @property
    def document_ids(self) -> list[str]:
        """The indexed documents, in the order of `document_vectors` rows."""
        return list(self._document_ids)

    @property
    def document_vectors(self) -> np.ndarray | None:
        """One normalised row per document (None for maxp, which has no document vector)."""
        self._check_indexed()
        return self._vectors

    def passage_vectors(self, passage_ids: Sequence[str]) -> np.ndarray:
        """The stored normalised vectors of the passages, one row each, in the order given."""
        self._check_indexed()
        unknown = [p for p in passage_ids if p not in self._rows]
        if unknown:
            raise UnknownIdError(f"{len(unknown)} passages are not in this index, e.g. {unknown[:3]}")
        return self._passages[[self._rows[p] for p in passage_ids]].reshape(len(passage_ids), -1)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised query vectors from the same encoder as the passages."""
        return normalise(self.encoder.encode(list(texts), progress=False))

    def passage_scores(self, query_text: str, passage_ids: Sequence[str]) -> np.ndarray:
        """The cosine of the query with each stored passage vector: a fine stage with no model call but the query's."""
        return self.passage_vectors(passage_ids) @ self.encode_queries([query_text])[0]

    def frozen_vectors(self, queries: Iterable[Query]) -> FrozenVectors:
        """The stored passage vectors and these queries' vectors, for `train_attention_pooling`."""
        self._check_indexed()
        query_list = list(queries)
        vectors = self.encode_queries([q.text for q in query_list])
        by_id = {q.id: vectors[i] for i, q in enumerate(query_list)}
        return FrozenVectors(tuple(self._passage_ids), self._passages, MappingProxyType(by_id))

    def document_scores(self, query_vectors: np.ndarray) -> np.ndarray:
        """Query x document scores: inner products with the document vectors, or for maxp the best passage's."""
        self._check_indexed()
        if self._vectors is not None:
            return query_vectors @ self._vectors.T
        return np.maximum.reduceat(query_vectors @ self._passages[self._order].T, self._starts, axis=1)

    def search(self, queries: Iterable[Query] | Mapping[str, Query], k: int = 100) -> Run:
        """Each query's top `k` documents by exact inner product, best first (ties by document id)."""
        self._check_indexed()
        query_list = as_query_list(queries)
        k = min(k, len(self._document_ids))
        rankings: dict[str, Ranking] = {}
        for start in range(0, len(query_list), QUERY_BLOCK):
            block = query_list[start : start + QUERY_BLOCK]
            scores = self.document_scores(self.encode_queries([q.text for q in block]))
            for row, query in zip(scores, block, strict=True):
                top = np.argsort(-row, kind="stable")[:k]
                rankings[query.id] = Ranking(tuple(self._document_ids[j] for j in top), tuple(row[top].tolist()))
        return Run(MappingProxyType(rankings), self.name)

    def _check_indexed(self) -> None:
        if self._passages is None:
            raise NotIndexedError("DocumentRetriever used before index() or load()")

    def _write_files(self, folder: Path) -> None:
        arrays = {"passages": self._passages}
        if self._vectors is not None:
            arrays["documents"] = np.ascontiguousarray(self._vectors, dtype=np.float32)
        save_file(arrays, str(folder / "vectors.safetensors"))
        (folder / "passage_ids.json").write_text(json.dumps(self._passage_ids))
        (folder / "document_ids.json").write_text(json.dumps(self._document_ids))
        parts = {doc: list(self.documents.passages(doc)) for doc in self._document_ids}
        (folder / "documents.json").write_text(json.dumps({"parts": parts, "kinds": dict(self.documents.kinds)}))
        if self.pooling is not None:
            self.pooling.write(folder)

    def _read_files(self, folder: Path, manifest: dict[str, Any]) -> None:
        arrays = load_file(str(folder / "vectors.safetensors"))
        self._passages, self._vectors = arrays["passages"], arrays.get("documents")
        self._passage_ids = json.loads((folder / "passage_ids.json").read_text())
        self._document_ids = json.loads((folder / "document_ids.json").read_text())
        saved = json.loads((folder / "documents.json").read_text())
        parts = MappingProxyType({doc: tuple(ids) for doc, ids in saved["parts"].items()})
        self.documents = DocumentMap(parts=parts, kinds=MappingProxyType(saved["kinds"]))
        config = manifest["config"]
        if self.documents.fingerprint != config["documents"]:
            raise CorruptIndexError("the saved document map does not match its fingerprint", path=folder)
        self.pooling = AttentionPooling.load(folder) if self.merge == "attention" else None
        if self.pooling is not None and self.pooling.digest != config.get("pooling"):
            raise CorruptIndexError("the saved pooling does not match its digest", path=folder)
        if len(self._passage_ids) != len(self._passages):
            raise CorruptIndexError(
                f"{len(self._passage_ids)} passage ids but {len(self._passages)} vectors", path=folder
            )
        self._group()
