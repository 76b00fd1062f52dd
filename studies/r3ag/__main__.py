"""`python -m studies.r3ag --config studies/r3ag/configs/r3ag-cpu.toml`: R3AG retriever routing (labels per set
and split, train, evaluate every system, report; resumable)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from routerank.fsutil import cache_root
from studies.cli import parse_kinds, run_main, study_parser
from studies.r3ag.config import R3AGExperimentConfig
from studies.r3ag.experiment import R3AGExperiment

KINDS = ("labels", "train", "evaluate", "report")


def run(args: argparse.Namespace) -> None:
    """Run the plan (or the `--only` kinds of it); print each stage's outcome and where the state lives."""
    kinds = parse_kinds(args.only, KINDS)
    experiment = R3AGExperiment(R3AGExperimentConfig.load(args.config), args.work_dir, args.report)
    for stage in experiment.run(args.max_minutes, kinds):
        seconds = f" {stage.seconds:.0f}s" if stage.seconds is not None else ""
        print(f"{stage.name}: {stage.note}{seconds}")
    print(f"state: {experiment.work} (labels under {cache_root() / 'r3ag' / 'labels'})")


def main(argv: Sequence[str] | None = None) -> None:
    """The command line."""
    parser = study_parser(
        "python -m studies.r3ag",
        "R3AG retriever routing: labels per set and split, train, evaluate every system, report; resumable.",
        config_example="studies/r3ag/configs/r3ag-cpu.toml",
        work_dir_help="stages live here (default: cache/r3ag/PROFILE-HASH)",
        report="reports/r3ag.md",
        report_help="markdown report; the JSON goes beside it",
        only_kinds=KINDS,
    )
    run_main(parser, run, argv)


if __name__ == "__main__":
    main()
