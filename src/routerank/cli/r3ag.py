"""`routerank r3ag ...`: R3AG retriever routing's library commands (routing labels for a retriever pool). The R3AG
experiment itself is a study run from a checkout: `python -m studies.r3ag --config ...`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from routerank.cli.common import DatasetOpt
from routerank.r3ag.labelling import LabelSettings, build_labels, work_dir_for
from routerank.r3ag.pool import PoolConfig

r3ag_app = typer.Typer(no_args_is_help=True, help="R3AG retriever routing: routing labels for a retriever pool.")


@r3ag_app.command("labels")
def r3ag_labels(
    dataset: DatasetOpt,
    pool: Annotated[Path, typer.Option(help="pool TOML, e.g. configs/r3ag-pool.toml")] = Path("configs/r3ag-pool.toml"),
    split: Annotated[str, typer.Option(help="qrels split whose queries are labelled")] = "train",
    sample: Annotated[int | None, typer.Option(help="a seeded sample of N queries")] = None,
    seed: Annotated[int, typer.Option(help="seed for --sample")] = 13,
    k: Annotated[int, typer.Option("-k", help="context documents per query")] = 3,
    model: Annotated[str, typer.Option(help="generator LLM spec")] = "smollm2",
    template: Annotated[str, typer.Option(help="answer template: plain | chatml")] = "plain",
    max_new_tokens: Annotated[int, typer.Option(help="answer length limit in tokens")] = 32,
    quality: Annotated[str, typer.Option(help="quality labels from: qrels (nDCG@10) | judge (LLM judge)")] = "qrels",
    judge: Annotated[str, typer.Option(help="the judge's LLM spec (default: the generator's model)")] = "",
    work_dir: Annotated[Path | None, typer.Option(help="runs and labels (default: cache/r3ag/labels/...)")] = None,
) -> None:
    """Quality (nDCG@10, or an LLM judge's) and utility (answer F1; EM in meta) of every pool member on every query;
    resumable."""
    settings = LabelSettings(
        split,
        sample,
        seed,
        k,
        model=model,
        template=template,
        max_new_tokens=max_new_tokens,
        quality=quality,
        judge=judge,
    )
    config = PoolConfig.read(pool)
    work = work_dir or work_dir_for(dataset, config, settings)
    labels = build_labels(dataset, config, settings, work_dir=work)
    name_of_quality = labels.meta.get("quality", "quality")
    for name, f1 in labels.mean("utility").items():
        print(f"{name}: {name_of_quality} {labels.mean('quality')[name]:.3f}  F1 {f1:.3f}")
    agreement = labels.meta.get("judge_vs_qrels")
    if agreement and agreement.get("spearman") is not None:
        print(f"judge vs nDCG@10 over {agreement['cells']} cells: Spearman {agreement['spearman']:.3f}")
    print(f"wrote {work / 'labels'} ({len(labels)} queries)", file=sys.stderr)
