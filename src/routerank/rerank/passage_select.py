"""Cheap passage selectors for the IDCM cascade: score every passage of a document, keep the best k.

bm25            BM25 over one document's passages, with statistics from that document only
minilm          bi-encoder cosine with the packaged MiniLM (any `dense:<model-spec>` works too)
first           the first k passages, whatever the query (FirstP-style baseline at the same scorer cost)
learned:<file>  a linear mix of the features above, distilled from the expensive scorer (`fit_linear`)
all | full      no selection: every passage goes to the scorer (the baseline)
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

import numpy as np

from routerank.data.documents import DocumentMap
from routerank.data.types import Corpus, Query, Ranking, Run
from routerank.errors import DataFormatError, SpecError
from routerank.rerank.passages import Passage
from routerank.retrieve.base import as_query_list
from routerank.retrieve.dense import load_sentence_transformer

TOKEN = re.compile(r"(?u)\b\w\w+\b")


class PassageSelector(Protocol):
    """Scores every passage of each document for a query; `name` shows in the IDCM reranker's name."""

    name: str

    def score(self, query: str, docs: Sequence[Sequence[Passage]]) -> list[np.ndarray]:
        """One array of passage scores per document, higher is better."""
        ...


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best passages, in document order; ties go to the earlier passage."""
    best = np.argsort(-scores, kind="stable")[:k]
    return np.sort(best)


class BM25PassageSelector:
    """Per-document BM25: idf and average length come from the document's own passages, at query time."""

    name = "bm25"

    def __init__(self, k1: float = 1.2, b: float = 0.75, stopwords: str | None = "en", stemmer: str | None = "english"):
        self.k1, self.b = k1, b
        self._stopwords_lang, self._stemmer_lang = stopwords, stemmer
        self._stopwords: frozenset[str] | None = None
        self._stemmer = None

    def terms(self, text: str) -> list[str]:
        """Lowercased words of two or more characters, stopwords removed and stemmed as configured."""
        if self._stopwords is None:
            # deferred: bm25s (and scipy) load only when a BM25 index is built or read
            from bm25s.stopwords import STOPWORDS_EN

            self._stopwords = frozenset(STOPWORDS_EN) if self._stopwords_lang == "en" else frozenset()
            if self._stemmer_lang:
                # deferred: the stemmer loads only when text is tokenised
                import Stemmer

                self._stemmer = Stemmer.Stemmer(self._stemmer_lang)
        words = [w for w in TOKEN.findall(text.lower()) if w not in self._stopwords]
        return self._stemmer.stemWords(words) if self._stemmer is not None else words

    def score(self, query: str, docs: Sequence[Sequence[Passage]]) -> list[np.ndarray]:
        """Per document, each passage's BM25 score for the query, with idf and average length from that document's
        passages alone."""
        query_tf = Counter(self.terms(query))
        return [self._score_doc(query_tf, passages) for passages in docs]

    def _score_doc(self, query_tf: Counter, passages: Sequence[Passage]) -> np.ndarray:
        if not passages:
            return np.zeros(0)
        counts = [Counter(self.terms(p.full_text)) for p in passages]
        lengths = np.array([sum(c.values()) for c in counts], dtype=np.float64)
        norm = self.k1 * (1 - self.b + self.b * lengths / max(lengths.mean(), 1.0))
        scores = np.zeros(len(passages))
        for term, weight in query_tf.items():
            tf = np.array([c.get(term, 0) for c in counts], dtype=np.float64)
            df = np.count_nonzero(tf)
            if df == 0:
                continue
            idf = np.log(1 + (len(passages) - df + 0.5) / (df + 0.5))
            scores += weight * idf * tf * (self.k1 + 1) / (tf + norm)
        return scores


class DensePassageSelector:
    """Bi-encoder cosine. Passage vectors depend only on the passage, so they are kept for later queries."""

    def __init__(
        self, model: str = "minilm", batch_size: int = 64, device: str | None = None, max_cached: int = 200_000
    ):
        self.model_spec, self.batch_size, self.device, self.max_cached = model, batch_size, device, max_cached
        self.name = model if model == "minilm" else f"dense:{model}"
        self._encoder = None
        self._vectors: dict[str, np.ndarray] = {}

    @property
    def encoder(self):
        """The sentence-transformers model, loaded on first use."""
        if self._encoder is None:
            self._encoder = load_sentence_transformer(self.model_spec, self.device)
        return self._encoder

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 embeddings of `texts`, one row each."""
        vectors = self.encoder.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def passage_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of passage texts, reused from earlier queries where known; the store is emptied when it would
        pass `max_cached` texts."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            if len(self._vectors) + len(missing) > self.max_cached:
                self._vectors.clear()
            self._vectors.update(zip(missing, self.encode(missing), strict=True))
        return np.stack([self._vectors[t] for t in texts])

    def score(self, query: str, docs: Sequence[Sequence[Passage]]) -> list[np.ndarray]:
        """Per document, each passage's cosine with the query."""
        texts = [p.full_text for passages in docs for p in passages]
        if not texts:
            return [np.zeros(0) for _ in docs]
        cosines = self.passage_vectors(texts) @ self.encode([query])[0]
        out, start = [], 0
        for passages in docs:
            out.append(cosines[start : start + len(passages)].astype(np.float64))
            start += len(passages)
        return out


class FirstPassages:
    """`first`: the first k passages, whatever the query (a FirstP-style baseline at the same scorer cost)."""

    name = "first"

    def score(self, query: str, docs: Sequence[Sequence[Passage]]) -> list[np.ndarray]:
        """Per document, scores that fall with each passage's position, so the first passages are best."""
        return [-np.arange(len(passages), dtype=np.float64) for passages in docs]


FEATURES = ("bm25", "minilm", "position", "first")


class LinearPassageSelector:
    """w · features, each feature centred within its document: only the order inside a document matters.

    bm25 is divided by the document's best passage score; minilm is the cosine; position runs 0 → 1 over the
    document; first marks passage 0.
    """

    def __init__(self, weights: Mapping[str, float], name: str = "learned", **dense_options):
        unknown = sorted(set(weights) - set(FEATURES))
        if unknown or not weights:
            raise SpecError(f"learned selector features {unknown or 'none'} are not in {FEATURES}")
        self.weights, self.name = dict(weights), name
        self.bm25 = BM25PassageSelector() if "bm25" in weights else None
        self.dense = DensePassageSelector("minilm", **dense_options) if "minilm" in weights else None

    @property
    def names(self) -> tuple[str, ...]:
        """The features the weights use, in `FEATURES` order: the columns of `features`."""
        return tuple(f for f in FEATURES if f in self.weights)

    def features(self, query: str, docs: Sequence[Sequence[Passage]]) -> list[np.ndarray]:
        """Per document, a [passages, len(names)] matrix of the features, each column centred within the document."""
        columns: dict[str, list[np.ndarray]] = {}
        if self.bm25 is not None:
            columns["bm25"] = [s / s.max() if s.size and s.max() > 0 else s for s in self.bm25.score(query, docs)]
        if self.dense is not None:
            columns["minilm"] = self.dense.score(query, docs)
        columns["position"] = [np.arange(len(p)) / max(len(p) - 1, 1) for p in docs]
        columns["first"] = [(np.arange(len(p)) == 0).astype(np.float64) for p in docs]
        out = []
        for i, passages in enumerate(docs):
            if not passages:
                out.append(np.zeros((0, len(self.names))))
                continue
            matrix = np.stack([columns[name][i] for name in self.names], axis=1)
            out.append(matrix - matrix.mean(axis=0))
        return out

    def score(self, query: str, docs: Sequence[Sequence[Passage]]) -> list[np.ndarray]:
        """Per document, each passage's weighted sum of its centred features."""
        w = np.array([self.weights[name] for name in self.names])
        return [matrix @ w for matrix in self.features(query, docs)]

    def save(self, path: str | Path, **provenance) -> Path:
        """Write the weights, and any `provenance` fields, as JSON at `path` (parent folders made); returns `path`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"kind": "idcm-linear-selector", "weights": self.weights, **provenance}, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path, **dense_options) -> LinearPassageSelector:
        """The selector `save` wrote at `path`, named `learned:<file name>`; `dense_options` go to its MiniLM encoder.
        A SpecError for a missing file, a DataFormatError for one without weights."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise SpecError(
                f"learned selector file {path} does not exist", path=path, fix="fit one with bench/idcm_distill.py"
            )
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            weights = {str(k): float(v) for k, v in record["weights"].items()}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataFormatError(
                f"not an IDCM selector file ({exc})", path=path, fix='expected {"weights": {"bm25": ..., ...}}'
            ) from None
        return cls(weights, name=f"learned:{path.name}", **dense_options)


def fit_linear(
    features: Sequence[np.ndarray], targets: Sequence[np.ndarray], names: Sequence[str], ridge: float = 1e-3
) -> dict[str, float]:
    """Least squares from within-document features to the scorer's passage scores, standardised per document.

    Documents whose passages the scorer could not tell apart teach nothing and are skipped.
    """
    xs, ys = [], []
    for x, y in zip(features, targets, strict=True):
        y = np.asarray(y, dtype=np.float64)
        if y.size < 2 or y.std() == 0:
            continue
        xs.append(x)
        ys.append((y - y.mean()) / y.std())
    if not xs:
        raise ValueError("no document with two or more distinct passage scores to fit on")
    x, y = np.concatenate(xs), np.concatenate(ys)
    weights = np.linalg.solve(x.T @ x + ridge * len(y) * np.eye(x.shape[1]), x.T @ y)
    return dict(zip(names, weights.tolist(), strict=True))


def make_selector(spec: str, **options) -> PassageSelector | None:
    """A selector for `spec`; None for `all`/`full`, which sends every passage to the scorer."""
    name, _, arg = spec.strip().partition(":")
    if name in ("all", "full") and not arg:
        return None
    if name == "bm25" and not arg:
        return BM25PassageSelector(**options)
    if name == "first" and not arg:
        return FirstPassages()
    if name == "minilm" and not arg:
        return DensePassageSelector("minilm", **options)
    if name == "learned":
        return LinearPassageSelector.load(arg, **options)
    if name == "dense":
        return DensePassageSelector(arg or "minilm", **options)
    raise SpecError(
        f"unknown IDCM passage selector {spec!r}",
        fix="use bm25, minilm, dense:<model-spec>, first, learned:<file>, or all",
    )


class SelectorFineStage:
    """An IDCM passage selector as the fine stage of coarse to fine (`routerank.retrieve.coarse.CoarseToFine`): the
    candidates are grouped by the document they belong to, each document's passages are scored by the selector as
    IDCM scores them (e.g. BM25 with statistics from that document alone), and all candidates are ranked by that
    score, ties in candidate order. No model call beyond the selector's own."""

    def __init__(self, selector: PassageSelector, documents: DocumentMap):
        self.selector, self.documents = selector, documents
        self.name = f"idcm-selector:{selector.name}"

    def rerank_run(self, queries: Iterable[Query] | Mapping[str, Query], run: Run, corpus: Corpus, depth: int) -> Run:
        """Each query's top `depth` candidates ranked by the selector's score."""
        out = {}
        for query in as_query_list(queries):
            ids = list(run[query.id].doc_ids[:depth]) if query.id in run else []
            groups: dict[str, list[str]] = {}
            for passage_id in ids:
                groups.setdefault(self.documents.document_of(passage_id), []).append(passage_id)
            members = list(groups.values())
            passages = [[Passage(p, 0, corpus[p].text, corpus[p].title) for p in group] for group in members]
            found = self.selector.score(query.text, passages)
            score = {
                p: float(s)
                for group, values in zip(members, found, strict=True)
                for p, s in zip(group, values, strict=True)
            }
            order = sorted(range(len(ids)), key=lambda i: (-score[ids[i]], i))
            out[query.id] = Ranking(tuple(ids[i] for i in order), tuple(score[ids[i]] for i in order))
        return Run(MappingProxyType(out), f"{run.name}>>{self.name}")
