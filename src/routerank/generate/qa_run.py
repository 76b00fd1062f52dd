"""RAG question answering on a dataset: pick each query's context (gold, retrieved or none), generate, score.

    from routerank.generate.qa_run import run_qa

    result = run_qa("squad-dev", context="retrieved", retriever=bm25, pipeline="bm25", k=3, sample=200)
    print(result.label, result.scores.em, result.scores.f1)

- gold: the query's judged-relevant document(s), the best a retriever could hand over;
- retrieved: a retriever's (or a precomputed run's) top k;
- none: R0, the closed-book prompt.

This layer sits below `routerank.pipeline`, so it never builds a pipeline from a spec: the caller hands over
anything with `.search(queries, k) -> Run`, a callable that builds one from the corpus (so a bad request is
refused before an index loads), or a precomputed Run. `routerank qa` and `studies.rag_qa` build it with
`routerank.pipeline.build`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from routerank.data.registry import load_dataset
from routerank.data.types import Corpus, Dataset, Document, Query, Run, sample_queries
from routerank.errors import RouterankError
from routerank.generate.context import gold_contexts, retrieved_contexts
from routerank.generate.generator import Answer, Generator
from routerank.generate.scoring import QAScores, require_answers, score_answers
from routerank.generate.templates import get_template

CONTEXTS = ("gold", "retrieved", "none")


@runtime_checkable
class Searcher(Protocol):
    """What a retrieved context needs: a retriever or pipeline that ranks the corpus for queries."""

    def search(self, queries: Sequence[Query], k: int) -> Run:
        """Each query's top k documents of the corpus, as one run."""


RetrieverLike = Run | Searcher | Callable[[Corpus], Searcher]


@dataclass(frozen=True)
class QARun:
    """One QA condition's outcome: scores, answers, and what it took."""

    dataset: str
    split: str
    context: str
    pipeline: str | None
    k: int
    scores: QAScores
    answers: list[Answer]
    seconds: float
    settings: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The condition in a table row: `gold top 1`, `bm25 top 3` or `no context (R0)`."""
        if self.context == "gold":
            return f"gold top {self.k}"
        if self.context == "retrieved":
            return f"{self.pipeline} top {self.k}"
        return "no context (R0)"

    def summary(self) -> dict:
        """The condition as a JSON-ready record: scores, counts (generated, cached, cut documents) and settings."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "context": self.context,
            "pipeline": self.pipeline,
            "k": self.k,
            "n": self.scores.n,
            "em": self.scores.em,
            "f1": self.scores.f1,
            "seconds": round(self.seconds, 2),
            "generated": sum(not a.cached for a in self.answers),
            "cached": sum(a.cached for a in self.answers),
            "truncated_docs": sum(len(a.context.truncated) for a in self.answers),
            "dropped_docs": sum(len(a.context.dropped) for a in self.answers),
            "mean_prompt_tokens": round(sum(a.prompt_tokens for a in self.answers) / max(1, len(self.answers)), 1),
            "settings": self.settings,
        }


def check_request(context: str, k: int, retriever: RetrieverLike | None = None) -> None:
    """Refuse an unknown context, a negative k, or a retrieved context with nothing to retrieve with."""
    if context not in CONTEXTS:
        raise RouterankError(f"unknown context {context!r}", fix=f"choose one of {', '.join(CONTEXTS)}")
    if k < 0:
        raise RouterankError(f"k must be 0 or more documents per query, got {k}", fix="k=0, or --context none, is R0")
    if context == "retrieved" and k > 0 and retriever is None:
        raise RouterankError(
            "a retrieved context needs a retriever, a pipeline or a precomputed run",
            fix="pass retriever=routerank.pipeline.build(spec, corpus), or a Run",
        )


def qa_contexts(
    ds: Dataset, queries: Sequence[Query], split: str, context: str, k: int, retriever: RetrieverLike | None = None
) -> list[list[Document]]:
    """Each query's documents for `context`: the split's gold documents, the retriever's (or run's) top k, or none.

    A callable `retriever` is called with the corpus first (it builds the retriever); a precomputed Run must rank
    every query."""
    check_request(context, k, retriever)
    if context == "none" or k == 0:
        return [[] for _ in queries]
    if context == "gold":
        return gold_contexts(queries, ds.split_qrels(split), ds.corpus, k)
    if isinstance(retriever, Run):
        missing = [q.id for q in queries if q.id not in retriever]
        if missing:
            raise RouterankError(
                f"the run {retriever.name!r} ranks nothing for {len(missing)} of {len(queries)} queries, "
                f"e.g. {missing[:3]}",
                fix="search the same split's queries (and sample) that are asked",
            )
        run = retriever
    else:
        searcher = retriever if isinstance(retriever, Searcher) else retriever(ds.corpus)
        run = searcher.search(list(queries), k)
    return retrieved_contexts(queries, run, ds.corpus, k)


def _label(retriever: RetrieverLike | None) -> str | None:
    return getattr(retriever, "name", None) if isinstance(retriever, Run | Searcher) else None


def run_qa(
    dataset: str | Dataset,
    *,
    split: str = "test",
    context: str = "retrieved",
    retriever: RetrieverLike | None = None,
    pipeline: str | None = None,
    k: int = 3,
    sample: int | None = None,
    seed: int = 13,
    generator: Generator | None = None,
    progress: bool = True,
    **generator_options,
) -> QARun:
    """Answer a split's queries (or a seeded sample) from their context and score them with EM/F1.

    `retriever` gives the retrieved context: a retriever or pipeline (`.search(queries, k) -> Run`), a callable
    that builds one from the dataset's corpus, or a precomputed Run over the asked queries. `pipeline` names it in
    the result (default: its `.name`). Bad input (an unknown context or template, k < 0, a retrieved context
    without a retriever, queries without gold answers) is refused before any model or index loads. `generator`
    reuses a loaded Generator; otherwise one is built from `generator_options`."""
    check_request(context, k, retriever)
    if generator_options.get("template") is not None:
        get_template(generator_options["template"])
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, splits=[split])
    queries = sample_queries(dataset.split_queries(split), sample, seed)
    require_answers(queries, f"{dataset.name} ({split} split)")
    start = time.perf_counter()
    contexts = qa_contexts(dataset, queries, split, context, k, retriever)
    if generator is None:
        generator = Generator(progress=progress, **generator_options)
    answers = generator.generate(queries, contexts)
    seconds = time.perf_counter() - start
    k = 0 if context == "none" else k
    return QARun(
        dataset.name,
        split,
        context,
        (pipeline or _label(retriever)) if context == "retrieved" else None,
        k,
        score_answers(queries, answers),
        answers,
        seconds,
        {**generator.settings(), "sample": sample, "seed": seed},
    )
