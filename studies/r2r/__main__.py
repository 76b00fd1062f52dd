"""`python -m studies.r2r --config studies/r2r/configs/r2r-cpu.toml`: the R2R multi-domain experiment (trains experts,
routes, reranks, and writes the report; resumable)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from studies.cli import parse_kinds, run_main, study_parser
from studies.r2r.config import R2RConfig
from studies.r2r.experiment import R2RExperiment
from studies.r2r.report import write_report

KINDS = ("train", "route", "score")


def run(args: argparse.Namespace) -> None:
    """Run the plan (or the `--only` kinds of it) and write the report."""
    kinds = parse_kinds(args.only, KINDS)
    experiment = R2RExperiment(R2RConfig.load(args.config), args.work_dir, ray=args.ray)
    stages = experiment.run(args.max_minutes, kinds)
    path = write_report(experiment, stages, args.report, args.config)
    print(f"wrote {path}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    """The command line."""
    parser = study_parser(
        "python -m studies.r2r",
        "The R2R multi-domain experiment: trains experts, routes, reranks, and writes the report; resumable.",
        config_example="studies/r2r/configs/r2r-cpu.toml",
        work_dir_help="stages live here (default: cache/r2r/PROFILE-HASH)",
        report="reports/r2r.md",
        report_help="markdown report; figures go in a folder beside it",
        only_kinds=KINDS,
        ray=True,
    )
    run_main(parser, run, argv)


if __name__ == "__main__":
    main()
