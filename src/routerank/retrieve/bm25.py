"""BM25 over bm25s sparse matrices, with PyStemmer stemming and English stopwords."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from routerank.data.types import Corpus, Query, Ranking, Run
from routerank.retrieve.base import IndexedRetriever, NotIndexedError, as_query_list


@dataclass(frozen=True)
class BM25Matrix:
    """The index as a [documents, terms] matrix of BM25 contributions: what query expansion (RM3) builds on.

    scores: scipy CSC matrix, scores[d, t] = idf(t) * tf-component(t, d), as bm25s precomputed it.
    vocab: term -> column. doc_ids: row -> document id. k1, b, method, idf_method: the bm25s parameters.
    """

    scores: Any
    vocab: Mapping[str, int]
    doc_ids: tuple[str, ...]
    k1: float
    b: float
    method: str
    idf_method: str


class BM25Retriever(IndexedRetriever):
    """BM25 over a bm25s index. k1, b: the usual saturation and length normalisation; method: the bm25s variant
    (lucene by default, as Anserini); stopwords / stemmer: the analysis (English, PyStemmer); progress: bars."""

    kind = "bm25"

    def __init__(
        self,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        stopwords: str | None = "en",
        stemmer: str | None = "english",
        progress: bool = False,
    ):
        self.k1, self.b, self.method = k1, b, method
        self.stopwords, self.stemmer_lang = stopwords, stemmer
        self.progress = progress
        self.name = "bm25"
        self._model = None
        self._doc_ids: list[str] = []
        self._stemmer = None

    def config(self) -> dict[str, Any]:
        """The parameters its index is keyed and saved by: k1, b, method, stopwords, stemmer."""
        return {
            "k1": self.k1,
            "b": self.b,
            "method": self.method,
            "stopwords": self.stopwords,
            "stemmer": self.stemmer_lang,
        }

    def _tokenize(self, texts: list[str], progress: bool = False):
        # deferred: bm25s (and scipy) load only when a BM25 index is built or read
        import bm25s

        if self._stemmer is None and self.stemmer_lang:
            # deferred: the stemmer loads only when text is tokenised
            import Stemmer

            self._stemmer = Stemmer.Stemmer(self.stemmer_lang)
        return bm25s.tokenize(texts, stopwords=self.stopwords, stemmer=self._stemmer, show_progress=progress)

    def index(self, corpus: Corpus) -> None:
        """Tokenise and index the corpus's documents (title and body), replacing any earlier index."""
        # deferred: bm25s (and scipy) load only when a BM25 index is built or read
        import bm25s

        tokens = self._tokenize([doc.full_text for doc in corpus.documents], self.progress)
        model = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        model.index(tokens, show_progress=self.progress)
        self._model, self._doc_ids, self._fingerprint = model, corpus.ids, corpus.fingerprint

    def search(self, queries: Iterable[Query] | Mapping[str, Query], k: int = 100) -> Run:
        """Each query's top `k` documents with a positive BM25 score; a query with no index terms ranks none."""
        if self._model is None:
            raise NotIndexedError("BM25Retriever.search() before index() or load()")
        query_list = as_query_list(queries)
        rankings: dict[str, Ranking] = {q.id: Ranking() for q in query_list}
        progress = self.progress and len(query_list) >= 1000
        as_strings = self.terms([q.text for q in query_list], progress)
        nonempty = [i for i, toks in enumerate(as_strings) if toks]
        k = min(k, len(self._doc_ids))
        if nonempty and k > 0:
            docs, scores = self._model.retrieve([as_strings[i] for i in nonempty], k=k, show_progress=progress)
            ids = self._doc_ids
            for row, i in enumerate(nonempty):
                row_scores = scores[row].tolist()
                keep = sum(1 for s in row_scores if s > 0)
                rankings[query_list[i].id] = Ranking(
                    tuple(ids[j] for j in docs[row, :keep].tolist()), tuple(row_scores[:keep])
                )
        return Run(MappingProxyType(rankings), self.name)

    def terms(self, texts: list[str], progress: bool = False) -> list[list[str]]:
        """Each text's index terms in order: lowercased, stopwords dropped, stemmed, as documents were indexed."""
        tokens = self._tokenize(list(texts), progress)
        vocab_inverse = {i: t for t, i in tokens.vocab.items()}
        return [[vocab_inverse[i] for i in ids] for ids in tokens.ids]

    def matrix(self) -> BM25Matrix:
        """The index's BM25 contributions as a documents x terms matrix (see `BM25Matrix`)."""
        # deferred: scipy costs ~0.2 s at import and only this path needs it
        import scipy.sparse

        if self._model is None:
            raise NotIndexedError("BM25Retriever.matrix() before index() or load()")
        arrays, model = self._model.scores, self._model
        shape = (int(arrays["num_docs"]), len(arrays["indptr"]) - 1)
        scores = scipy.sparse.csc_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)
        return BM25Matrix(
            scores, model.vocab_dict, tuple(self._doc_ids), model.k1, model.b, model.method, model.idf_method
        )

    def _write_files(self, folder: Path) -> None:
        self._model.save(str(folder))
        (folder / "doc_ids.json").write_text(json.dumps(self._doc_ids))

    def _read_files(self, folder: Path, manifest: dict[str, Any]) -> None:
        # deferred: bm25s (and scipy) load only when a BM25 index is built or read
        import bm25s

        self._model = bm25s.BM25.load(str(folder))
        self._doc_ids = json.loads((folder / "doc_ids.json").read_text())
