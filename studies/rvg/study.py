"""The retrieval-vs-generation study's stages; each writes one JSON file in the work dir and is skipped when that
file exists. One stage per task and dataset, so a break loses one set's work at most.

1. `qa:<set>`: a seeded test sample answered by one generator from each context: none (closed-book, R0), each
   retrieve-then-read pipeline's top k, the reranked pipeline's, GenRead's own passages, and the mix of retrieved
   and generated passages chosen on a seeded train sample by mean F1. EM and F1; DPR-style answer recall of each
   context's first 1 and 5 documents (5 are fetched, k are read); paired tests of per-query F1 against
   closed-book and against the first retriever; cost per query (seconds, LLM calls, generated tokens).
2. `rank:<set>`: nDCG@10 of each ranking system on a seeded test sample, paired tests against the first system,
   and its cost per query (HyDE's LLM calls and tokens).
3. `lm:<set>`: perplexity of each sampled document's second half given its first half, alone, after BM25's top
   documents for the first half (the document itself excluded), or after a passage the LLM wrote for it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from functools import cached_property, partial
from pathlib import Path
from typing import Any

from routerank.data.types import Dataset, Document, Query, Run, sample_queries
from routerank.evaluate.measures import evaluate
from routerank.generate.generator import Answer, Generator
from routerank.generate.genread import GenRead
from routerank.generate.perplexity import conditional_nll, perplexity
from routerank.generate.qa_run import qa_contexts
from routerank.generate.scoring import require_answers, score_answers
from routerank.pipeline import build, llm_cost
from routerank.stages import Stage, Step, run_plan
from studies.base import Study
from studies.rvg.config import RvgConfig
from studies.rvg.measures import (
    RECALL_DEPTHS,
    answer_recall,
    clip_words,
    closed_answers,
    hyde_base,
    leaks,
    lm_documents,
    mean,
    mean_nll,
    split_halves,
    test_pair,
    with_context,
)

KINDS = ("qa", "rank", "lm")
CLOSED_BOOK = "closed-book"
RANK_DEPTH = 100
COST_KEYS = ("llm_calls", "generated_tokens", "passages")
WARM_UP = Query("warm-up", "What is a warm-up?")


def cost_since(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """What an object's LLM cost (`routerank.pipeline.llm_cost`) grew by between two readings (every key either
    reading has, the three `COST_KEYS` at least)."""
    return {key: after.get(key, 0) - before.get(key, 0) for key in dict.fromkeys([*COST_KEYS, *after, *before])}


def without_per_query(data: Any) -> Any:
    """A stage record without its per-query values (every key that starts with `per_query`), at any depth."""
    if isinstance(data, dict):
        return {k: without_per_query(v) for k, v in data.items() if not k.startswith("per_query")}
    return data


def timed_search(searcher: Any, queries: list[Query], k: int) -> tuple[Run, float, dict[str, int]]:
    """The searcher's run for the queries, the seconds it took and its LLM cost. One warm-up query first, so lazy
    model loads (an encoder, a reranker, an LLM) are not charged to the first condition that needs them."""
    searcher.search([WARM_UP], 1)
    before = llm_cost(searcher)
    began = time.perf_counter()
    run = searcher.search(queries, k)
    return run, time.perf_counter() - began, cost_since(before, llm_cost(searcher))


def answer_tokens(generator: Generator, answers: Sequence[Answer]) -> int:
    """Tokens the generator wrote for these answers (a closed-set choice is one scored token)."""
    free = [a.raw for a in answers if a.stopped_by != "choice"]
    written = generator.tokenizer(free, add_special_tokens=False)["input_ids"] if free else []
    return sum(len(ids) for ids in written) + sum(a.stopped_by == "choice" for a in answers)


class RvgStudy(Study):
    """The QA, ranking and language-modelling stages, one per dataset."""

    FOLDER = "rvg"

    def __init__(self, config: RvgConfig, work_dir: Path | None = None, *, progress: bool = True):
        super().__init__(config, work_dir, progress=progress)
        self.work.mkdir(parents=True, exist_ok=True)

    def sample(self, name: str, split: str, n: int | None) -> list[Query]:
        """The seeded sample of `n` of a split's queries (all for None)."""
        return sample_queries(self.dataset(name).split_queries(split), n, self.config.seed)

    # question answering --------------------------------------------------------------------------------------
    def generator(self, name: str) -> Generator:
        """The study's answer generator for a set: closed-set over `choices` where the config says so."""
        config = self.config
        return Generator(
            config.model,
            template=config.template or None,
            max_new_tokens=config.max_new_tokens,
            context_tokens=config.context_tokens,
            batch_size=config.batch_size,
            progress=self.progress,
            choices=config.choices if name in config.closed_set else (),
        )

    def qa_sources(self) -> dict[str, str]:
        """Each context condition's label and pipeline spec, in table order (the mix is chosen per set)."""
        retrievers = {spec: spec for spec in self.config.qa_retrievers}
        return {**retrievers, "reranked": self.config.reranked, "genread": self.config.genread}

    def _answer(
        self, generator: Generator, queries: list[Query], contexts: list[list[Document]]
    ) -> tuple[list[Answer], float]:
        began = time.perf_counter()
        answers = generator.generate(queries, contexts)
        return answers, time.perf_counter() - began

    def _row(
        self,
        generator: Generator,
        queries: list[Query],
        answers: list[Answer],
        seconds: dict[str, float],
        passages: Mapping[str, int],
    ) -> dict[str, Any]:
        scores = score_answers(queries, answers)
        n = len(queries)
        row: dict[str, Any] = {
            "n": n,
            "EM": round(scores.em, 4),
            "F1": round(scores.f1, 4),
            "seconds_per_query": round(sum(seconds.values()) / n, 3),
            "context_seconds_per_query": round(seconds["context"] / n, 3),
            "answer_seconds_per_query": round(seconds["answer"] / n, 3),
            "llm_calls_per_query": round((n + passages["llm_calls"]) / n, 3),
            "generated_tokens_per_query": round(
                (answer_tokens(generator, answers) + passages["generated_tokens"]) / n, 1
            ),
            "passage_tokens_per_query": round(passages["generated_tokens"] / n, 1),
            "cached_answers": sum(a.cached for a in answers),
            "cached_passages": passages.get("cached"),
            "per_query_f1": {q: f for q, (_, f) in scores.per_query.items()},
            "per_query_em": {q: e for q, (e, _) in scores.per_query.items()},
        }
        if generator.choices:
            counts = Counter(a.text for a in answers)
            row["answer_shares"] = {c: round(counts[c] / n, 4) for c in generator.choices}
        return row

    def closed_book(self, generator: Generator, queries: list[Query]) -> dict[str, Any]:
        """R0: every query answered with no context."""
        answers, seconds = self._answer(generator, queries, [[] for _ in queries])
        row = self._row(generator, queries, answers, {"context": 0.0, "answer": seconds}, dict.fromkeys(COST_KEYS, 0))
        return {"spec": None, **row}

    def read(
        self,
        ds: Dataset,
        queries: list[Query],
        generator: Generator,
        searcher: Any,
        spec: str,
        *,
        split: str = "test",
        recall: bool = True,
    ) -> dict[str, Any]:
        """Retrieve-then-read: the searcher's top `max(5, k)` for answer recall, its top k read by the generator."""
        run, context_seconds, passages = timed_search(searcher, queries, max(max(RECALL_DEPTHS), self.config.k))
        contexts = qa_contexts(ds, queries, split, "retrieved", max(max(RECALL_DEPTHS), self.config.k), run)
        answers, answer_seconds = self._answer(generator, queries, [c[: self.config.k] for c in contexts])
        row = self._row(generator, queries, answers, {"context": context_seconds, "answer": answer_seconds}, passages)
        row["docs_read"] = round(sum(min(len(c), self.config.k) for c in contexts) / len(queries), 2)
        for depth in RECALL_DEPTHS if recall else ():
            hits = answer_recall(queries, contexts, depth)
            row[f"recall@{depth}"], row[f"per_query_recall@{depth}"] = mean(hits), hits
        return {"spec": spec, **row}

    def qa(self, name: str) -> None:
        """Every context condition on the test sample of one set, the mix chosen on its train sample."""
        config = self.config
        ds = self.dataset(name)
        test, train = self.sample(name, "test", config.qa_sample), self.sample(name, "train", config.choose_sample)
        require_answers(test, f"{name} (test split)")
        require_answers(train, f"{name} (train split)")
        generator = self.generator(name)
        recall = name not in config.closed_set and not closed_answers(test)  # "yes" in a passage proves nothing
        conditions = {CLOSED_BOOK: self.closed_book(generator, test)}
        for label, spec in self.qa_sources().items():
            searcher = build(spec, ds.corpus, progress=self.progress)
            conditions[label] = self.read(ds, test, generator, searcher, spec, recall=recall)
        mixes = {spec: build(spec, ds.corpus, progress=self.progress) for spec in config.mixed_candidates}
        on_train = {
            spec: self.read(ds, train, generator, mixes[spec], spec, split="train", recall=False)["F1"]
            for spec in mixes
        }
        chosen = max(config.mixed_candidates, key=lambda spec: on_train[spec])
        conditions["mixed"] = self.read(ds, test, generator, mixes[chosen], chosen, recall=recall)
        baseline = config.qa_retrievers[0]
        for label, row in conditions.items():
            row["tests"] = {
                against: test_pair(conditions[against]["per_query_f1"], row["per_query_f1"])
                for against in (CLOSED_BOOK, baseline)
                if against != label
            }
        self.write_json(
            self.stage_file(f"qa:{name}"),
            indent=1,
            record={
                "dataset": name,
                "test_queries": len(test),
                "train_queries": len(train),
                "k": config.k,
                "closed_set": list(generator.choices),
                "answer_recall": recall,
                "baseline": baseline,
                "mixed_on_train": on_train,
                "mixed_chosen": chosen,
                "generator": generator.settings(),
                "conditions": conditions,
            },
        )

    # ranking -------------------------------------------------------------------------------------------------
    def rank(self, name: str) -> None:
        """nDCG@10 of every ranking system on the test sample of one set, with its cost."""
        ds = self.dataset(name)
        queries = self.sample(name, "test", self.config.rank_sample)
        qrels = ds.split_qrels("test").subset(q.id for q in queries)
        systems: dict[str, Any] = {}
        for spec in self.config.rank_systems:
            searcher = build(spec, ds.corpus, progress=self.progress)
            run, seconds, cost = timed_search(searcher, queries, RANK_DEPTH)
            ndcg = dict(evaluate(run, qrels, "nDCG@10").per_query["nDCG@10"])
            systems[spec] = {
                "nDCG@10": mean(ndcg),
                "seconds_per_query": round(seconds / len(queries), 3),
                "llm_calls_per_query": round(cost["llm_calls"] / len(queries), 3),
                "generated_tokens_per_query": round(cost["generated_tokens"] / len(queries), 1),
                "cached_passages": cost.get("cached"),
                "per_query_ndcg": ndcg,
            }
        baseline = self.config.rank_systems[0]
        for spec, row in systems.items():
            if spec != baseline:
                row["vs_baseline"] = test_pair(systems[baseline]["per_query_ndcg"], row["per_query_ndcg"])
            expanded = hyde_base(spec)
            if expanded in systems:
                row["vs_expanded"] = test_pair(systems[expanded]["per_query_ndcg"], row["per_query_ndcg"])
        self.write_json(
            self.stage_file(f"rank:{name}"),
            indent=1,
            record={"dataset": name, "test_queries": len(queries), "baseline": baseline, "systems": systems},
        )

    # language modelling --------------------------------------------------------------------------------------
    @cached_property
    def writer(self) -> GenRead:
        """The GenRead that writes the continuation contexts: the process's shared writer for the model, so its
        passages share the cache with every `genread` spec, and its loaded model scores perplexity."""
        return GenRead(self.config.model)

    def lm(self, name: str) -> None:
        """Perplexity of each sampled document's second half with no context, BM25's context or a generated one."""
        config = self.config
        ds = self.dataset(name)
        docs = lm_documents(ds.corpus, config.lm_passages, config.lm_min_tokens, config.seed)
        ids = [d.id for d in docs]
        firsts, targets = zip(*(split_halves(d.text, config.lm_max_words) for d in docs), strict=True)
        run = build("bm25", ds.corpus).search([Query(i, f) for i, f in zip(ids, firsts, strict=True)], config.lm_k + 1)
        retrieved = [
            [clip_words(ds.corpus[d].full_text, config.lm_doc_words) for d in run[i].doc_ids if d != i][: config.lm_k]
            for i in ids
        ]
        writer = self.writer
        model, tokenizer = writer.writer.model, writer.writer.tokenizer
        writer.reset_cost()
        began = time.perf_counter()
        written = writer.write(list(firsts))
        write_seconds = time.perf_counter() - began
        contexts = {
            "none": [[] for _ in ids],
            "bm25": retrieved,
            "generated": [[clip_words(d.text, config.lm_doc_words)] for d in written],
        }
        conditions: dict[str, Any] = {}
        for label, context in contexts.items():
            prefixes = [with_context(c, f) for c, f in zip(context, firsts, strict=True)]
            nll = conditional_nll(model, tokenizer, prefixes, list(targets), batch_size=config.lm_batch_size)
            per_passage = mean_nll(ids, nll)
            conditions[label] = {
                "perplexity": round(perplexity(nll), 3),
                "mean_nll": mean(per_passage),
                "target_tokens": sum(t for _, t in nll),
                "leaks": sum(leaks(t, c) for t, c in zip(targets, context, strict=True)),
                "per_query_nll": per_passage,
            }
        tests = {
            f"{b} vs {a}": test_pair(conditions[a]["per_query_nll"], conditions[b]["per_query_nll"])
            for a, b in (("none", "bm25"), ("none", "generated"), ("bm25", "generated"))
        }
        self.write_json(
            self.stage_file(f"lm:{name}"),
            indent=1,
            record={
                "dataset": name,
                "passages": len(docs),
                "generated_cost": {
                    **writer.cost(),
                    "seconds_per_passage": round(write_seconds / max(1, len(docs)), 3),
                },
                "conditions": conditions,
                "tests": tests,
            },
        )

    # plan ----------------------------------------------------------------------------------------------------
    def steps(self) -> list[Step]:
        """The plan, in order: every QA set, then every ranking set, then every language-modelling set."""
        config = self.config
        plan = [("qa", self.qa, config.qa_datasets), ("rank", self.rank, config.rank_datasets)]
        plan.append(("lm", self.lm, config.lm_datasets))
        return [
            Step(f"{kind}:{name}", kind, done=self.stage_file(f"{kind}:{name}").exists, action=partial(act, name))
            for kind, act, names in plan
            for name in names
        ]

    def run(self, max_minutes: float | None = None, only: set[str] | None = None) -> list[Stage]:
        """Run every stage not yet done."""
        return run_plan(self.steps(), self.work, max_minutes=max_minutes, only=only, tag="rvg")

    def results(self) -> dict[str, Any]:
        """Every finished stage's result by task and set, per-query values left out, and the config."""

        out: dict[str, Any] = {"config": asdict(self.config)}
        for step in self.steps():
            if step.done():
                kind, name = step.name.split(":", 1)
                out.setdefault(kind, {})[name] = without_per_query(self.read_json(self.stage_file(step.name)))
        return out
