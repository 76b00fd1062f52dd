"""What every command group shares: the option types, console output, dataset loading and the Ray switch."""

from __future__ import annotations

import sys
from dataclasses import MISSING, fields
from typing import Annotated

import typer

from routerank.data.documents import load_documents
from routerank.data.registry import load_dataset
from routerank.errors import RouterankError
from routerank.pipeline import build
from routerank.rerank.base import option_value
from routerank.scale import executor_for

DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="name under ROUTERANK_DATA, or a BEIR folder")]
PipelineOpt = Annotated[
    str,
    typer.Option(
        "--pipeline",
        "-p",
        help="bm25 | dense[:model] | hybrid | rrf(..) | null | genread | hyde(A) | mix(2*A,1*B) (any first stage)",
    ),
]
MeasuresOpt = Annotated[str, typer.Option("--measures", "-m", help="ir_measures names, space separated")]
LenientOpt = Annotated[bool, typer.Option("--lenient", help="drop judgments naming unknown ids (and say which)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        help="run dense encoding and reranking in shards on Ray: alone, a local Ray on this machine's cores; "
        "with ADDRESS, that cluster",
        metavar="[ADDRESS]",
    ),
]


def console(stderr: bool = False):
    # deferred: rich loads only when a table is printed
    from rich.console import Console

    return Console(stderr=stderr)


def report_drops(split: str, dropped: list[tuple[str, str]]) -> None:
    examples = ", ".join(f"{q}/{d}" for q, d in dropped[:5])
    print(
        f"routerank: --lenient dropped {len(dropped)} judgments from split {split!r} naming unknown ids "
        f"(e.g. {examples})",
        file=sys.stderr,
    )


def load(dataset: str, split: str | None, lenient: bool):
    return load_dataset(dataset, splits=None if split is None else [split], lenient=lenient, on_drop=report_drops)


def parse_options(items: list[str] | None) -> dict:
    """`--rerank-opt max_doc_tokens=128` → {"max_doc_tokens": 128}; values parse as spec options do."""
    options = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.isidentifier():
            raise RouterankError(f"bad --rerank-opt {item!r}", fix="use KEY=VALUE, e.g. max_doc_tokens=128")
        options[key] = option_value(value)
    return options


def documents_for(ds, spec: str):
    """The dataset's documents.tsv map when `spec` has a `docs:` stage (read only then, so a bad file never stops
    other pipelines), else None."""
    return load_documents(ds) if "docs:" in spec else None


def retrieve(ds, pipeline: str, queries, k: int, rebuild: bool = False, rerank_options: dict | None = None, ray=None):
    retriever = build(
        pipeline,
        ds.corpus,
        rebuild=rebuild,
        progress=True,
        reranker_options=rerank_options,
        ray=ray,
        documents=documents_for(ds, pipeline),
    )
    return retriever.search(queries, k)


def on_ray(ray: str | None, fn, *args):
    """`fn(*args)` here, or as one Ray task when --ray is given (a training run is one task)."""
    if ray is None:
        return fn(*args)

    return executor_for(ray).run_tasks(fn, [args])[0]


def config_defaults(config_class) -> dict:
    """A config dataclass's field defaults: the CLI takes its defaults from here, so the two never drift."""

    return {f.name: f.default for f in fields(config_class) if f.default is not MISSING}
