"""The Omni-RAG study's stages; each writes one JSON file in the work dir and is skipped when that file exists.

1. `hotpot`: hotpotqa-500. The aggregation is chosen on the 100 train questions by how often both supporting
   paragraphs reach the top 5; on the 300 test questions the understood pipeline is compared with the same
   pipeline on the raw question (both@5 and nDCG@10, paired tests).
2. `synthetic`: the noisy multi-intent benchmark. On train pairs at `choose_at_noise`, the speller's edit distance
   (by nDCG@10 of denoising alone) and the aggregation (by both-intents@10 of decomposition alone) are chosen. On
   test pairs, at every typo rate: the raw query, each module alone, and both, with nDCG@10 (the two intents'
   relevant documents together), intent recall@10 and both-intents@10, paired tests against the raw query, and
   the time the understanding step takes.
3. `routing`: for test pairs whose two intents come from two of the router's domains, whether each sub-query goes
   to its own domain's expert (clean and at `choose_at_noise`), against the raw joined query.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from routerank.api import Reranker
from routerank.data.registry import load_dataset
from routerank.data.types import Qrels, Query, Run
from routerank.evaluate.measures import evaluate
from routerank.pipeline import build
from routerank.stages import Stage, Step, run_plan
from routerank.understand.benchmark import IntentPair, build_pairs, combined_corpus, pair_queries
from routerank.understand.decompose import Decomposer
from routerank.understand.speller import speller_for
from routerank.understand.stage import UnderstoodPipeline
from studies.base import Study
from studies.omni import llm
from studies.omni.config import OmniConfig
from studies.omni.measures import both_at, pair_hits, pair_qrels, test_pair

KINDS = ("measure", "llm")
SYSTEMS = ("raw", "speller", "decompose", "speller+decompose")


def _kind(stage: str) -> str:
    return "llm" if stage.startswith("llm-") else "measure"


class OmniStudy(Study):
    """The stages over hotpotqa-500 and the multi-intent benchmark."""

    FOLDER = "omni"

    def __init__(self, config: OmniConfig, work_dir: Path | None = None):
        super().__init__(config, work_dir)
        self.work.mkdir(parents=True, exist_ok=True)

    def understood(self, pipeline, aggregate: str, speller=None, mode: str | None = None) -> UnderstoodPipeline:
        """The pipeline behind the study's decomposer (or `mode`), with an optional speller."""
        decomposer = Decomposer(mode or self.config.decomposition, speller=speller)
        return UnderstoodPipeline(pipeline, decomposer, aggregate=aggregate)

    # hotpotqa ------------------------------------------------------------------------------------------------
    def hotpot(self) -> None:
        """Both supporting paragraphs in the top 5, raw question against understood, aggregation chosen on train."""
        ds = load_dataset(self.config.hotpot)
        pipeline = build(self.config.first_stage, ds.corpus)
        train, test = ds.split_queries("train"), ds.split_queries("test")
        train_qrels, test_qrels = ds.split_qrels("train"), ds.split_qrels("test")
        on_train = {}
        for aggregate in self.config.aggregates:
            run = self.understood(pipeline, aggregate).search(train, 100)
            on_train[aggregate] = round(statistics.fmean(both_at(run, train_qrels, 5).values()), 4)
        chosen = max(self.config.aggregates, key=lambda a: on_train[a])
        raw = pipeline.search(test, 100)
        systems: dict[str, Any] = {"raw": self._hotpot_row(raw, test_qrels)}
        for aggregate in self.config.aggregates:
            stage = self.understood(pipeline, aggregate)
            run = stage.search(test, 100)
            row = self._hotpot_row(run, test_qrels)
            row["split_share"] = round(statistics.fmean(u.split for u in stage.last_understanding.values()), 4)
            systems[aggregate] = row
        best = systems[chosen]
        tests = {
            "both@5": test_pair(systems["raw"]["per_query_both5"], best["per_query_both5"]),
            "nDCG@10": test_pair(systems["raw"]["per_query_ndcg"], best["per_query_ndcg"]),
        }
        self.write_json(
            self.stage_file("hotpot"),
            indent=1,
            record={
                "dataset": self.config.hotpot,
                "first_stage": self.config.first_stage,
                "chosen": chosen,
                "chosen_on": "train",
                "train_both5": on_train,
                "test_queries": len(test),
                "systems": systems,
                "tests": tests,
            },
        )

    @staticmethod
    def _hotpot_row(run: Run, qrels: Qrels) -> dict[str, Any]:
        both = both_at(run, qrels, 5)
        ndcg = evaluate(run, qrels, "nDCG@10").per_query["nDCG@10"]
        return {
            "both@5": round(statistics.fmean(both.values()), 4),
            "nDCG@10": round(statistics.fmean(ndcg.values()), 4),
            "per_query_both5": both,
            "per_query_ndcg": dict(ndcg),
        }

    # the multi-intent benchmark ------------------------------------------------------------------------------
    def pairs(self, split: str) -> list[IntentPair]:
        """The benchmark's pairs of a split (train pairs from train splits, test pairs from test splits)."""
        n = self.config.train_pairs if split == "train" else self.config.test_pairs
        return build_pairs(split, n, self.config.seed, self.config.datasets)

    def _systems(self, pipeline, aggregate: str, speller) -> dict[str, Callable[[list[Query]], tuple[Run, Any]]]:
        def plain(queries: list[Query]) -> tuple[Run, Any]:
            return pipeline.search(queries, 100), None

        def staged(stage: UnderstoodPipeline) -> Callable[[list[Query]], tuple[Run, Any]]:
            return lambda queries: (stage.search(queries, 100), stage)

        return {
            "raw": plain,
            "speller": staged(self.understood(pipeline, aggregate, speller, mode="off")),
            "decompose": staged(self.understood(pipeline, aggregate)),
            "speller+decompose": staged(self.understood(pipeline, aggregate, speller)),
        }

    def synthetic(self) -> None:
        """Every system at every typo rate on test pairs, the speller and the aggregation chosen on train pairs."""
        corpus = combined_corpus(self.config.datasets)
        pipeline = build(self.config.first_stage, corpus)
        train, test = self.pairs("train"), self.pairs("test")
        train_qrels, test_qrels = pair_qrels(train), pair_qrels(test)
        noisy_train = pair_queries(train, self.config.choose_at_noise)
        by_distance = {}
        for distance in self.config.speller_distances:
            speller = speller_for(corpus, max_edit_distance=distance)
            run = self.understood(pipeline, "rrf", speller, mode="off").search(noisy_train, 100)
            by_distance[distance] = round(evaluate(run, train_qrels, "nDCG@10").means["nDCG@10"], 4)
        distance = max(self.config.speller_distances, key=lambda d: by_distance[d])
        by_aggregate = {}
        for aggregate in self.config.aggregates:
            run = self.understood(pipeline, aggregate).search(noisy_train, 100)
            by_aggregate[aggregate] = round(statistics.fmean(pair_hits(run, train)[1].values()), 4)
        aggregate = max(self.config.aggregates, key=lambda a: by_aggregate[a])
        speller = speller_for(corpus, max_edit_distance=distance)
        systems = self._systems(pipeline, aggregate, speller)
        rates: dict[str, Any] = {}
        for rate in self.config.noise_rates:
            queries = pair_queries(test, rate)
            rows: dict[str, Any] = {}
            for name, search in systems.items():
                began = time.perf_counter()
                run, stage = search(queries)
                seconds = time.perf_counter() - began
                ndcg = dict(evaluate(run, test_qrels, "nDCG@10").per_query["nDCG@10"])
                recall, both = pair_hits(run, test)
                rows[name] = {
                    "nDCG@10": round(statistics.fmean(ndcg.values()), 4),
                    "intent_recall@10": round(statistics.fmean(recall.values()), 4),
                    "both_intents@10": round(statistics.fmean(both.values()), 4),
                    "ms_per_query": round(1000 * seconds / len(queries), 2),
                    "llm_calls_per_query": 0.0
                    if stage is None
                    else statistics.fmean(u.llm_calls for u in stage.last_understanding.values()),
                    "split_share": None
                    if stage is None
                    else round(statistics.fmean(u.split for u in stage.last_understanding.values()), 4),
                    "per_query_ndcg": ndcg,
                    "per_query_both": both,
                }
            for name in SYSTEMS[1:]:
                rows[name]["vs_raw"] = {
                    "nDCG@10": test_pair(rows["raw"]["per_query_ndcg"], rows[name]["per_query_ndcg"]),
                    "both_intents@10": test_pair(rows["raw"]["per_query_both"], rows[name]["per_query_both"]),
                }
            rates[f"{rate:.2f}"] = rows
        self.write_json(
            self.stage_file("synthetic"),
            indent=1,
            record={
                "datasets": list(self.config.datasets),
                "train_pairs": len(train),
                "test_pairs": len(test),
                "first_stage": self.config.first_stage,
                "speller_distance": distance,
                "speller_on_train": by_distance,
                "aggregate": aggregate,
                "aggregate_on_train": by_aggregate,
                "chosen_on": "train pairs",
                "chosen_at_noise": self.config.choose_at_noise,
                "rates": rates,
                "denoising_recovery": self._recovery(rates),
            },
        )

    def _recovery(self, rates: dict[str, Any]) -> dict[str, float | None]:
        clean, noisy = rates["0.00"], rates[f"{self.config.choose_at_noise:.2f}"]
        out = {}
        for base, fixed in (("raw", "speller"), ("decompose", "speller+decompose")):
            lost = clean[base]["nDCG@10"] - noisy[base]["nDCG@10"]
            out[f"{fixed} over {base}"] = (
                None if lost <= 0 else round((noisy[fixed]["nDCG@10"] - noisy[base]["nDCG@10"]) / lost, 4)
            )
        return out

    # per-intent routing --------------------------------------------------------------------------------------
    def routing(self) -> None:
        """Whether each sub-query of a two-domain pair reaches its own domain's expert."""
        router = Reranker(self.config.router)
        decisions = router.route(["probe"])
        domains = set(decisions[0].probabilities)
        eligible = [p for p in self.pairs("test") if all(i.dataset in domains for i in p.intents)]
        results = {}
        for rate in sorted({0.0, self.config.choose_at_noise}):
            decomposer = Decomposer(self.config.decomposition)
            understood = [decomposer.understand(p.text_at(rate)) for p in eligible]
            own, split, raw_choices = 0, 0, Counter()
            sub_texts = [s.text for u in understood if len(u.sub_queries) == 2 for s in u.sub_queries]
            sub_choices = iter(d.choice for d in router.route(sub_texts)) if sub_texts else iter(())
            for pair, understanding in zip(eligible, understood, strict=True):
                if len(understanding.sub_queries) != 2:
                    continue
                split += 1
                first, second = next(sub_choices), next(sub_choices)
                own += (first, second) == (pair.intents[0].dataset, pair.intents[1].dataset)
            for pair, decision in zip(eligible, router.route([p.text_at(rate) for p in eligible]), strict=True):
                datasets = [i.dataset for i in pair.intents]
                raw_choices["one of its two domains" if decision.choice in datasets else "neither"] += 1
            results[f"{rate:.2f}"] = {
                "pairs": len(eligible),
                "split_into_two": split,
                "both_to_own_expert": own,
                "share_of_pairs": round(own / len(eligible), 4) if eligible else None,
                "share_of_split_pairs": round(own / split, 4) if split else None,
                "raw_query": dict(raw_choices),
            }
        self.write_json(
            self.stage_file("routing"),
            indent=1,
            record={"router": self.config.router, "domains": sorted(domains), "rates": results},
        )

    # plan ----------------------------------------------------------------------------------------------------
    def steps(self) -> list[Step]:
        """The plan, in order."""
        stages = [("hotpot", self.hotpot), ("synthetic", self.synthetic), ("routing", self.routing)]
        if self.config.llm_pairs or self.config.llm_hotpot:
            stages.append((llm.stage_name(self.config), partial(llm.run_llm_stage, self)))
        return [
            Step(
                name,
                "llm" if name.startswith("llm-") else "measure",
                done=lambda n=name: self.stage_file(n).exists(),
                action=action,
            )
            for name, action in stages
        ]

    def run(self, max_minutes: float | None = None, only: set[str] | None = None) -> list[Stage]:
        """Run every stage not yet done."""
        return run_plan(self.steps(), self.work, max_minutes=max_minutes, only=only, tag="omni")

    def results(self) -> dict[str, Any]:
        """Every finished stage's result, per-query values left out."""

        def strip(data: Any) -> Any:
            if isinstance(data, dict):
                return {k: strip(v) for k, v in data.items() if not k.startswith("per_query")}
            return data

        out = {
            n: strip(self.read_json(self.stage_file(n)))
            for n in ("hotpot", "synthetic", "routing")
            if self.stage_file(n).exists()
        }
        llm_file = self.stage_file(llm.stage_name(self.config))
        if (self.config.llm_pairs or self.config.llm_hotpot) and llm_file.exists():
            out["llm"] = strip(self.read_json(llm_file))
        return out
