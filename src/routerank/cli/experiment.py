"""`routerank experiment ...` (the staged, resumable experiments that write reports/) and `routerank r3ag ...`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from routerank.cli.common import DatasetOpt, RayOpt

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
    from routerank.r3ag.labelling import LabelSettings, build_labels, work_dir_for
    from routerank.r3ag.pool import PoolConfig

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


experiment_app = typer.Typer(no_args_is_help=True, help="Staged, cached experiments that write reports/.")


@experiment_app.command("r2r")
def experiment_r2r(
    config: Annotated[Path, typer.Option(help="TOML config, e.g. configs/r2r-cpu.toml")],
    work_dir: Annotated[Path | None, typer.Option(help="stages live here (default: cache/r2r/PROFILE-HASH)")] = None,
    report: Annotated[Path, typer.Option(help="markdown report; figures go in a folder beside it")] = Path(
        "reports/r2r.md"
    ),
    max_minutes: Annotated[float | None, typer.Option(help="start no new stage after this long")] = None,
    only: Annotated[str | None, typer.Option(help="run only these stage kinds: train,route,score")] = None,
    ray: RayOpt = None,
) -> None:
    """The R2R multi-domain experiment: trains experts, routes, reranks, and writes the report; resumable."""
    from studies.r2r.report import main_from_cli

    path = main_from_cli(config, work_dir, report, max_minutes, only, ray=ray)
    print(f"wrote {path}", file=sys.stderr)


@experiment_app.command("effectiveness")
def experiment_effectiveness(
    config: Annotated[Path, typer.Option(help="TOML config, e.g. configs/effectiveness.toml")],
    work_dir: Annotated[Path | None, typer.Option(help="stages live here (default: cache/effectiveness/HASH)")] = None,
    report: Annotated[Path, typer.Option(help="JSON report")] = Path("reports/effectiveness.json"),
    max_minutes: Annotated[float | None, typer.Option(help="start no new stage after this long")] = None,
    only: Annotated[str | None, typer.Option(help="run only these stage kinds: dev,first,rerank,alpha")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="print the README table")] = False,
    ray: RayOpt = None,
) -> None:
    """Every reranker over BM25 and hybrid candidates, plain and dev-interpolated, with paired tests; resumable."""
    from routerank.experiments import effectiveness

    result = effectiveness.main_from_cli(config, work_dir, report, max_minutes, only, ray=ray)
    if markdown:
        print(effectiveness.markdown(result))
    print(f"wrote {report}", file=sys.stderr)


@experiment_app.command("r3ag")
def experiment_r3ag(
    config: Annotated[Path, typer.Option(help="TOML config, e.g. configs/r3ag-cpu.toml")],
    work_dir: Annotated[Path | None, typer.Option(help="stages live here (default: cache/r3ag/PROFILE-HASH)")] = None,
    report: Annotated[Path, typer.Option(help="markdown report; the JSON goes beside it")] = Path("reports/r3ag.md"),
    max_minutes: Annotated[float | None, typer.Option(help="start no new stage after this long")] = None,
    only: Annotated[str | None, typer.Option(help="run only these stage kinds: labels,train,evaluate,report")] = None,
) -> None:
    """R3AG retriever routing: labels per set and split, train, evaluate every system, report; resumable."""
    from studies.r3ag.experiment import main_from_cli

    main_from_cli(config, work_dir, report, max_minutes, only)


@experiment_app.command("llm-training")
def experiment_llm_training(
    config: Annotated[Path, typer.Option(help="TOML config, e.g. configs/llm-training-cpu.toml")],
    work_dir: Annotated[Path | None, typer.Option(help="stages go here (default: cache/llm-training/PROFILE)")] = None,
    report: Annotated[Path, typer.Option(help="markdown report; JSON and figures beside it")] = Path(
        "reports/llm-training.md"
    ),
    max_minutes: Annotated[float | None, typer.Option(help="start no new stage after this long")] = None,
    only: Annotated[str | None, typer.Option(help="run only these stage kinds: train,score")] = None,
    systems: Annotated[str | None, typer.Option(help="run only these rows' stages, e.g. rank-r1,zero-shot")] = None,
    carry_from: Annotated[
        Path | None, typer.Option(help="an earlier report's JSON (same protocol): its rows fill the unscored ones")
    ] = None,
) -> None:
    """Issue 12: SFT, contrastive, DeAR, ProRank and Rank-R1 on one backbone, scored and compared; resumable."""
    from studies.llm_training.experiment import main_from_cli

    path = main_from_cli(config, work_dir, report, max_minutes, only, systems=systems, carry_from=carry_from)
    print(f"wrote {path}", file=sys.stderr)
