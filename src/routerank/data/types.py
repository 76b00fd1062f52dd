"""Typed records: documents, queries, qrels, runs and datasets."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from routerank.errors import DuplicateIdError, SplitNotFoundError, UnknownIdError


@dataclass(frozen=True, slots=True)
class Document:
    """A corpus document: its id, body text, optional title, and any metadata (left out of equality and hashing)."""

    id: str
    text: str
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def full_text(self) -> str:
        """Title and body joined, the text retrievers and rerankers see."""
        if self.title and self.text:
            return f"{self.title} {self.text}"
        return self.title or self.text


@dataclass(frozen=True, slots=True)
class Query:
    """A query: its id, text, any gold answers (for QA scoring), and metadata (left out of equality and hashing)."""

    id: str
    text: str
    answers: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class ScoredDoc:
    """One entry of a ranking: a document id with its score and 1-based rank."""

    doc_id: str
    score: float
    rank: int


@dataclass(frozen=True, slots=True)
class Ranking:
    """One query's result list, best first. Stored as two parallel tuples to stay cheap at scale."""

    doc_ids: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.doc_ids) != len(self.scores):
            raise ValueError(f"Ranking has {len(self.doc_ids)} doc ids but {len(self.scores)} scores")

    @classmethod
    def from_scores(cls, scores: Mapping[str, float], k: int | None = None) -> Ranking:
        """Sort a doc→score mapping, best first; ties break by doc id so results are deterministic."""
        items = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        if k is not None:
            items = items[:k]
        return cls(tuple(d for d, _ in items), tuple(float(s) for _, s in items))

    def __len__(self) -> int:
        return len(self.doc_ids)

    def __iter__(self) -> Iterator[ScoredDoc]:
        for rank, (doc_id, score) in enumerate(zip(self.doc_ids, self.scores, strict=True), start=1):
            yield ScoredDoc(doc_id, score, rank)

    def top(self, k: int) -> Ranking:
        """The first `k` documents."""
        return Ranking(self.doc_ids[:k], self.scores[:k])

    def as_dict(self) -> dict[str, float]:
        """Doc id → score."""
        return dict(zip(self.doc_ids, self.scores, strict=True))


@dataclass(frozen=True)
class Run:
    """Query id → ranking. The unit every retriever and reranker produces.

    documents: documents the run made itself and the corpus lacks (passages an LLM wrote, as `genread` does), by
    id; stages look an id up here before the corpus. Empty for every run over a corpus alone.
    """

    rankings: Mapping[str, Ranking]
    name: str = "run"
    documents: Mapping[str, Document] = field(default_factory=lambda: MappingProxyType({}))

    def __getitem__(self, query_id: str) -> Ranking:
        return self.rankings[query_id]

    def __contains__(self, query_id: object) -> bool:
        return query_id in self.rankings

    def __iter__(self) -> Iterator[str]:
        return iter(self.rankings)

    def __len__(self) -> int:
        return len(self.rankings)

    def top(self, k: int) -> Run:
        """The same run with every ranking cut to its first `k` documents."""
        return Run({q: r.top(k) for q, r in self.rankings.items()}, self.name, self.documents)

    def with_documents(self, documents: Mapping[str, Document]) -> Run:
        """The same rankings carrying `documents` as well as this run's own (see `documents`)."""
        if not documents:
            return self
        return Run(self.rankings, self.name, MappingProxyType({**self.documents, **documents}))

    def lookup(self, doc_id: str, corpus: Mapping[str, Document]) -> Document | None:
        """The document an id names: the run's own, else the corpus's, else None."""
        found = self.documents.get(doc_id)
        return found if found is not None else corpus.get(doc_id)

    def as_dict(self) -> dict[str, dict[str, float]]:
        """Query id → {doc id: score}, as plain dicts."""
        return {q: r.as_dict() for q, r in self.rankings.items()}


def documents_of(runs: Iterable[Run]) -> Mapping[str, Document]:
    """The documents several runs carry themselves (`Run.documents`), merged: what a run made from them carries."""
    merged = {d: doc for run in runs for d, doc in run.documents.items()}
    return MappingProxyType(merged)


@dataclass(frozen=True)
class Qrels:
    """Query id → {doc id: graded relevance}."""

    judgments: Mapping[str, Mapping[str, int]]

    def __getitem__(self, query_id: str) -> Mapping[str, int]:
        return self.judgments[query_id]

    def __contains__(self, query_id: object) -> bool:
        return query_id in self.judgments

    def __iter__(self) -> Iterator[str]:
        return iter(self.judgments)

    def __len__(self) -> int:
        return len(self.judgments)

    @property
    def num_pairs(self) -> int:
        """The number of judged (query, document) pairs."""
        return sum(len(docs) for docs in self.judgments.values())

    def subset(self, query_ids: Iterable[str]) -> Qrels:
        """The judgments of the given queries only; ids without judgments are skipped."""
        return Qrels(MappingProxyType({q: self.judgments[q] for q in query_ids if q in self.judgments}))

    def relevant(self, query_id: str, min_rel: int = 1) -> set[str]:
        """The documents judged at least `min_rel` for a query; empty for an unjudged query."""
        return {d for d, rel in self.judgments.get(query_id, {}).items() if rel >= min_rel}

    def as_dict(self) -> dict[str, dict[str, int]]:
        """Query id → {doc id: relevance}, as plain dicts."""
        return {q: dict(d) for q, d in self.judgments.items()}


class Corpus(Mapping[str, Document]):
    """Documents in file order, addressable by id, with a content fingerprint for cache keys."""

    def __init__(self, documents: Iterable[Document]):
        self._docs: tuple[Document, ...] = tuple(documents)
        self._by_id = {doc.id: i for i, doc in enumerate(self._docs)}
        if len(self._by_id) != len(self._docs):
            seen: set[str] = set()
            dupes = [d.id for d in self._docs if d.id in seen or seen.add(d.id)]
            raise DuplicateIdError(f"{len(dupes)} duplicate document ids, e.g. {dupes[:3]}")
        self._fingerprint: str | None = None

    def __getitem__(self, doc_id: str) -> Document:
        return self._docs[self._by_id[doc_id]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._docs)

    @property
    def documents(self) -> tuple[Document, ...]:
        """The documents in file order."""
        return self._docs

    @property
    def ids(self) -> list[str]:
        """The document ids in file order."""
        return [d.id for d in self._docs]

    def subset(self, doc_ids: Iterable[str]) -> Corpus:
        """A new corpus of the named documents, in this corpus's order (with its own fingerprint, unlike `view`)."""
        wanted = set(doc_ids)
        return Corpus(d for d in self._docs if d.id in wanted)

    def view(self, doc_ids: Iterable[str]) -> Corpus:
        """The named documents, keeping this corpus's fingerprint: what a worker needs to rerank one shard of a run,
        while every cache keyed by corpus (saved interpolation weights, for one) still matches the whole."""
        part = self.subset(doc_ids)
        part._fingerprint = self.fingerprint
        return part

    def extended(self, documents: Mapping[str, Document]) -> Corpus:
        """This corpus plus `documents` (a run's generated passages), keeping this corpus's fingerprint, so caches
        keyed by corpus (saved interpolation weights) still match; an id already here is refused."""
        if not documents:
            return self
        clash = [d for d in documents if d in self._by_id]
        if clash:
            raise DuplicateIdError(f"{len(clash)} added documents reuse corpus ids, e.g. {clash[:3]}")
        out = Corpus((*self._docs, *documents.values()))
        out._fingerprint = self.fingerprint
        return out

    @property
    def fingerprint(self) -> str:
        """sha256 over ids, titles and texts in order: any edit gives a new key."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for doc in self._docs:
                for part in (doc.id, doc.title, doc.text):
                    encoded = part.encode("utf-8")
                    h.update(len(encoded).to_bytes(8, "little"))
                    h.update(encoded)
            self._fingerprint = h.hexdigest()
        return self._fingerprint


@dataclass(frozen=True)
class Dataset:
    """A BEIR collection: one corpus, all queries, qrels per split."""

    name: str
    corpus: Corpus
    queries: Mapping[str, Query]
    qrels: Mapping[str, Qrels]
    path: Path | None = None

    @property
    def splits(self) -> list[str]:
        """The names of the splits that have qrels, sorted."""
        return sorted(self.qrels)

    def split_qrels(self, split: str) -> Qrels:
        """The qrels of a split; an unknown split raises `SplitNotFoundError` naming the ones there are."""
        if split not in self.qrels:
            raise SplitNotFoundError(
                f"dataset {self.name!r} has no split {split!r}",
                path=self.path,
                fix=f"choose one of {self.splits}",
            )
        return self.qrels[split]

    def split_queries(self, split: str) -> list[Query]:
        """Queries judged in a split, in queries-file order."""
        qrels = self.split_qrels(split)
        return [q for qid, q in self.queries.items() if qid in qrels]


def check_references(
    qrels: Qrels,
    corpus: Mapping[str, Any],
    queries: Mapping[str, Any],
    *,
    path: str | Path | None = None,
    lenient: bool = False,
) -> tuple[Qrels, list[tuple[str, str]]]:
    """Verify qrels only name known queries and documents.

    Strict mode raises with a count and examples; lenient mode returns the cleaned qrels
    and the dropped (query, doc) pairs so the caller can report them.
    """
    dropped: list[tuple[str, str]] = []
    kept: dict[str, dict[str, int]] = {}
    for qid, docs in qrels.judgments.items():
        for did, rel in docs.items():
            if qid not in queries or did not in corpus:
                dropped.append((qid, did))
            else:
                kept.setdefault(qid, {})[did] = rel
    if dropped and not lenient:
        unknown_q = sorted({q for q, _ in dropped if q not in queries})
        unknown_d = sorted({d for _, d in dropped if d not in corpus})
        raise UnknownIdError(
            f"{len(dropped)} judgments name unknown ids ({len(unknown_q)} queries e.g. {unknown_q[:3]}, "
            f"{len(unknown_d)} documents e.g. {unknown_d[:3]})",
            path=path,
            fix="correct the ids, or pass --lenient (lenient=True) to drop these judgments",
        )
    return Qrels(MappingProxyType(kept)), dropped


def sample_queries(queries: list[Query], n: int | None, seed: int) -> list[Query]:
    """The seeded query sample every protocol uses: `n` queries drawn with `seed`, sorted by id (all if n is None)."""

    if not n or n >= len(queries):
        return list(queries)
    return sorted(random.Random(seed).sample(list(queries), n), key=lambda q: q.id)
