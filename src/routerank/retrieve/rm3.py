"""BM25 with RM3 pseudo-relevance feedback: Lavrenko and Croft's relevance model, mixed back into the query.

Per query: a first BM25 pass; its top `fb_docs` documents give the relevance model RM1, the sum of each document's
term distribution P(w|D) (cut to the document's `fb_terms` most frequent terms and renormalised, as Anserini does)
weighted by the document's first-pass score; the `fb_terms` heaviest terms of RM1, L1-normalised, are mixed with
the L1-normalised query as
    q' = original_weight * q + (1 - original_weight) * RM1        (RM3)
and q' scores every document as sum_w q'(w) * BM25(w, D): a weighted second pass over the same index.

Why there is no second index: bm25s stores each (document, term) contribution idf(t) * tf / (tf + L_D) (Lucene and
Robertson; ATIRE multiplies by k1 + 1), where L_D = k1 (1 - b + b |D| / avgdl) is shared by every term of D. So
tf = L_D * r / (1 - r) with r = contribution / idf, and L_D cancels in P(w|D) = tf / sum tf: each document's exact
term distribution comes back from the BM25 index itself. `rm3` therefore caches, loads and shares the very index
`bm25` uses. The variants whose contributions do not invert this way (bm25l, bm25+) are refused.

Terms pass Anserini's filter before they may expand a query: at most 20 characters, and found in at most `max_df`
(10%) of the documents. Defaults follow Anserini: fb_docs=10, fb_terms=10, original_weight=0.5.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from routerank.data.types import Corpus, Query, Ranking, Run
from routerank.errors import SpecError
from routerank.retrieve.base import as_query_list
from routerank.retrieve.bm25 import BM25Matrix, BM25Retriever

INVERTIBLE = ("lucene", "robertson", "atire")
MAX_TERM_LENGTH = 20
PARAMETERS = {"fb_docs": int, "fb_terms": int, "original_weight": float, "max_df": float}  # what an rm3: spec sets


def _idf(method: str, df: np.ndarray, n_docs: int) -> np.ndarray:
    """bm25s's idf per term, vectorised (robertson clipped at 0 as bm25s does)."""
    df = df.astype(np.float64)
    with np.errstate(divide="ignore"):
        if method == "lucene":
            return np.log1p((n_docs - df + 0.5) / (df + 0.5))
        if method == "robertson":
            return np.log(np.maximum((n_docs - df + 0.5) / (df + 0.5), 1.0))
        return np.log(n_docs / np.maximum(df, 1.0))  # atire


@dataclass(frozen=True)
class FeedbackIndex:
    """What RM3 reads from a BM25 index, derived once.

    scores: CSC [documents, terms] BM25 contributions. distributions: CSR [documents, terms] P(w|D), zeroed for
    terms the filter drops. terms: column -> term. vocab: term -> column.
    """

    scores: Any
    distributions: Any
    terms: tuple[str, ...]
    vocab: Mapping[str, int]
    doc_ids: tuple[str, ...]

    @classmethod
    def from_matrix(cls, matrix: BM25Matrix, max_df: float) -> FeedbackIndex:
        """The feedback view of a BM25 index: term frequencies recovered from its contributions, and each document's
        term distribution with terms over 20 characters or in more than `max_df` of documents zeroed. A BM25 variant
        whose contributions do not invert (bm25l, bm25+) raises `SpecError`."""
        # deferred: scipy costs ~0.2 s at import and only this path needs it
        import scipy.sparse

        if matrix.method not in INVERTIBLE or matrix.idf_method not in INVERTIBLE:
            raise SpecError(
                f"RM3 cannot read term frequencies from a {matrix.method!r} BM25 index",
                fix=f"use BM25 method {' or '.join(INVERTIBLE)} (e.g. rm3:method=lucene)",
            )
        scores = matrix.scores.tocsc()
        n_docs, n_terms = scores.shape
        df = np.diff(scores.indptr)
        idf = _idf(matrix.idf_method, df, n_docs)
        if matrix.method == "atire":
            idf = idf * (matrix.k1 + 1)
        rows = scores.tocsr()
        columns = rows.indices
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(idf[columns] > 0, rows.data / idf[columns], 0.0)
        ratio = np.clip(ratio, 0.0, 1.0 - 1e-7)
        tf = ratio / (1.0 - ratio)  # proportional to the term frequency, up to the document's L_D
        row_of = np.repeat(np.arange(n_docs), np.diff(rows.indptr))
        totals = np.bincount(row_of, weights=tf, minlength=n_docs)[row_of]
        distribution = np.divide(tf, totals, out=np.zeros_like(tf), where=totals > 0)
        terms = [""] * n_terms
        for term, column in matrix.vocab.items():
            if column < n_terms:
                terms[column] = term
        allowed = np.array([0 < len(t) <= MAX_TERM_LENGTH for t in terms], dtype=bool) & (df <= max_df * n_docs)
        distribution = np.where(allowed[columns], distribution, 0.0)
        distributions = scipy.sparse.csr_matrix((distribution, columns, rows.indptr), shape=rows.shape)
        vocab = {t: c for t, c in matrix.vocab.items() if c < n_terms}
        return cls(scores, distributions, tuple(terms), MappingProxyType(vocab), matrix.doc_ids)


def top_docs(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best positive scores, best first; ties by index, so runs are deterministic."""
    hits = np.flatnonzero(scores > 0)
    if len(hits) > k:
        hits = hits[np.argpartition(-scores[hits], k - 1)[:k]]
    return hits[np.lexsort((hits, -scores[hits]))]


class RM3Retriever:
    """BM25 with RM3 query expansion over the BM25 retriever's own index (see the module docstring).

    bm25: the BM25Retriever to expand (default: bm25s defaults); its index is the only index RM3 needs.
    fb_docs: feedback documents per query (10, Anserini's default).
    fb_terms: expansion terms kept from the relevance model (10).
    original_weight: the original query's share of the expanded query (0.5); 1.0 is plain BM25.
    max_df: terms in more than this share of documents never expand a query (0.1, Anserini's filter).
    """

    def __init__(
        self,
        bm25: BM25Retriever | None = None,
        fb_docs: int = 10,
        fb_terms: int = 10,
        original_weight: float = 0.5,
        max_df: float = 0.1,
    ):
        if fb_docs < 1 or fb_terms < 1:
            raise SpecError(f"fb_docs and fb_terms must be at least 1, got {fb_docs} and {fb_terms}")
        if not 0.0 <= original_weight <= 1.0:
            raise SpecError(f"original_weight {original_weight} is outside [0, 1]", fix="e.g. rm3:original_weight=0.5")
        if not 0.0 < max_df <= 1.0:
            raise SpecError(f"max_df {max_df} is outside (0, 1]")
        self.bm25 = bm25 if bm25 is not None else BM25Retriever()
        if self.bm25.method not in INVERTIBLE:
            raise SpecError(
                f"RM3 cannot expand a {self.bm25.method!r} BM25", fix=f"use method {' or '.join(INVERTIBLE)}"
            )
        self.fb_docs, self.fb_terms, self.original_weight, self.max_df = fb_docs, fb_terms, original_weight, max_df
        self.name = "bm25+rm3"
        self._feedback: FeedbackIndex | None = None

    @property
    def retrievers(self) -> list[BM25Retriever]:
        """The one retriever RM3 wraps: pipelines index (or load from the cache) it as plain BM25."""
        return [self.bm25]

    @retrievers.setter
    def retrievers(self, value: list[BM25Retriever]) -> None:
        [self.bm25] = value
        self._feedback = None

    def config(self) -> dict[str, Any]:
        """The wrapped BM25's config and the RM3 parameters."""
        return {
            "bm25": self.bm25.config(),
            "fb_docs": self.fb_docs,
            "fb_terms": self.fb_terms,
            "original_weight": self.original_weight,
            "max_df": self.max_df,
        }

    def index(self, corpus: Corpus) -> None:
        """Index the corpus with the wrapped BM25, the only index RM3 needs."""
        self.bm25.index(corpus)
        self._feedback = None

    def save(self, path: str | Path) -> None:
        """Save the wrapped BM25's index to `path`; the RM3 parameters are not part of it."""
        self.bm25.save(path)

    @property
    def feedback(self) -> FeedbackIndex:
        """The `FeedbackIndex` of the wrapped BM25's index, derived on first use and again after it is re-indexed."""
        if self._feedback is None:
            self._feedback = FeedbackIndex.from_matrix(self.bm25.matrix(), self.max_df)
        return self._feedback

    def doc_terms(self, doc_id: str) -> dict[str, float]:
        """P(w|D) of one document over the terms that may expand a query (what RM1 sums)."""
        fb = self.feedback
        row = fb.distributions.getrow(fb.doc_ids.index(doc_id))
        return {fb.terms[c]: float(v) for c, v in zip(row.indices, row.data, strict=True) if v > 0}

    def _query_weights(self, terms: list[str]) -> dict[int, float]:
        counts = Counter(self.feedback.vocab[t] for t in terms if t in self.feedback.vocab)
        total = sum(counts.values())
        return {column: count / total for column, count in counts.items()}

    def _scores(self, weights: Mapping[int, float]) -> np.ndarray:
        columns = np.fromiter(weights, dtype=np.int64, count=len(weights))
        values = np.fromiter(weights.values(), dtype=np.float64, count=len(weights))
        return np.asarray(self.feedback.scores[:, columns] @ values).ravel()

    def _expanded(self, terms: list[str]) -> dict[int, float]:
        weights = self._query_weights(terms)
        if not weights or self.original_weight == 1.0:
            return weights
        first = self._scores(weights)
        docs = top_docs(first, self.fb_docs)
        rows = self.feedback.distributions[docs]
        relevance: dict[int, float] = {}
        for i, doc in enumerate(docs.tolist()):
            columns = rows.indices[rows.indptr[i] : rows.indptr[i + 1]]
            values = rows.data[rows.indptr[i] : rows.indptr[i + 1]]
            keep = top_docs(values, self.fb_terms)  # each document's own top terms, as Anserini prunes
            norm = values[keep].sum()
            for column, value in zip(columns[keep].tolist(), values[keep].tolist(), strict=True):
                relevance[column] = relevance.get(column, 0.0) + value / norm * first[doc]
        expanded = {c: self.original_weight * w for c, w in weights.items()}
        best = sorted(relevance.items(), key=lambda item: (-item[1], item[0]))[: self.fb_terms]
        mass = sum(value for _, value in best)
        for column, value in best:
            expanded[column] = expanded.get(column, 0.0) + (1.0 - self.original_weight) * value / mass
        return expanded

    def expand(self, query: Query | str) -> dict[str, float]:
        """The expanded query q' as term -> weight (weights sum to 1), heaviest first."""
        text = query.text if isinstance(query, Query) else query
        [terms] = self.bm25.terms([text])
        weights = self._expanded(terms)
        ordered = sorted(weights.items(), key=lambda item: (-item[1], item[0]))
        return {self.feedback.terms[c]: float(w) for c, w in ordered}

    def search(self, queries: Iterable[Query] | Mapping[str, Query], k: int = 100) -> Run:
        """Each query's top `k` documents with a positive score under its RM3-expanded query; a query with no index
        terms ranks none."""
        query_list = as_query_list(queries)
        term_lists = self.bm25.terms([q.text for q in query_list]) if query_list else []
        doc_ids = self.feedback.doc_ids if query_list else ()
        rankings: dict[str, Ranking] = {}
        for query, terms in zip(query_list, term_lists, strict=True):
            weights = self._expanded(terms)
            if not weights or k < 1:
                rankings[query.id] = Ranking()
                continue
            scores = self._scores(weights)
            best = top_docs(scores, min(k, len(doc_ids)))
            rankings[query.id] = Ranking(tuple(doc_ids[i] for i in best.tolist()), tuple(scores[best].tolist()))
        return Run(MappingProxyType(rankings), self.name)
