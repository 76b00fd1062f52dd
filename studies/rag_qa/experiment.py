"""RAG question answering on a dataset: pick each query's context (gold, retrieved or none), generate, score.

`run_qa` is what `routerank qa` runs. As a script it measures the generator's headroom on one protocol, the
three contexts side by side on the same seeded queries:

    python -m studies.rag_qa.experiment --dataset squad-dev --split test --sample 200 --markdown

- gold: the query's judged-relevant document(s), the best a retriever could hand over;
- retrieved: a pipeline's top k (BM25 top 3 by default);
- none: R0, the closed-book prompt.

The JSON goes to reports/generator.json. Every generation is cached, so a rerun (or a killed run) only
generates what is missing.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from routerank.data.types import Dataset, sample_queries
from routerank.errors import RouterankError
from routerank.generate.context import gold_contexts, retrieved_contexts
from routerank.generate.generator import Answer, Generator
from routerank.generate.scoring import QAScores, require_answers, score_answers
from routerank.generate.templates import get_template

CONTEXTS = ("gold", "retrieved", "none")


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
        if self.context == "gold":
            return f"gold top {self.k}"
        if self.context == "retrieved":
            return f"{self.pipeline} top {self.k}"
        return "no context (R0)"

    def summary(self) -> dict:
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


def _check(context: str, k: int) -> None:
    if context not in CONTEXTS:
        raise RouterankError(f"unknown context {context!r}", fix=f"choose one of {', '.join(CONTEXTS)}")
    if k < 0:
        raise RouterankError(f"k must be 0 or more documents per query, got {k}", fix="k=0, or --context none, is R0")


def _contexts(ds: Dataset, queries, split: str, context: str, pipeline: str, k: int, progress: bool):
    if context == "none" or k == 0:
        return [[] for _ in queries]
    if context == "gold":
        return gold_contexts(queries, ds.split_qrels(split), ds.corpus, k)
    from routerank.pipeline import build

    run = build(pipeline, ds.corpus, progress=progress).search(queries, k)
    return retrieved_contexts(queries, run, ds.corpus, k)


def run_qa(
    dataset: str | Dataset,
    *,
    split: str = "test",
    context: str = "retrieved",
    pipeline: str = "bm25",
    k: int = 3,
    sample: int | None = None,
    seed: int = 13,
    generator: Generator | None = None,
    progress: bool = True,
    **generator_options,
) -> QARun:
    """Answer a split's queries (or a seeded sample) from their context and score them with EM/F1.

    Bad input (an unknown context or template, k < 0, queries without gold answers) is refused before any model
    loads.
    `generator` reuses a loaded Generator; otherwise one is built from `generator_options`."""
    _check(context, k)
    if generator_options.get("template") is not None:
        get_template(generator_options["template"])
    if isinstance(dataset, str):
        from routerank.data.registry import load_dataset

        dataset = load_dataset(dataset, splits=[split])
    queries = sample_queries(dataset.split_queries(split), sample, seed)
    require_answers(queries, f"{dataset.name} ({split} split)")
    start = time.perf_counter()
    contexts = _contexts(dataset, queries, split, context, pipeline, k, progress)
    if generator is None:
        generator = Generator(progress=progress, **generator_options)
    answers = generator.generate(queries, contexts)
    seconds = time.perf_counter() - start
    k = 0 if context == "none" else k
    return QARun(
        dataset.name,
        split,
        context,
        pipeline if context == "retrieved" else None,
        k,
        score_answers(queries, answers),
        answers,
        seconds,
        {**generator.settings(), "sample": sample, "seed": seed},
    )


def markdown(rows: list[dict]) -> str:
    lines = ["| template | context | queries | EM | F1 | seconds |", "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['settings']['template']} | {row['label']} | {row['n']} | {row['em']:.3f} | {row['f1']:.3f} "
            f"| {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


def measure(
    dataset: str,
    split: str,
    sample: int | None,
    seed: int,
    pipeline: str,
    k: int,
    gold_k: int,
    templates: tuple[str | None, ...] = (None,),
    **options,
) -> dict:
    """Gold, retrieved and no context on the same queries, per template (None: the family's), one model load:
    the headroom table."""
    from routerank.data.registry import load_dataset

    ds = load_dataset(dataset, splits=[split])
    loaded = Generator(**options)
    rows = []
    for template in templates:
        generator = loaded if template is None else loaded.with_template(template)
        for context, depth in (("gold", gold_k), ("retrieved", k), ("none", 0)):
            result = run_qa(
                ds,
                split=split,
                context=context,
                pipeline=pipeline,
                k=depth,
                sample=sample,
                seed=seed,
                generator=generator,
            )
            rows.append({"label": result.label, **result.summary()})
    return {"dataset": dataset, "split": split, "sample": sample, "seed": seed, "conditions": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="squad-dev")
    parser.add_argument("--split", default="test")
    parser.add_argument("--sample", type=int, default=200, help="seeded sample of N queries (0 = all)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--pipeline", default="bm25")
    parser.add_argument("--k", type=int, default=3, help="retrieved documents per query")
    parser.add_argument("--gold-k", type=int, default=1, help="gold documents per query")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument(
        "--template", action="append", help="answer template(s) to compare (default: the model family's)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--context-tokens", type=int, default=1024)
    parser.add_argument("--output", type=Path, default=Path("reports/generator.json"))
    parser.add_argument("--markdown", action="store_true", help="print the README table")
    args = parser.parse_args(argv)
    report = measure(
        args.dataset,
        args.split,
        args.sample or None,
        args.seed,
        args.pipeline,
        args.k,
        args.gold_k,
        tuple(args.template or [None]),
        model=args.model,
        max_new_tokens=args.max_new_tokens,
        context_tokens=args.context_tokens,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        print(markdown(report["conditions"]))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
