"""RAG question answering on a dataset: pick each query's context (gold, retrieved or none), generate, score.

As a script it measures the generator's headroom on one protocol, the three contexts side by side on the same
seeded queries:

    python -m studies.rag_qa --dataset squad-dev --split test --sample 200 --markdown

- gold: the query's judged-relevant document(s), the best a retriever could hand over;
- retrieved: a pipeline's top k (BM25 top 3 by default);
- none: R0, the closed-book prompt.

Each condition is `routerank.generate.qa_run.run_qa` (what `routerank qa` runs). The JSON goes to
reports/generator.json. Every generation is cached, so a rerun (or a killed run) only generates what is missing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from routerank.data.registry import load_dataset
from routerank.generate.generator import Generator
from routerank.generate.qa_run import run_qa
from routerank.pipeline import build


def markdown(rows: list[dict]) -> str:
    """The README table: one row per condition (template, context, queries, EM, F1, seconds)."""
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
                retriever=lambda corpus: build(pipeline, corpus, progress=True),
                pipeline=pipeline,
                k=depth,
                sample=sample,
                seed=seed,
                generator=generator,
            )
            rows.append({"label": result.label, **result.summary()})
    return {"dataset": dataset, "split": split, "sample": sample, "seed": seed, "conditions": rows}


def main(argv: list[str] | None = None) -> None:
    """`python -m studies.rag_qa`: measure, write the JSON report, and print the table with --markdown."""
    parser = argparse.ArgumentParser(prog="python -m studies.rag_qa", description=__doc__.splitlines()[0])
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
