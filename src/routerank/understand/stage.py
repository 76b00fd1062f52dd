"""Per-intent retrieval: each sub-query of a decomposed query runs through the wrapped pipeline, and the
sub-query runs are aggregated into one ranking per query.

    pipeline = routerank.pipeline.build("bm25>>ce:starter@100", corpus)
    understood = UnderstoodPipeline(pipeline, Decomposer("rules"), aggregate="round-robin")
    run = understood.search(queries, k=10)
    understood.last_provenance[query_id][doc_id]  # which sub-query found it

Every sub-query runs through the whole pipeline, so an `r3ag:` first stage routes each intent to its own
retriever and an `r2r:` stage reranks each with its own expert. Aggregations:

- "rrf": reciprocal rank fusion, sum over sub-queries of 1 / (rrf_k + rank). Robust to score scales.
- "round-robin": the sub-queries' rankings interleaved (first of each, then second of each, ...), a document
  kept at its first occurrence. With k at least the number of intents, each intent's best document is in the
  top k: a two-hop question gets both of its hops.
- "max": each document's best score over the sub-queries. Scores of different sub-queries are comparable only
  because one pipeline scored them all; "max" is meaningless across pipelines, and BM25 favours long sub-queries.

`rerank_against="original"` retrieves per intent but reranks once against the original query: the
sub-queries run through the pipeline's first stage only, the candidates are aggregated, and then the pipeline's
rerank stages (if any) rescore them against the original query. (Rescoring only the last stage would need the
pipeline to expose a partial run; reusing its stages on the aggregated run needs nothing new.) For a wrapped
retriever without rerank stages this is the same as "sub-query".

A query the decomposer keeps whole (one sub-query) is searched exactly as the wrapped pipeline searches it:
its ranking is the pipeline's, unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from routerank.data.types import Corpus, Query, Ranking, Run
from routerank.errors import RouterankError, SpecError
from routerank.models.llm import DEFAULT_LLM
from routerank.pipeline import Pipeline, build
from routerank.retrieve.base import as_query_list
from routerank.understand.decompose import MODES, Decomposer, Understanding, clean, decomposition_generator
from routerank.understand.speller import speller_for

AGGREGATES = ("rrf", "round-robin", "max")
RERANK_AGAINST = ("sub-query", "original")


def aggregate_rrf(rankings: Sequence[Ranking], rrf_k: int = 60) -> tuple[Ranking, dict[str, int]]:
    """Reciprocal rank fusion of the sub-query rankings, and for each document the sub-query that ranked it
    highest (the first such sub-query on a tie)."""
    scores: dict[str, float] = {}
    best: dict[str, tuple[int, int]] = {}
    for index, ranking in enumerate(rankings):
        for rank, doc_id in enumerate(ranking.doc_ids, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (rrf_k + rank)
            best[doc_id] = min(best.get(doc_id, (rank, index)), (rank, index))
    return Ranking.from_scores(scores), {d: index for d, (_, index) in best.items()}


def aggregate_round_robin(rankings: Sequence[Ranking]) -> tuple[Ranking, dict[str, int]]:
    """The sub-query rankings interleaved, first of each, then second of each, ...; a document keeps its first
    place and the sub-query that placed it. Scores fall from 1 by position: 1, 1/2, 1/3, ..."""
    order: dict[str, int] = {}
    for depth in range(max((len(r) for r in rankings), default=0)):
        for index, ranking in enumerate(rankings):
            if depth < len(ranking) and ranking.doc_ids[depth] not in order:
                order[ranking.doc_ids[depth]] = index
    ids = tuple(order)
    return Ranking(ids, tuple(1.0 / position for position in range(1, len(ids) + 1))), order


def aggregate_max(rankings: Sequence[Ranking]) -> tuple[Ranking, dict[str, int]]:
    """Each document's highest score over the sub-query rankings, and the sub-query that gave it (the first
    on a tie). Meaningful only when one pipeline scored every sub-query."""
    scores: dict[str, float] = {}
    source: dict[str, int] = {}
    for index, ranking in enumerate(rankings):
        for doc_id, score in zip(ranking.doc_ids, ranking.scores, strict=True):
            if doc_id not in scores or score > scores[doc_id]:
                scores[doc_id], source[doc_id] = score, index
    return Ranking.from_scores(scores), source


class UnderstoodPipeline:
    """A pipeline (or retriever) that searches each intent of a query on its own and aggregates the results.

    pipeline: what `routerank.pipeline.build` returns; anything with `.name` and `.search(queries, k) -> Run`.
    decomposer: splits each query into sub-queries (`Decomposer("rules")` costs no LLM call).
    aggregate: "rrf" (default: rank-based, so safe whatever the scores), "round-robin" (each intent's best
        documents are guaranteed top places) or "max" (best score; see the module docstring).
    rerank_against: "sub-query" (default: each intent is reranked with its own text, which is what finds the
        second hop) or "original" (retrieve per intent, rerank once against the whole query).
    k_per_intent: documents each sub-query retrieves before aggregation (100: deep enough for RRF to reward a
        document that several intents find).
    rrf_k: the RRF constant (60, as in Cormack et al. 2009 and `routerank.retrieve.fusion`).

    After `search`, `last_understanding` maps each query id to its `Understanding`, and `last_provenance` maps
    each query id to {doc id: the index of the sub-query that found it}.
    """

    def __init__(
        self,
        pipeline,
        decomposer: Decomposer,
        aggregate: str = "rrf",
        rerank_against: str = "sub-query",
        k_per_intent: int = 100,
        rrf_k: int = 60,
    ):
        if aggregate not in AGGREGATES:
            raise RouterankError(f"unknown aggregation {aggregate!r}", fix=f"choose one of {', '.join(AGGREGATES)}")
        if rerank_against not in RERANK_AGAINST:
            raise RouterankError(
                f"unknown rerank_against {rerank_against!r}", fix=f"choose one of {', '.join(RERANK_AGAINST)}"
            )
        if k_per_intent < 1 or rrf_k < 0:
            raise RouterankError("k_per_intent must be at least 1 and rrf_k at least 0")
        self.pipeline, self.decomposer = pipeline, decomposer
        self.aggregate, self.rerank_against = aggregate, rerank_against
        self.k_per_intent, self.rrf_k = k_per_intent, rrf_k
        self.last_understanding: dict[str, Understanding] = {}
        self.last_provenance: dict[str, dict[str, int]] = {}

    @property
    def name(self) -> str:
        """The setup as a spec-like name: `understand:<mode>:<aggregate>[:original](<pipeline>)`."""
        against = ":original" if self.rerank_against == "original" else ""
        return f"understand:{self.decomposer.mode}:{self.aggregate}{against}({self.pipeline.name})"

    def _cleaned(self, query: Query) -> Query:
        cleaned = self.last_understanding[query.id].cleaned
        return query if cleaned == clean(query.text) else replace(query, text=cleaned)

    def _combine(self, rankings: Sequence[Ranking]) -> tuple[Ranking, dict[str, int]]:
        if self.aggregate == "rrf":
            return aggregate_rrf(rankings, self.rrf_k)
        if self.aggregate == "round-robin":
            return aggregate_round_robin(rankings)
        return aggregate_max(rankings)

    def _reranks_original(self) -> bool:
        return self.rerank_against == "original" and isinstance(self.pipeline, Pipeline) and bool(self.pipeline.stages)

    def _intent_runs(self, split: list[Query], k: int) -> Run:
        """One search over every sub-query of the split queries, ids `<query id>#<sub-query index>`."""
        subs = [
            Query(f"{q.id}#{i}", sub.text)
            for q in split
            for i, sub in enumerate(self.last_understanding[q.id].sub_queries)
        ]
        if self._reranks_original():
            depth = max([k, self.k_per_intent, *(d for _, d in self.pipeline.stages)])
            return self.pipeline.retriever.search(subs, depth)
        return self.pipeline.search(subs, max(k, self.k_per_intent))

    def _rerank(self, split: list[Query], run: Run, k: int) -> Run:
        for reranker, depth in self.pipeline.stages:
            run = reranker.rerank_run(split, run, self.pipeline.corpus, depth)
        return run.top(k)

    def search(self, queries, k: int = 100) -> Run:
        """Each query's top `k`: a one-intent query's ranking is the wrapped pipeline's; a split query's is the
        aggregate of its sub-queries' rankings (reranked against the original query when so set)."""
        query_list = as_query_list(queries)
        self.last_understanding = {q.id: self.decomposer.understand(q) for q in query_list}
        whole = [q for q in query_list if not self.last_understanding[q.id].split]
        split = [q for q in query_list if self.last_understanding[q.id].split]
        rankings: dict[str, Ranking] = {}
        provenance: dict[str, dict[str, int]] = {}
        if whole:  # searched as given, unless the speller changed the text
            whole = [self._cleaned(q) for q in whole]
            plain = self.pipeline.search(whole, k)
            for q in whole:
                rankings[q.id] = plain[q.id] if q.id in plain else Ranking()
                provenance[q.id] = dict.fromkeys(rankings[q.id].doc_ids, 0)
        if split:
            runs = self._intent_runs(split, k)
            for q in split:
                count = len(self.last_understanding[q.id].sub_queries)
                parts = [runs[f"{q.id}#{i}"] if f"{q.id}#{i}" in runs else Ranking() for i in range(count)]
                rankings[q.id], provenance[q.id] = self._combine(parts)
            aggregated = Run(MappingProxyType({q.id: rankings[q.id] for q in split}), self.name)
            if self._reranks_original():
                aggregated = self._rerank(split, aggregated, k)
            for q in split:
                rankings[q.id] = aggregated[q.id].top(k)
                provenance[q.id] = {d: provenance[q.id].get(d, 0) for d in rankings[q.id].doc_ids}
        self.last_provenance = provenance
        return Run(MappingProxyType({q.id: rankings[q.id] for q in query_list}), self.name)


UNDERSTAND_OPTIONS = ("mode", "aggregate", "speller", "against", "llm")
_OPTION = re.compile(rf"^({'|'.join(UNDERSTAND_OPTIONS)})=")


def split_arguments(arguments: str) -> tuple[str, dict[str, str]]:
    """`bm25>>ce:starter@20,mode=rules,aggregate=max` -> ("bm25>>ce:starter@20", {"mode": "rules", ...}): the
    trailing known key=value items are options, the rest (commas inside it kept) is the wrapped pipeline."""
    parts = arguments.split(",")
    options: dict[str, str] = {}
    while parts and _OPTION.match(parts[-1].strip()):
        key, _, value = parts.pop().strip().partition("=")
        if key in options:
            raise SpecError(f"understand option {key!r} is given twice")
        options[key] = value.strip()
    inner = ",".join(parts).strip()
    if not inner:
        raise SpecError("understand(...) wraps a pipeline", fix="e.g. understand(bm25>>ce:starter@20,mode=rules)")
    return inner, options


def build_understood(arguments: str, corpus: Corpus, **build_options: Any) -> UnderstoodPipeline:
    """The `understand(P,...)` pipeline spec: P built by `routerank.pipeline.build` on `corpus`, behind a decomposer.

    Options: mode (rules, llm, auto or off; default rules), aggregate (rrf, round-robin or max; default rrf),
    speller (off, or the corpus speller's largest edit distance, 1 or 2; default off), against (sub-query or
    original; default sub-query), llm (the model that `llm` and `auto` decompose with; default the packaged SmolLM2).
    """
    inner, options = split_arguments(arguments)
    mode = options.get("mode", "rules")
    if mode not in MODES:
        raise SpecError(f"unknown understand mode {mode!r}", fix=f"choose one of {', '.join(MODES)}")
    speller = None
    distance = options.get("speller", "off")
    if distance != "off":
        if distance not in ("1", "2"):
            raise SpecError(f"understand speller={distance!r}", fix="speller=off, speller=1 or speller=2")
        speller = speller_for(corpus, max_edit_distance=int(distance))
    generator = decomposition_generator(options.get("llm", DEFAULT_LLM)) if mode in ("llm", "auto") else None
    pipeline = build(inner, corpus, **build_options)
    decomposer = Decomposer(mode, generator=generator, speller=speller)
    return UnderstoodPipeline(
        pipeline,
        decomposer,
        aggregate=options.get("aggregate", "rrf"),
        rerank_against=options.get("against", "sub-query"),
    )
