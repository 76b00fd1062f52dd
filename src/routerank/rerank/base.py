"""The RerankerBackend protocol: reorder a query's candidates; the batch form reranks a whole run.

The public face over any backend is `routerank.Reranker` (`routerank.api`), whose `rank` returns RankedResults."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from routerank.data.types import Corpus, Document, Query, Ranking, Run
from routerank.errors import RouterankError, SpecError
from routerank.models.llm import DEFAULT_LLM
from routerank.retrieve.base import as_query_list

DocsLike = Sequence[Document] | Sequence[str]


@runtime_checkable
class RerankerBackend(Protocol):
    """What every reranker family implements: `rerank` one query's documents, `rerank_run` a whole run."""

    name: str

    def rerank(self, query: Query | str, docs: DocsLike, top_k: int | None = None) -> Ranking:
        """`docs` best first as a Ranking (plain strings are named "0", "1", ... in input order); `top_k` keeps
        the best k."""
        ...

    def rerank_run(
        self, queries: Iterable[Query] | Mapping[str, Query], run: Run, corpus: Corpus, depth: int = 100
    ) -> Run:
        """`run` with each query's top `depth` candidates reranked and the rest of its ranking kept below them."""
        ...


def as_documents(docs: DocsLike) -> list[Document]:
    """Documents as given, or plain strings numbered "0", "1", ... in input order."""
    out = []
    for i, doc in enumerate(docs):
        if isinstance(doc, Document):
            out.append(doc)
        elif isinstance(doc, str):
            out.append(Document(str(i), doc))
        else:
            raise TypeError(f"expected Document or str, got {type(doc).__name__}")
    return out


def as_query(query: Query | str) -> Query:
    """A Query as given; plain text becomes the query with id "q0"."""
    return query if isinstance(query, Query) else Query("q0", query)


def candidates(run: Run, query_id: str, corpus: Corpus, depth: int) -> list[Document]:
    """The query's top `depth` documents in `run`, taken from the corpus (none when the run lacks the query); a
    RouterankError when the run names documents the corpus does not hold."""
    ranking = run[query_id] if query_id in run else Ranking()
    found = [run.lookup(d, corpus) for d in ranking.doc_ids[:depth]]
    missing = [d for d, doc in zip(ranking.doc_ids, found, strict=False) if doc is None]
    if missing:
        raise RouterankError(
            f"run names {len(missing)} documents not in the corpus, e.g. {missing[:3]}",
            fix="rerank a run made on the same corpus",
        )
    return found


def merge_below(reranked: Ranking, original: Ranking, depth: int) -> Ranking:
    """Reranked head, then the retriever's tail below it (kept for deep-cutoff recall)."""
    tail = original.doc_ids[depth:]
    if not tail:
        return reranked
    floor = min(reranked.scores, default=0.0)
    tail_scores = tuple(floor - 1.0 - i for i in range(len(tail)))
    return Ranking(reranked.doc_ids + tail, reranked.scores + tail_scores)


def assemble_run(
    per_query: list[tuple[Query, list[Document]]], scores: list[float], run: Run, depth: int, name: str
) -> Run:
    """Cut one flat list of pair scores back into per-query rankings, each above its retriever tail."""
    out, start = {}, 0
    for query, docs in per_query:
        chunk, start = scores[start : start + len(docs)], start + len(docs)
        reranked = Ranking.from_scores(dict(zip((d.id for d in docs), chunk, strict=True)))
        out[query.id] = merge_below(reranked, run[query.id] if query.id in run else Ranking(), depth)
    return Run(MappingProxyType(out), name, run.documents)


class BaseReranker:
    """Shared batch form: rerank each query's top `depth` from a run, keeping the tail below."""

    name: str = "reranker"
    progress: bool = False  # a per-query progress bar in `rerank_run` (the slow LLM rerankers turn it on)

    def rerank(self, query: Query | str, docs: DocsLike, top_k: int | None = None) -> Ranking:
        """`docs` best first as a Ranking, the best `top_k` when given; each reranker family implements it."""
        raise NotImplementedError

    def rerank_run(
        self, queries: Iterable[Query] | Mapping[str, Query], run: Run, corpus: Corpus, depth: int = 100
    ) -> Run:
        """`run` with each query's top `depth` reranked by `rerank`, one query at a time, and the rest kept below;
        the new run's name is `run.name`, then `>>`, then this reranker's name."""
        out = {}
        for query in tqdm(as_query_list(queries), desc=self.name, unit="query", disable=not self.progress, leave=False):
            docs = candidates(run, query.id, corpus, depth)
            reranked = self.rerank(query, docs) if docs else Ranking()
            out[query.id] = merge_below(reranked, run[query.id] if query.id in run else Ranking(), depth)
        return Run(MappingProxyType(out), f"{run.name}>>{self.name}", run.documents)


class PairScoringReranker(BaseReranker):
    """A reranker that scores each (query, document) pair on its own (`score_pairs`); batches all pairs of a run at
    once. The base of the cross-encoder and the yes/no LLM (`PointwiseLLMReranker`, and query likelihood on it)."""

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """One relevance score per (query text, document text) pair, in input order, higher is more relevant;
        each subclass implements it."""
        raise NotImplementedError

    def rerank(self, query: Query | str, docs: DocsLike, top_k: int | None = None) -> Ranking:
        """`docs` by their pair scores, best first (ties by document id); `top_k` keeps the best k."""
        query, documents = as_query(query), as_documents(docs)
        scores = self.score_pairs([(query.text, d.full_text) for d in documents])
        return Ranking.from_scores(dict(zip((d.id for d in documents), scores.tolist(), strict=True)), top_k)

    def rerank_run(
        self, queries: Iterable[Query] | Mapping[str, Query], run: Run, corpus: Corpus, depth: int = 100
    ) -> Run:
        """As `BaseReranker.rerank_run`, but every pair of every query goes to `score_pairs` in one call, so
        batches span queries."""
        query_list = as_query_list(queries)
        per_query = [(q, candidates(run, q.id, corpus, depth)) for q in query_list]
        pairs = [(q.text, d.full_text) for q, docs in per_query for d in docs]
        scores = self.score_pairs(pairs).tolist() if pairs else []
        return assemble_run(per_query, scores, run, depth, f"{run.name}>>{self.name}")


def option_value(text: str) -> int | float | bool | str:
    """An option's text as the value it means: `128` → 128, `0.5` → 0.5, `true`/`false` → True/False, else the text.

    One parser for spec options (`pointwise:smollm2,cache=false`) and `--rerank-opt`, so both mean the same."""
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return {"true": True, "false": False}.get(text.lower(), text)


def as_flag(value: bool | int | str, name: str) -> bool:
    """A spec or --rerank-opt value as a bool: 1/0, true/false, yes/no, on/off; anything else is a SpecError."""
    if isinstance(value, bool | int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SpecError(f"{name} must be true or false (1 or 0), got {value!r}", fix=f"e.g. {name}=1")


def split_arg(arg: str) -> tuple[str, dict[str, int | float | bool | str]]:
    """`smollm2,k=3,method=bubblesort` → ("smollm2", {"k": 3, "method": "bubblesort"}); the model may be left out.

    Options in the spec belong to one stage, where `--rerank-opt` reaches every stage of a pipeline."""
    model, options = "", {}
    for part in filter(None, (p.strip() for p in arg.split(","))):
        key, eq, value = part.partition("=")
        if eq and key.strip().isidentifier():
            options[key.strip()] = option_value(value)
        elif model:
            raise SpecError(f"two models in {arg!r}", fix="e.g. setwise:smollm2,k=4,method=heapsort")
        else:
            model = part
    return model or DEFAULT_LLM, options
