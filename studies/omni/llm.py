"""The Omni-RAG study's LLM stage: what an LLM adds in front of retrieval, on a sample small enough for 2 cores.

On the first `llm_pairs` test pairs of the multi-intent benchmark at `choose_at_noise` typos, against the raw query:
the corpus speller and the LLM rewrite (denoising alone), rule and LLM decomposition, each denoiser before the
rules, and the multi-query baseline (three LLM rephrasings, merged as the frameworks do and round-robin). The
denoisers' recovery is measured against the same pairs without typos. On the first `llm_hotpot` hotpotqa-500 test
questions: the raw question, rule, LLM and auto decomposition, and the multi-query baseline, by both supporting
paragraphs in the top 5. Every LLM output is cached, so a rerun costs only the retrieval.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from routerank.data.registry import load_dataset
from routerank.data.types import Query, Run
from routerank.evaluate.measures import evaluate
from routerank.pipeline import build
from routerank.understand.benchmark import combined_corpus, pair_queries
from routerank.understand.decompose import Decomposer, clean, decomposition_generator
from routerank.understand.rewrite import LLMRewriter, MultiQuery, multi_query_generator, rewrite_generator
from routerank.understand.speller import speller_for
from routerank.understand.stage import UnderstoodPipeline
from studies.base import short_hash
from studies.omni.measures import both_at, pair_hits, pair_qrels, test_pair

Search = Callable[[list[Query]], tuple[Run, float]]  # a run, and LLM calls per query


def stage_name(config) -> str:
    """The LLM stage's file name, keyed by its own settings (they are left out of the study's digest)."""
    return "llm-" + short_hash([config.llm_model, config.llm_pairs, config.llm_hotpot], 8)


class Generators:
    """The three LLM roles, each a cached `Generator`, made on first use."""

    def __init__(self, model: str):
        self.model = model
        self._made: dict[str, Any] = {}

    def get(self, role: str):
        """The generator for "rewrite", "decompose" or "multi" (each loads the model by spec, so its cache key
        carries the weights' fingerprint whichever role comes first)."""
        if role not in self._made:
            make = {"rewrite": rewrite_generator, "decompose": decomposition_generator, "multi": multi_query_generator}
            self._made[role] = make[role](self.model)
        return self._made[role]


def _warm_decompositions(generator, queries: list[Query]) -> None:
    """One batched generation for every query's decomposition, so the per-query calls that follow hit the cache."""
    generator.generate([Query("decompose", clean(q.text)) for q in queries])


def _staged(stage) -> Search:
    def search(queries: list[Query]) -> tuple[Run, float]:
        run = stage.search(queries, 100)
        calls = statistics.fmean(u.llm_calls for u in stage.last_understanding.values())
        rewrites = getattr(stage.decomposer.speller, "llm_calls", 0)
        return run, calls + (1.0 if rewrites else 0.0)

    return search


def _multi(multi: MultiQuery) -> Search:
    def search(queries: list[Query]) -> tuple[Run, float]:
        return multi.search(queries, 100), 1.0

    return search


def synthetic_systems(study, pipeline, corpus, generators: Generators, queries: list[Query]) -> dict:
    """Every system of the LLM stage on the benchmark, LLM outputs batched into the cache first."""
    record = study.read_json(study.stage_file("synthetic"))
    aggregate, distance = record["aggregate"], record["speller_distance"]
    speller = speller_for(corpus, max_edit_distance=distance)
    rewriter = LLMRewriter(generators.get("rewrite"))
    rewriter.correct_many([q.text for q in queries])
    _warm_decompositions(generators.get("decompose"), queries)

    def understood(mode: str, denoiser=None, generator=None) -> Search:
        decomposer = Decomposer(mode, generator=generator, speller=denoiser)
        return _staged(UnderstoodPipeline(pipeline, decomposer, aggregate=aggregate))

    decompose = generators.get("decompose")
    return {
        "raw": lambda q: (pipeline.search(q, 100), 0.0),
        "speller": understood("off", speller),
        "llm-rewrite": understood("off", rewriter),
        "rules": understood("rules"),
        "llm": understood("llm", generator=decompose),
        "speller+rules": understood("rules", speller),
        "llm-rewrite+rules": understood("rules", rewriter),
        "multi-query": _multi(MultiQuery(pipeline, generators.get("multi"), order="concat")),
        "multi-query-rr": _multi(MultiQuery(pipeline, generators.get("multi"))),
    }


def _pair_row(run: Run, pairs, qrels, seconds: float, calls: float) -> dict[str, Any]:
    ndcg = dict(evaluate(run, qrels, "nDCG@10").per_query["nDCG@10"])
    recall, both = pair_hits(run, pairs)
    return {
        "nDCG@10": round(statistics.fmean(ndcg.values()), 4),
        "intent_recall@10": round(statistics.fmean(recall.values()), 4),
        "both_intents@10": round(statistics.fmean(both.values()), 4),
        "ms_per_query": round(1000 * seconds / len(pairs), 1),
        "llm_calls_per_query": round(calls, 3),
        "per_query_ndcg": ndcg,
        "per_query_both": both,
    }


def synthetic(study, generators: Generators) -> dict[str, Any]:
    """The benchmark part of the stage (see the module docstring)."""
    config = study.config
    corpus = combined_corpus(config.datasets)
    pipeline = build(config.first_stage, corpus)
    pairs = study.pairs("test")[: config.llm_pairs]
    qrels = pair_qrels(pairs)
    queries = pair_queries(pairs, config.choose_at_noise)
    rows = {}
    for name, search in synthetic_systems(study, pipeline, corpus, generators, queries).items():
        began = time.perf_counter()
        run, calls = search(queries)
        rows[name] = _pair_row(run, pairs, qrels, time.perf_counter() - began, calls)
    clean_run = pipeline.search(pair_queries(pairs, 0.0), 100)
    clean_ndcg = round(evaluate(clean_run, qrels, "nDCG@10").means["nDCG@10"], 4)
    lost = clean_ndcg - rows["raw"]["nDCG@10"]
    for name, row in rows.items():
        if name != "raw":
            row["vs_raw"] = {
                "nDCG@10": test_pair(rows["raw"]["per_query_ndcg"], row["per_query_ndcg"]),
                "both_intents@10": test_pair(rows["raw"]["per_query_both"], row["per_query_both"]),
            }
    recovery = {
        name: None if lost <= 0 else round((rows[name]["nDCG@10"] - rows["raw"]["nDCG@10"]) / lost, 4)
        for name in ("speller", "llm-rewrite")
    }
    return {
        "pairs": len(pairs),
        "noise": config.choose_at_noise,
        "clean_raw_nDCG@10": clean_ndcg,
        "denoising_recovery": recovery,
        "systems": rows,
    }


def hotpot(study, generators: Generators) -> dict[str, Any]:
    """The hotpotqa-500 part of the stage (see the module docstring)."""
    config = study.config
    ds = load_dataset(config.hotpot)
    pipeline = build(config.first_stage, ds.corpus)
    queries = ds.split_queries("test")[: config.llm_hotpot]
    qrels = ds.split_qrels("test").subset(q.id for q in queries)
    aggregate = study.read_json(study.stage_file("hotpot"))["chosen"]
    decompose = generators.get("decompose")
    _warm_decompositions(decompose, queries)
    systems: dict[str, Search] = {
        "raw": lambda q: (pipeline.search(q, 100), 0.0),
        "rules": _staged(UnderstoodPipeline(pipeline, Decomposer("rules"), aggregate=aggregate)),
        "llm": _staged(UnderstoodPipeline(pipeline, Decomposer("llm", generator=decompose), aggregate=aggregate)),
        "auto": _staged(UnderstoodPipeline(pipeline, Decomposer("auto", generator=decompose), aggregate=aggregate)),
        "multi-query-rr": _multi(MultiQuery(pipeline, generators.get("multi"))),
    }
    rows = {}
    for name, search in systems.items():
        began = time.perf_counter()
        run, calls = search(queries)
        both = both_at(run, qrels, 5)
        ndcg = dict(evaluate(run, qrels, "nDCG@10").per_query["nDCG@10"])
        rows[name] = {
            "both@5": round(statistics.fmean(both.values()), 4),
            "nDCG@10": round(statistics.fmean(ndcg.values()), 4),
            "ms_per_query": round(1000 * (time.perf_counter() - began) / len(queries), 1),
            "llm_calls_per_query": round(calls, 3),
            "per_query_both5": both,
            "per_query_ndcg": ndcg,
        }
    for name, row in rows.items():
        if name != "raw":
            row["vs_raw"] = {
                "both@5": test_pair(rows["raw"]["per_query_both5"], row["per_query_both5"]),
                "nDCG@10": test_pair(rows["raw"]["per_query_ndcg"], row["per_query_ndcg"]),
            }
    return {"questions": len(queries), "aggregate": aggregate, "systems": rows}


def run_llm_stage(study) -> None:
    """The stage: both parts, written as one JSON file."""
    config = study.config
    generators = Generators(config.llm_model)
    record: dict[str, Any] = {"model": config.llm_model, "first_stage": config.first_stage}
    if config.llm_pairs:
        record["synthetic"] = synthetic(study, generators)
    if config.llm_hotpot:
        record["hotpot"] = hotpot(study, generators)
    study.write_json(study.stage_file(stage_name(config)), indent=1, record=record)
